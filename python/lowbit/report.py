"""``lowbit report``: one self-contained HTML page about a converted model — the
per-layer table (encoding, kernel, size before/after, sparsity, rank, measured
latency), the chosen recipe and the per-layer sensitivity curves, with PNG plots
(matplotlib, the optional extra ``plot``) embedded as base64 or written beside it."""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import os
from typing import Any, Callable, Mapping

import numpy as np

from . import analysis

MAX_BAR_LAYERS = 60  # bars per chart; beyond that the largest / slowest layers are shown
MAX_CURVES = 16  # sensitivity subplots; beyond that the most sensitive layers


def _read_json(value: str | Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    with open(value, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{value}: the {what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or "layers" not in doc or not isinstance(doc["layers"], dict):
        raise ValueError(f"{value}: not a {what} (expected a JSON object with 'layers')")
    return doc


def collect(model_path: str, *, feeds: Mapping[str, np.ndarray] | None = None,
            sensitivity: str | Mapping[str, Any] | None = None, recipe: str | Mapping[str, Any] | None = None,
            latency: bool = True, repeat: int = 20,
            on_layer: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data (also what ``--json`` prints)."""
    import lowbit

    model = lowbit.load(model_path)
    rows = analysis.layer_table(model)
    data: dict[str, Any] = {
        "model": os.path.abspath(model_path), "file_bytes": model.file_size, "producer": model.producer,
        "inputs": [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape)} for v in model.inputs],
        "outputs": [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape)} for v in model.outputs],
        "layers": rows, "totals": analysis.totals(rows, model.file_size), "lowbit": lowbit.__version__,
        "cpu": {k: v for k, v in lowbit.cpu_info().items() if k in ("isa", "vendor", "num_threads")},
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "sensitivity": _read_json(sensitivity, "sensitivity table"), "recipe": _read_json(recipe, "recipe"),
        "latency": None,
    }
    if latency:
        feeds = dict(feeds) if feeds is not None else analysis.example_inputs(model.inputs)
        lat, how = analysis.layer_latency(model, feeds, repeat=repeat, on_layer=on_layer)
        whole = analysis.latency_stats(analysis.time_calls(lambda: model.run(feeds), min_seconds=0.2, min_iters=5))
        data["latency"] = {"method": how, "layers": lat, "model_p50_ms": whole["p50_ms"],
                           "input_shapes": {k: list(v.shape) for k, v in feeds.items()}}
        by_name = {r["name"]: r for r in lat}
        for r in rows:
            t = by_name.get(r["name"])
            r["latency_ms"] = None if t is None else t["seconds"] * 1e3
    return data


# -- plots ----------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'lowbit[plot]' (or pass --no-plots)") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _short(name: str, n: int = 32) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def plot_sizes(data: Mapping[str, Any]) -> bytes | None:
    rows = [r for r in data["layers"] if r["bytes"] > 0]
    if not rows:
        return None
    if len(rows) > MAX_BAR_LAYERS:
        keep = {id(r) for r in sorted(rows, key=lambda r: -r["fp32_bytes"])[:MAX_BAR_LAYERS]}
        rows = [r for r in rows if id(r) in keep]
    fig = _figure(9, 1.2 + 0.28 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["fp32_bytes"] / 1024 for r in rows], height=0.4, label="fp32 (before)", color="#9aa7b8")
    ax.barh(y + 0.2, [r["bytes"] / 1024 for r in rows], height=0.4, label="stored (after)", color="#2f6fdf")
    ax.set_yticks(y)
    ax.set_yticklabels([_short(r["name"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("KiB")
    ax.set_title("size per layer: before and after")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def plot_latency(data: Mapping[str, Any]) -> bytes | None:
    lat = data.get("latency")
    if not lat:
        return None
    rows = [r for r in lat["layers"] if r["seconds"] > 0]
    if not rows:
        return None
    if len(rows) > MAX_BAR_LAYERS:
        keep = {id(r) for r in sorted(rows, key=lambda r: -r["seconds"])[:MAX_BAR_LAYERS]}
        rows = [r for r in rows if id(r) in keep]
    fig = _figure(9, 1.2 + 0.28 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))
    ax.barh(y, [r["seconds"] * 1e3 for r in rows], color="#e07b39")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{_short(r['name'])} ({r['op']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms (median)")
    ax.set_title("measured latency per layer")
    return _png(fig)


def _curve_points(entry: Mapping[str, Any]) -> list[tuple[float, float, str]]:
    params = max(1, int(entry.get("params", 1)))
    return sorted((float(o["bits"]) / params, float(o["delta"]), name) for name, o in entry["options"].items())


def plot_sensitivity(data: Mapping[str, Any]) -> bytes | None:
    table = data.get("sensitivity")
    if not table or not table.get("layers"):
        return None
    layers = table["layers"]
    chosen = {n: l.get("option") for n, l in ((data.get("recipe") or {}).get("layers") or {}).items()}
    names = list(layers)
    if len(names) > MAX_CURVES:
        worst = sorted(names, key=lambda n: -max(o["delta"] for o in layers[n]["options"].values()))[:MAX_CURVES]
        names = [n for n in names if n in worst]
    cols = min(4, len(names))
    nrows = (len(names) + cols - 1) // cols
    fig = _figure(3.2 * cols, 2.6 * nrows + 0.4)
    lo = min((d for n in names for _, d, _ in _curve_points(layers[n]) if d > 0), default=1e-6)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, i + 1)
        pts = _curve_points(layers[name])
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        ax.scatter(xs, ys, s=14, color="#2f6fdf", zorder=3)
        # the lower envelope: the least metric increase at each size or below
        front, best = [], float("inf")
        for x, d, _ in pts:
            if d < best:
                best = d
                front.append((x, d))
        ax.plot([p[0] for p in front], [p[1] for p in front], color="#2f6fdf", lw=1)
        for x, d, label in pts:
            ax.annotate(label, (x, d), fontsize=6, xytext=(2, 2), textcoords="offset points")
        if name in chosen and chosen[name] in layers[name]["options"]:
            o = layers[name]["options"][chosen[name]]
            ax.scatter([o["bits"] / max(1, layers[name]["params"])], [o["delta"]], s=90, facecolors="none",
                       edgecolors="#d62728", linewidths=1.5, zorder=4, label="chosen")
            ax.legend(fontsize=6, loc="upper right")
        ax.set_yscale("symlog", linthresh=lo)
        ax.set_title(_short(name, 28), fontsize=9)
        ax.set_xlabel("bits per weight", fontsize=7)
        ax.set_ylabel(f"Δ {table.get('metric', 'metric')}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    fig.suptitle("sensitivity: metric increase per option, one layer at a time (red ring: the recipe's choice)",
                 fontsize=10)
    return _png(fig)


def plots(data: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each plot that has data: ``sizes``, ``latency``, ``sensitivity``."""
    out = {}
    for name, fn in (("sizes", plot_sizes), ("latency", plot_latency), ("sensitivity", plot_sensitivity)):
        png = fn(data)
        if png is not None:
            out[name] = png
    return out


# -- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#1d2330;
padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.sub{color:#5b6576;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:#f4f6f9;border-radius:8px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:19px} .card span{color:#5b6576;font-size:12px}
table{border-collapse:collapse;font-size:12.5px;width:100%} th,td{padding:4px 8px;border-bottom:1px solid #e6e9ee;
text-align:left;white-space:nowrap} th{background:#f4f6f9;position:sticky;top:0} td.n{text-align:right;
font-variant-numeric:tabular-nums} tr:hover td{background:#fafbfd}
img{max-width:100%;border:1px solid #e6e9ee;border-radius:6px;margin:8px 0}
.note{background:#fff8e1;border-left:3px solid #f0b400;padding:8px 12px;font-size:13px}
code{background:#f4f6f9;padding:1px 4px;border-radius:3px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _kib(n: float | None) -> str:
    if n is None:
        return "—"
    if n < 1024:
        return f"{n:.0f} B"
    if n < 1024 ** 2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 ** 2:.2f} MiB"


def _num(x: Any, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _table(table_id: str, headers: list[tuple[str, bool]], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h, _ in headers)
    body = []
    for r in rows:
        cells = "".join(f"<td class=\"n\">{c}</td>" if num else f"<td>{c}</td>" for c, (_, num) in zip(r, headers))
        body.append(f"<tr>{cells}</tr>")
    return f"<table id=\"{table_id}\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(data: Mapping[str, Any], images: Mapping[str, str] | None = None,
                plot_note: str | None = None) -> str:
    """The page. ``images`` maps a plot name to its ``src`` (a data: URI or a
    relative path); ``plot_note`` explains missing plots."""
    images = dict(images or {})
    t = data["totals"]
    lat = data.get("latency")
    title = os.path.basename(data["model"])
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lowbit report: {_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>lowbit report: {_e(title)}</h1>",
             f"<div class=\"sub\">{_e(data['model'])} · lowbit {_e(data['lowbit'])} · ISA {_e(data['cpu']['isa'])} · "
             f"{_e(data['cpu']['num_threads'])} threads · {_e(data['created'])}</div>"]
    cards = [(_kib(data["file_bytes"]), "file"), (_kib(t["fp32_weight_bytes"]), "weights as fp32"),
             (_kib(t["weight_bytes"]), "weights stored"),
             (f"{t['weight_compression']:.2f}×" if t["weight_compression"] else "—", "weight compression"),
             (str(t["layers"]), "layers")]
    if lat:
        cards.append((f"{lat['model_p50_ms']:.3f} ms", "whole model, p50"))
    parts.append("<div class=\"cards\">" + "".join(f"<div class=\"card\"><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                                  for v, k in cards) + "</div>")
    ins = ", ".join(f"{v['name']} {v['dtype']}{v['shape']}" for v in data["inputs"])
    outs = ", ".join(f"{v['name']} {v['dtype']}{v['shape']}" for v in data["outputs"])
    parts.append(f"<div class=\"sub\">inputs: {_e(ins)} → outputs: {_e(outs)}</div>")

    parts.append("<h2>Layers</h2>")
    if lat:
        shapes = ", ".join(f"{k} {v}" for k, v in lat["input_shapes"].items())
        parts.append(f"<div class=\"sub\">latency: {_e(lat['method'])}; inputs {_e(shapes)}</div>")
    headers = [("#", True), ("name", False), ("op", False), ("weight shape", False), ("encoding", False),
               ("kernel", False), ("fp32 (before)", True), ("stored (after)", True), ("ratio", True),
               ("sparsity", True), ("rank", True), ("latency ms", True), ("share", True)]
    share = {r["name"]: r.get("share") for r in (lat["layers"] if lat else [])}
    rows = []
    for i, r in enumerate(data["layers"]):
        op = r["op"] + (f"+{r['activation']}" if r.get("activation") else "")
        ws = "×".join(map(str, r["weight_shape"])) if r.get("weight_shape") else "—"
        sh = share.get(r["name"])
        rows.append([str(i), _e(r["name"]), _e(op), _e(ws), _e(r.get("encoding") or "—"), _e(r.get("kernel") or "—"),
                     _kib(r["fp32_bytes"]) if r["bytes"] else "—", _kib(r["bytes"]) if r["bytes"] else "—",
                     f"{r['ratio']:.2f}×" if r.get("ratio") else "—", _num(r.get("sparsity"), ".1%"),
                     _num(r.get("rank"), "d"), _num(r.get("latency_ms"), ".4f"),
                     "—" if sh is None else f"{sh:.1%}"])
    rows.append(["", "<b>total</b>", "", "", "", "", f"<b>{_kib(t['fp32_weight_bytes'])}</b>",
                 f"<b>{_kib(t['weight_bytes'])}</b>",
                 f"<b>{t['weight_compression']:.2f}×</b>" if t["weight_compression"] else "—", "", "",
                 f"<b>{sum(r.get('latency_ms') or 0 for r in data['layers']):.4f}</b>" if lat else "—", ""])
    parts.append(_table("layers", headers, rows))

    parts.append("<h2>Plots</h2>")
    if plot_note:
        parts.append(f"<p class=\"note\">{_e(plot_note)}</p>")
    captions = {"sizes": "Size per layer before (fp32) and after (as stored)",
                "latency": "Measured latency per layer",
                "sensitivity": "Per-layer sensitivity curves"}
    for name, src in images.items():
        parts.append(f"<figure id=\"plot-{name}\"><img alt=\"{_e(captions.get(name, name))}\" src=\"{src}\">"
                     f"<figcaption class=\"sub\">{_e(captions.get(name, name))}</figcaption></figure>")

    rec = data.get("recipe")
    parts.append("<h2>Recipe</h2>")
    if rec:
        summ = rec.get("summary", {})
        parts.append(f"<div class=\"sub\">target {_e(json.dumps(rec.get('target', {})))} · "
                     f"{_e(_num(summ.get('bits_per_weight'), '.3f'))} bits per weight · "
                     f"Σ Δ {_e(_num(summ.get('sum_delta'), '.4g'))} ({_e(summ.get('metric', ''))})</div>")
        rrows = []
        for name, l in rec["layers"].items():
            q = l.get("quant") or {}
            qs = (f"{q.get('scheme', 'linear')} {q.get('bits')}-bit {q.get('granularity', '')}"
                  + (f" g{q['group_size']}" if q.get("granularity") == "group" else "")) if q else "fp32"
            rrows.append([_e(name), _e(l.get("option", "")), _e(qs), _num(l.get("sparsity"), ".0%"),
                          _num(l.get("rank"), ".2f"), _num(l.get("bits"), "d"), _num(l.get("delta"), ".4g")])
        parts.append(_table("recipe", [("layer", False), ("option", False), ("quantization", False),
                                       ("sparsity", True), ("rank fraction", True), ("bits", True), ("Δ metric", True)],
                            rrows))
    else:
        parts.append("<p class=\"sub\">no recipe given (<code>--recipe recipe.json</code>, "
                     "written by <code>lowbit compress</code>)</p>")

    sens = data.get("sensitivity")
    parts.append("<h2>Sensitivity</h2>")
    if sens:
        opts = list(dict.fromkeys(o for l in sens["layers"].values() for o in l["options"]))
        srows = [[_e(n)] + [_num(l["options"].get(o, {}).get("delta"), ".4g") for o in opts]
                 for n, l in sens["layers"].items()]
        parts.append(f"<div class=\"sub\">metric {_e(sens.get('metric'))}, baseline "
                     f"{_e(_num(sens.get('baseline'), '.5g'))}; each cell: increase when only that layer gets the "
                     f"option</div>")
        parts.append(_table("sensitivity", [("layer", False)] + [(o, True) for o in opts], srows))
    else:
        parts.append("<p class=\"sub\">no sensitivity table given (<code>--sensitivity sensitivity.json</code>, "
                     "written by <code>lowbit sensitivity</code>)</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write(data: Mapping[str, Any], out_html: str, *, with_plots: bool = True, png_dir: str | None = None) -> list[str]:
    """Writes the page (plots embedded as base64, or as PNG files in ``png_dir``
    referenced relatively). Returns the paths written. Without matplotlib the
    page says how to get plots and keeps every table."""
    written = []
    images: dict[str, str] = {}
    note = None
    if with_plots:
        try:
            pngs = plots(data)
        except ImportError as e:
            pngs, note = {}, str(e)
        for name, png in pngs.items():
            if png_dir:
                os.makedirs(png_dir, exist_ok=True)
                p = os.path.join(png_dir, f"{name}.png")
                with open(p, "wb") as f:
                    f.write(png)
                written.append(p)
                rel = os.path.relpath(p, os.path.dirname(os.path.abspath(out_html)))
                images[name] = html.escape(rel.replace(os.sep, "/"))
            else:
                images[name] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    else:
        note = "plots turned off (--no-plots)"
    with open(out_html, "w", encoding="utf-8") as f:
        f.write(render_html(data, images, note))
    return [out_html, *written]
