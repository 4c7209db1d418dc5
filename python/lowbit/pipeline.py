"""``lowbit sensitivity`` / ``lowbit compress``: ``lowbit.compress`` driven by a
JSON config file. The schema (every path is relative to the config file's folder):

.. code-block:: json

    {
      "format": "lowbit.compress-config/1",
      "seed": 0,
      "model": {"factory": "my_models:build_mlp", "kwargs": {"hidden": 128},
                "state_dict": "mlp.pt", "python_path": ["."]},
      "data": {"file": "digits.npz", "inputs": "x", "targets": "y",
               "calib": "x_calib", "eval_inputs": "x_test", "eval_targets": "y_test"},
      "sensitivity": {"options": ["int8", "int4_g32", "sparse0.5"], "metric": "loss",
                      "batch_size": 256, "max_batches": null, "layers": null, "skip": [],
                      "from": null},
      "budget": {"bits_per_weight": 4.0},
      "solve_options": null,
      "output": {"sensitivity": "sensitivity.json", "recipe": "recipe.json",
                 "state_dict": "compressed.pt", "qbin": "compressed.qbin"}
    }

- ``model.factory`` (required): ``module:callable`` returning a ``torch.nn.Module``,
  imported with ``model.python_path`` (default ``["."]``) in front of ``sys.path``;
  ``kwargs`` are passed to it; ``state_dict`` (optional) is loaded with
  ``torch.load(weights_only=True)``.
- ``data.file`` (required): an ``.npz``; ``inputs`` (default ``"x"``) names the input
  array, ``targets`` (default ``"y"`` when present) the labels. Without targets the
  sensitivity metric must be ``output_mse``. ``calib`` (default: the inputs) feeds
  GPTQ and calibration; ``eval_inputs``/``eval_targets`` (default: the inputs and
  targets) measure accuracy before and after.
- ``sensitivity``: arguments of ``lowbit.compress.sensitivity`` (``options``,
  ``metric``, ``batch_size``, ``max_batches``, ``layers``, ``skip``); ``from``
  reuses a table written earlier instead of measuring.
- ``budget`` (``compress`` only): exactly one of ``bits_per_weight``, ``size_bits``,
  ``latency`` (seconds; needs a table with latencies); ``solve_options`` restricts
  the options the solver may pick.
- ``output``: files to write; ``null`` skips one. ``qbin`` converts the fp32 model
  with the recipe (``lowbit.convert(model, qbin, recipe=...)``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any, Callable

import numpy as np

CONFIG_FORMAT = "lowbit.compress-config/1"
_TOP = {"format", "seed", "model", "data", "sensitivity", "budget", "solve_options", "output"}
_MODEL = {"factory", "kwargs", "state_dict", "python_path"}
_DATA = {"file", "inputs", "targets", "calib", "eval_inputs", "eval_targets"}
_SENS = {"options", "metric", "batch_size", "max_batches", "layers", "skip", "from"}
_BUDGET = {"bits_per_weight", "size_bits", "latency"}
_OUTPUT = {"sensitivity", "recipe", "state_dict", "qbin"}
DEFAULT_OUTPUT = {"sensitivity": "sensitivity.json", "recipe": "recipe.json", "state_dict": None,
                  "qbin": "compressed.qbin"}


class ConfigError(ValueError):
    """The config file does not follow the schema (the message says where)."""


def _keys(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return obj


def load_config(path: str) -> dict[str, Any]:
    """Reads and checks a config file; returns it with ``_dir`` (its folder) added."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    _keys(cfg, _TOP, path)
    if cfg.get("format", CONFIG_FORMAT) != CONFIG_FORMAT:
        raise ConfigError(f"{path}: format {cfg.get('format')!r} is not {CONFIG_FORMAT!r}")
    model = _keys(cfg.get("model"), _MODEL, f"{path}: 'model'")
    if not isinstance(model.get("factory"), str) or ":" not in model["factory"]:
        raise ConfigError(f"{path}: model.factory must be 'module:callable' (a function returning a torch.nn.Module)")
    data = _keys(cfg.get("data"), _DATA, f"{path}: 'data'")
    if not isinstance(data.get("file"), str):
        raise ConfigError(f"{path}: data.file must name an .npz file")
    _keys(cfg.get("sensitivity", {}), _SENS, f"{path}: 'sensitivity'")
    if "budget" in cfg:
        b = _keys(cfg["budget"], _BUDGET, f"{path}: 'budget'")
        if len([k for k, v in b.items() if v is not None]) != 1:
            raise ConfigError(f"{path}: budget needs exactly one of {sorted(_BUDGET)}")
    _keys(cfg.get("output", {}), _OUTPUT, f"{path}: 'output'")
    cfg["_dir"] = os.path.dirname(os.path.abspath(path))
    return cfg


def _path(cfg: dict[str, Any], p: str | None) -> str | None:
    return None if p is None else os.path.join(cfg["_dir"], p)


def output_paths(cfg: dict[str, Any]) -> dict[str, str | None]:
    out = dict(DEFAULT_OUTPUT)
    out.update(cfg.get("output", {}))
    return {k: _path(cfg, v) for k, v in out.items()}


def build_model(cfg: dict[str, Any]) -> Any:
    """Imports ``model.factory`` and calls it; loads ``model.state_dict`` if given."""
    import torch

    m = cfg["model"]
    for p in reversed(m.get("python_path", ["."])):
        full = os.path.join(cfg["_dir"], p)
        if full not in sys.path:
            sys.path.insert(0, full)
    mod_name, _, fn_name = m["factory"].partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"model.factory {m['factory']!r} cannot be imported: {e} (python_path: "
                          f"{m.get('python_path', ['.'])}, relative to {cfg['_dir']})") from None
    model = fn(**m.get("kwargs", {}))
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model.factory {m['factory']!r} returned {type(model).__name__}, not a torch.nn.Module")
    if m.get("state_dict"):
        state = torch.load(_path(cfg, m["state_dict"]), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


def load_data(cfg: dict[str, Any]) -> dict[str, Any]:
    """The tensors the config names: ``x``, ``y`` (or None), ``calib``, ``eval_x``, ``eval_y``."""
    import torch

    d = cfg["data"]
    path = _path(cfg, d["file"])
    assert path is not None
    if not os.path.exists(path):
        raise FileNotFoundError(f"data.file {path!r} does not exist")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def get(key: str, default: str | None, required: bool) -> Any:
        name = d.get(key, default)
        if name is None or (name not in arrays and not required and key not in d):
            return None
        if name not in arrays:
            raise ConfigError(f"data.{key}: {path} has no array {name!r} (it has {sorted(arrays)})")
        return torch.from_numpy(np.ascontiguousarray(arrays[name]))

    x = get("inputs", "x", True)
    y = get("targets", "y", False)
    calib = get("calib", None, False)
    ex = get("eval_inputs", None, False)
    ey = get("eval_targets", None, False)
    return {"x": x, "y": y, "calib": x if calib is None else calib, "eval_x": x if ex is None else ex,
            "eval_y": y if ey is None else ey}


def dump_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def run_sensitivity(cfg: dict[str, Any], progress_bar: bool, model: Any = None, data: Any = None,
                    log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measures (or, with ``sensitivity.from``, reads) the sensitivity table."""
    from . import compress as lc

    s = dict(cfg.get("sensitivity", {}))
    src = s.pop("from", None)
    if src:
        p = _path(cfg, src)
        assert p is not None
        with open(p, encoding="utf-8") as f:
            table: dict[str, Any] = json.load(f)
        if not isinstance(table, dict) or "layers" not in table:
            raise ConfigError(f"sensitivity.from: {p} is not a sensitivity table (no 'layers')")
        log(f"sensitivity table read from {p}")
        return table
    lc.seed_everything(int(cfg.get("seed", 0)))
    model = model if model is not None else build_model(cfg)
    data = data if data is not None else load_data(cfg)
    metric = s.get("metric", "loss" if data["y"] is not None else "output_mse")
    if metric == "loss" and data["y"] is None:
        raise ConfigError("sensitivity.metric 'loss' needs data.targets; use 'output_mse' for inputs only")
    d = (data["x"], data["y"]) if metric == "loss" else (data["x"],)
    kwargs = {k: s[k] for k in ("options", "batch_size", "max_batches", "layers") if s.get(k) is not None}
    table = lc.sensitivity(model, d, metric=metric, skip=s.get("skip", ()), progress_bar=progress_bar, **kwargs)
    return table


def run_compress(cfg: dict[str, Any], progress_bar: bool, log: Callable[[str], None] = lambda s: None,
                 summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sensitivity -> budget solver -> recipe -> applied (accuracy before/after)
    -> files. Fills and returns ``summary``; conversion is the last step, so when
    it fails every other output has been written (and is listed in ``summary``)."""
    from . import compress as lc

    if "budget" not in cfg:
        raise ConfigError("compress needs a 'budget': one of bits_per_weight, size_bits, latency")
    seed = int(cfg.get("seed", 0))
    lc.seed_everything(seed)
    model = build_model(cfg)
    data = load_data(cfg)
    out = output_paths(cfg)
    summary = {} if summary is None else summary
    summary["outputs"] = {}
    table = run_sensitivity(cfg, progress_bar, model, data, log)
    if out["sensitivity"] and not cfg.get("sensitivity", {}).get("from"):
        dump_json(out["sensitivity"], table)
        summary["outputs"]["sensitivity"] = out["sensitivity"]
    budget = {k: v for k, v in cfg["budget"].items() if v is not None}
    recipe = lc.solve(table, options=cfg.get("solve_options"), seed=seed, **budget)
    if out["recipe"]:
        recipe.save(out["recipe"])
        summary["outputs"]["recipe"] = out["recipe"]
    summary["recipe"] = {"summary": recipe.summary, "target": recipe.target,
                         "layers": {n: l["option"] for n, l in recipe.layers.items()}}
    log(f"recipe: {recipe.summary.get('bits_per_weight', 0):.3f} bits per weight over {len(recipe.layers)} layers")
    small = recipe.apply(model, calib=data["calib"], progress_bar=progress_bar)
    if data["eval_y"] is not None:
        summary["accuracy_fp32"] = lc.evaluate(model, (data["eval_x"], data["eval_y"]))
        summary["accuracy_compressed"] = lc.evaluate(small, (data["eval_x"], data["eval_y"]))
        log(f"accuracy: {summary['accuracy_fp32']:.2f}% fp32 -> {summary['accuracy_compressed']:.2f}% compressed")
    summary["bits"] = {"fp32": int(lc.fp32_bits(model)), "compressed": int(lc.size_report(small)["bits"])}
    if out["state_dict"]:
        import torch
        torch.save(small.state_dict(), out["state_dict"])
        summary["outputs"]["state_dict"] = out["state_dict"]
    if out["qbin"]:
        import lowbit

        # the fp32 module and the recipe: the converter applies the recipe itself (issue 6)
        rep = lowbit.convert(model, out["qbin"], example_inputs=(data["x"][:1],), recipe=recipe)
        summary["outputs"]["qbin"] = out["qbin"]
        summary["qbin_bytes"] = rep.file_bytes
    return summary
