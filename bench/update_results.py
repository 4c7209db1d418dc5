"""Rewrites the generated blocks of README.md and docs/kernels.md: the results
tables from the bench output (bench/results/*.json; run after `python -m pytest bench`)
and the supported-operator list from the code.

    python bench/update_results.py                     # every block
    python bench/update_results.py --only supported-ops  # one block (repeatable)

Blocks (between `<!-- NAME:start -->` and `<!-- NAME:end -->`):
- `f32-gemm`, `qgemm`: kernel-level results (bench/test_f32_gemm.py, bench/test_qgemm.py).
- `models`: end-to-end models, one row per model and precision: file size (.qbin and the ONNX
  it came from), accuracy against onnxruntime fp32, and latency of lowbit, onnxruntime and
  PyTorch at 1 and 2 threads. Read from every suite named `models_<precision>` (e.g.
  models_fp32.json, written by bench/test_models_fp32.py) with the keys
  `{lowbit|onnxruntime|pytorch}/<model>/<T>t` -> {"seconds": best},
  `size/<model>` -> {"onnx_bytes", "qbin_bytes"} and
  `error/<peer>/<model>/<T>t` -> max |y - y_ORT| / max |y_ORT|
  (or `cosine/<peer>/<model>` -> mean cosine similarity to the fp32 output).
- `sparse`: sparse and low-rank layers against lowbit's dense kernels (bench/test_sparse_lowrank.py).
- `supported-ops`: the ONNX operators `lowbit.frontends.onnx.supported_ops()` imports.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")  # the repo root



def _ratio(v, target):
    """Two decimals, or three when two would round onto the target and hide which side it is on."""
    if target is not None and f"{v:.2f}" == f"{float(target):.2f}" and v != float(target):
        return f"{v:.3f}"
    return f"{v:.2f}"

def _load(suite: str) -> dict | None:
    p = os.path.join(ROOT, "bench", "results", f"{suite}.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def f32_gemm_table() -> str:
    data = _load("f32_gemm")
    if data is None:
        return "_no bench results yet: run `python -m pytest bench`_"
    r = data["results"]
    m = data["machine"]
    rows = ["| shape (M×K×N) | threads | lowbit | onnxruntime MatMul | lowbit speed ÷ ORT speed | target (1 thread) |",
            "|---|---|---|---|---|---|"]
    for shape, note in (("128x768x3072", ""), ("1x4096x4096", " (64 MB of weights from DRAM)")):
        for t in (1, 2):
            a, b = r.get(f"lowbit/{shape}/{t}t"), r.get(f"onnxruntime/{shape}/{t}t")
            if not a or not b:
                continue
            ratio = b["seconds"] / a["seconds"]
            med = b.get("median_seconds", 0) / max(a.get("median_seconds", 0), 1e-12)
            rows.append(f"| {shape.replace('x', '×')}{note} | {t} | {a['seconds'] * 1e3:.3f} ms ({a['gops']:.1f} GOP/s) "
                        f"| {b['seconds'] * 1e3:.3f} ms ({b['gops']:.1f} GOP/s) | {ratio:.2f}× (median {med:.2f}×) | "
                        f"{'≥ 0.8×' if t == 1 else '—'} |")
        k2 = r.get(f"lowbit-avx2-kernel/{shape}/1t")
        if k2:
            rows.append(f"| {shape.replace('x', '×')}, AVX2 kernel alone | 1 | {k2['seconds'] * 1e3:.3f} ms "
                        f"({k2['gops']:.1f} GOP/s) | | {r[f'onnxruntime/{shape}/1t']['seconds'] / k2['seconds']:.2f}× | |")
    rows.append("")
    rows.append(f"Measured by `bench/test_f32_gemm.py` (best round of pytest-benchmark, same process, same inputs) "
                f"on {m['vendor']} with {m['cpus']} CPUs, ISA `{m['isa']}`{_at(m)}.")
    return "\n".join(rows)


def _at(m: dict) -> str:
    """ " at commit X" when the bench recorded the commit it ran on."""
    return f" at commit `{m['commit']}`" if m.get("commit") else ""


def _ms(r: dict | None) -> str:
    if not r:
        return "—"
    t = r["seconds"]
    return f"{t * 1e6:.0f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def qgemm_table() -> str:
    data = _load("qgemm")
    if data is None:
        return "_no bench results yet: run `python -m pytest bench`_"
    r, m = data["results"], data["machine"]
    rows = ["| shape (M×K×N) | threads | lowbit int8 | lowbit int8 reduce_range | lowbit int4 g32 | lowbit nf4 g32 "
            "| ORT int8 | ORT int4 | PyTorch int8 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for shape in ("1x4096x4096", "128x768x3072", "256x4096x4096"):
        for t in (1, 2):
            cells = [_ms(r.get(f"{p}/{shape}/{t}t")) for p in
                     ("lowbit-int8", "lowbit-int8r", "lowbit-int4", "lowbit-nf4", "ort-int8", "ort-int4", "torch-int8")]
            if all(c == "—" for c in cells):
                continue
            rows.append(f"| {shape.replace('x', '×')} | {t} | " + " | ".join(cells) + " |")
    rows += ["", "| target (1 thread) | measured | target |", "|---|---|---|"]
    gates = [("int8 1×4096×4096: lowbit ÷ ORT int8", "lowbit-int8/ort-int8/1x4096x4096", 0.8),
             ("int8 128×768×3072: lowbit ÷ best peer", "lowbit-int8/ort-int8+torch-int8/128x768x3072", 1.0),
             ("int8 256×4096×4096: lowbit ÷ best peer", "lowbit-int8/ort-int8+torch-int8/256x4096x4096", 1.0),
             ("int4 1×4096×4096: lowbit ÷ ORT int4", "lowbit-int4/ort-int4/1x4096x4096", 0.5),
             ("int4 1×4096×4096: lowbit int4 ÷ lowbit int8", "lowbit-int4/lowbit-int8/1x4096x4096", 0.7),
             ("int4 128×768×3072: lowbit ÷ ORT int4", "lowbit-int4/ort-int4/128x768x3072", 0.4),
             ("int4 128×768×3072: lowbit int4 ÷ lowbit int8", "lowbit-int4/lowbit-int8/128x768x3072", 1.25),
             ("nf4 1×4096×4096: nf4 ÷ int4", "lowbit-nf4/lowbit-int4/1x4096x4096", 1.2),
             ("nf4 128×768×3072: nf4 ÷ int4", "lowbit-nf4/lowbit-int4/128x768x3072", 1.2),
             ("int8 reduce_range (7-bit weights) 1×4096×4096: lowbit ÷ ORT int8", "lowbit-int8r/ort-int8/1x4096x4096", 0.8),
             ("int8 reduce_range 128×768×3072: lowbit ÷ best peer", "lowbit-int8r/ort-int8+torch-int8/128x768x3072", 1.0),
             ("int8 reduce_range 256×4096×4096: lowbit ÷ best peer", "lowbit-int8r/ort-int8+torch-int8/256x4096x4096",
              1.0)]
    for label, key, target in gates:
        v = r.get(f"ratio/{key}/1t")
        if v is not None:
            gate = r.get(f"target/{key}/1t", {})
            extra = ""
            if gate.get("ci_gate") in ("avx2 regression gate", "amx regression gate"):  # "out of reach" only where missed
                isa = gate["ci_gate"].split()[0]
                extra = (f" ({'' if v <= target else f'out of reach on {isa.upper()}, docs/kernels.md; '}"
                         f"CI gate on `{isa}`: ≤ {gate['ci_limit']:.2f}×)")
            rows.append(f"| {label} (time ratio) | {_ratio(v, target)}× {'(met)' if v <= target else '(**not met**)'} | ≤ {target}×{extra} |")
    for q in ("int8", "int4"):
        st = r.get(f"stream/{q}")
        if st:
            rows.append(f"| {q} M=1 streaming {st['weight_bytes'] / 2**20:.0f} MB of weights: GB/s ÷ plain read loop | "
                        f"{st['fraction']:.0%} ({st['weights_gbs']:.1f} of {st['read_loop_gbs']:.1f} GB/s) | ≥ 70% |")
    st = r.get("stream16/int8")
    if st:
        rows.append(f"| int8 M={st['rows']} streaming {st['weight_bytes'] / 2**20:.0f} MB of weights: GB/s ÷ the slower of the "
                    f"plain read and the int8 MAC rate ÷ rows | {st['fraction']:.0%} ({st['weights_gbs']:.1f} of "
                    f"{min(st['read_gbs'], st['mac_bound_gbs'] or st['read_gbs']):.1f} GB/s) | ≥ {st['target']:.0%} |")
    rows.append("")
    rows.append(f"Measured by `bench/test_qgemm.py` (best round, same process, same inputs, lowbit through `Model.run`; "
                f"the 1-thread ratios from the peers timed interleaved, alternating calls, each timed call after an untimed "
                f"one of the same peer so its weights are in cache as in its own rounds) "
                f"on {m['vendor']} with {m['cpus']} CPUs, ISA `{m['isa']}`{_at(m)}; int4 symmetric g32 for lowbit and ORT "
                f"(MatMulNBits, accuracy_level=4).")
    return "\n".join(rows)


def _size(n: float | None) -> str:
    if not n:
        return "—"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


MODEL_NAMES = {"resnet18": "ResNet-18 224×224, batch 1", "minilm": "all-MiniLM-L6-v2, seq 128, batch 1"}

# Quantized suites: one row per lowbit variant, next to the peers it is compared with.
# suite -> [(model, lowbit peer, precision label, ORT peer, PyTorch peer, size key)]
QUANT_ROWS = {
    "int8": [("resnet18", "lowbit-int8", "int8, static calibration (ORT: static QDQ int8)", "onnxruntime-int8", None,
              "int8.qbin"),
             ("resnet18", "lowbit-int8r", "int8 reduce_range (7-bit weights), static calibration (ORT: static QDQ int8)",
              "onnxruntime-int8", None, "int8r.qbin"),
             ("resnet18", "lowbit-qdq", "int8, ORT's QDQ file imported (ORT: that file)", "onnxruntime-int8", None,
              "qdq.qbin")],
    "quant": [("minilm", "lowbit-int8", "int8, dynamic activations, bf16 attention (ORT, PyTorch: dynamic int8)", "onnxruntime-int8",
               "pytorch-int8", "int8.qbin"),
              ("minilm", "lowbit-int8r", "int8 reduce_range (7-bit weights), dynamic activations, bf16 attention (ORT, "
               "PyTorch: dynamic int8)", "onnxruntime-int8", "pytorch-int8", "int8r.qbin"),
              ("minilm", "lowbit-int4", "int4 g32, bf16 attention (ORT: MatMulNBits int4 g32)", "onnxruntime-int4", None, "int4.qbin"),
              ("minilm", "lowbit-ort-int8", "int8, ORT's dynamic int8 file imported (ORT: that file)",
               "onnxruntime-int8", None, "ort_int8.qbin")],
}


def _interleaved(r: dict, name: str, peer: str, ort_peer: str | None) -> str:
    """lowbit's time over onnxruntime's at 1 and 2 threads from the bench's interleaved timing
    (alternating calls, best of each; what the gates use), or "—" where it was not timed."""
    def sec(d: dict, p: str | None):
        if not p:
            return None
        for k in (p, p.replace("-", "_") + "_seconds"):
            if isinstance(d.get(k), (int, float)):
                return float(d[k])
        return None
    out = []
    for t in (1, 2):
        d = r.get(f"interleaved/{name}/{t}t") or {}
        lb, ort = sec(d, peer), sec(d, ort_peer)
        out.append(f"{lb / ort:.2f}×" if lb and ort else "—")
    return " / ".join(out)


def _model_rows(precision: str, r: dict) -> list[str]:
    rows = []
    if precision in QUANT_ROWS:
        for name, peer, label, ort_peer, torch_peer, size_key in QUANT_ROWS[precision]:
            if not any(k.startswith(f"{peer}/{name}/") for k in r):
                continue
            size = r.get(f"size/{size_key}") or {}
            errs = [v["rel_error_vs_fp32"] for k, v in r.items()
                    if k.startswith(f"{peer}/{name}/") and isinstance(v, dict) and "rel_error_vs_fp32" in v]
            acc = f"rel. error vs fp32 {max(errs):.3f}" if errs else "—"
            file = f"{_size(size.get('qbin_bytes'))} ({_size(size.get('onnx_bytes'))})" if size else "—"
            cells = [_ms(r.get(f"{p}/{name}/{t}t")) if p else "—" for t in (1, 2) for p in (peer, ort_peer, torch_peer)]
            cells.append(_interleaved(r, name, peer, ort_peer))
            rows.append(f"| {MODEL_NAMES.get(name, name)} | {label} | {file} | {acc} | " + " | ".join(cells) + " |")
        return rows
    names = sorted({k.split("/")[1] for k in r if k.count("/") == 2 and k.split("/")[0] in
                    ("lowbit", "onnxruntime", "pytorch")})
    for name in names:
        size = r.get(f"size/{name}") or {}
        errs = [v for k, v in r.items() if k.startswith(f"error/lowbit/{name}/")]
        cos = r.get(f"cosine/lowbit/{name}")
        acc = f"cosine {cos:.4f}" if cos is not None else (f"max rel. error vs ORT {max(errs):.1e}" if errs else "—")
        file = f"{_size(size.get('qbin_bytes'))} ({_size(size.get('onnx_bytes'))})" if size else "—"
        cells = [_ms(r.get(f"{p}/{name}/{t}t")) for t in (1, 2) for p in ("lowbit", "onnxruntime", "pytorch")]
        cells.append(_interleaved(r, name, "lowbit", "onnxruntime"))
        rows.append(f"| {MODEL_NAMES.get(name, name)} | {precision} | {file} | {acc} | " + " | ".join(cells) + " |")
    return rows


def models_table() -> str:
    paths = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "models_*.json")))
    if not paths:
        return "_no bench results yet: run `python -m pytest bench`_"
    rows = ["| model | precision (peers) | file: .qbin (source ONNX) | accuracy | lowbit 1t | ORT 1t | PyTorch 1t "
            "| lowbit 2t | ORT 2t | PyTorch 2t | lowbit ÷ ORT interleaved, 1t / 2t |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    machines = set()
    for path in paths:
        precision = os.path.basename(path)[len("models_"):-len(".json")]
        with open(path) as f:
            data = json.load(f)
        machines.add((data["machine"]["vendor"], data["machine"]["cpus"], data["machine"]["isa"] + "`" + _at(data["machine"])))
        rows.extend(_model_rows(precision, data["results"]))
    rows.append("")
    where = "; ".join(f"{v} with {c} CPUs, ISA `{i}" for v, c, i in sorted(machines))
    rows.append("Measured by `bench/test_models_*.py` (best round of pytest-benchmark; every peer in the same process "
                f"on the same inputs) on {where}. The last column is lowbit's time over onnxruntime's from the two "
                "timed interleaved (alternating calls, best of each), as the bench gates time them: the best rounds "
                "of separate blocks can fall in different phases of a shared machine. "
                "Accuracy: fp32 rows against onnxruntime fp32 on the same input; "
                "quantized rows as the relative L2 error of the output against fp32 (MiniLM: hidden states; "
                "the sentence-embedding cosines are in docs/kernels.md and the tests).")
    return "\n".join(rows)


SPARSE_GATES = [  # (label, fast peer, reference peer, M), as bench/test_sparse_lowrank.py gates them
    ("90% unstructured fp32: f32-csr-s8 vs dense fp32", "csr-f32", "dense-f32", 1),
    ("90% unstructured int8: qs8-csr-k16 vs dense int8", "csr-int8", "dense-int8", 1),
    ("80% 1×4 blocks int8: qs8-bsr1x4-s8 vs dense int8", "bsr-int8", "dense-int8", 1),
    ("80% 1×4 blocks int8: qs8-bsr1x4-s8 vs dense int8", "bsr-int8", "dense-int8", 16),
    ("rank 1024 int8: LowRank vs dense int8 4096×4096", "lowrank-int8", "dense-int8", 1),
    ("fused LowRank vs the same factors as two Dense layers", "lowrank-int8", "twolayer-int8", 1),
    ("fused LowRank vs the same factors as two Dense layers", "lowrank-int8", "twolayer-int8", 16),
]


def sparse_table() -> str:
    data = _load("sparse_lowrank")
    if not data:
        return "_no bench results yet: run `python -m pytest bench/test_sparse_lowrank.py`_"
    r, m = data["results"], data["machine"]
    rows = ["| layer (4096×4096, 1 thread) | M | lowbit sparse / factored | lowbit reference | speedup | target |",
            "|---|---|---|---|---|---|"]
    for label, fast, ref, M in SPARSE_GATES:
        key = f"{fast}/{ref}/M{M}"
        il, sp, t = r.get(f"interleaved/{key}"), r.get(f"speedup/{key}"), r.get(f"target/{key}") or {}
        if not il or sp is None:
            continue
        verdict = ("met" if sp >= t["target"] else "**not met**") if t else ""
        rows.append(f"| {label} | {M} | {_ms({'seconds': il['fast_seconds']})} | {_ms({'seconds': il['ref_seconds']})} "
                    f"| {_ratio(sp, t.get('target'))}× | ≥ {t.get('target', '—')}× ({verdict}) |")
    for M in (1, 16):  # what any kernel for the factored layer needs at least (bench/test_sparse_lowrank.py)
        key = f"lowrank-int8/twolayer-int8/M{M}"
        b, il = r.get(f"bound/{key}"), r.get(f"interleaved/{key}")
        if b and il:
            parts = [f"read {_ms({'seconds': b['read_seconds']})}"]
            if b.get("mac_seconds"):
                parts.append(f"MACs {_ms({'seconds': b['mac_seconds']})}")
            rows.append(f"| bound of any kernel for the factors: their bytes at a plain one-stream read, their int8 MACs at "
                        f"the `qs8-dotpeak` rate | {M} | {' / '.join(parts)} | {_ms({'seconds': il['ref_seconds']})} "
                        f"| ≤ {b['max_speedup']:.2f}× | — |")
    for enc in ("f32-csr-s8", "qs8-csr-k16", "qs8-bsr1x4-s8"):
        st = r.get(f"stream/{enc}")
        if st:
            met = "met" if st["fraction"] >= st["target"] else "**not met**"
            rows.append(f"| `{enc}` M=1 streaming {st['weight_bytes'] / 2**20:.0f} MB of weights: GB/s ÷ plain read loop "
                        f"| 1 | {st['weights_gbs']:.1f} GB/s | {st['read_loop_gbs']:.1f} GB/s | {st['fraction']:.0%} "
                        f"| ≥ {st['target']:.0%} ({met}) |")
    rows.append("")
    rows.append("Measured by `bench/test_sparse_lowrank.py` (the two layers of each row timed interleaved, best of 100 "
                "alternating calls at M = 1 and 30 at M = 16, each timed call after an untimed one of the same layer; same process, same inputs, every layer through "
                f"`Model.run` on a converted one-layer model) on {m['vendor']} with {m['cpus']} CPUs, ISA `{m['isa']}`{_at(m)}.")
    return "\n".join(rows)


def supported_ops_block() -> str:
    """The ONNX operators the importer handles, from the code (not from a list kept by hand)."""
    from lowbit.frontends.onnx import supported_ops

    ops = supported_ops()
    return (f"{len(ops)} ONNX operators (default domain), from `lowbit.frontends.onnx.supported_ops()` "
            f"(`lowbit ops` prints them):\n\n" + ", ".join(f"`{o}`" for o in ops))


def _replace(path: str, marker: str, body: str) -> None:
    with open(path) as f:
        text = f.read()
    pat = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"{path}: markers for {marker} not found")
    with open(path, "w") as f:
        f.write(pat.sub(lambda mm: mm.group(1) + body + "\n" + mm.group(2), text))


BLOCKS = {  # block -> (generator, files that carry it)
    "f32-gemm": (f32_gemm_table, ("README.md", "docs/kernels.md")),
    "qgemm": (qgemm_table, ("README.md", "docs/kernels.md")),
    "models": (models_table, ("README.md",)),
    "sparse": (sparse_table, ("docs/kernels.md",)),
    "supported-ops": (supported_ops_block, ("README.md",)),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(BLOCKS), help="regenerate only this block")
    args = ap.parse_args(argv)
    for name in args.only or list(BLOCKS):
        fn, files = BLOCKS[name]
        body = fn()
        for rel in files:
            _replace(os.path.join(ROOT, *rel.split("/")), name, body)


if __name__ == "__main__":
    main()
