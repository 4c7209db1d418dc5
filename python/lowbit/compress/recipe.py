"""Recipes: per-layer compression choices as editable JSON, a budget solver
that picks them from a sensitivity table, and ``apply`` that runs them."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .sensitivity import parse_option

RECIPE_FORMAT = "lowbit.recipe/1"


@dataclass
class Recipe:
    """Per-layer choices. ``layers[name]`` is a dict with ``option`` (the
    sensitivity option name it came from, informative) and the fields that
    ``apply`` reads: ``quant`` (QuantSpec fields or None), ``sparsity`` (float
    or None), ``pattern`` (``unstructured`` / ``block1x4``), ``rank`` (a
    fraction of min(N, K) or None). Edit any of them by hand; ``apply`` and the
    converter read only these fields."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        doc = {"format": RECIPE_FORMAT, "seed": self.seed, "target": self.target, "summary": self.summary,
               "layers": self.layers}
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != RECIPE_FORMAT:
            raise ValueError(f"not a lowbit recipe: expected format {RECIPE_FORMAT!r}, "
                             f"got {doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}")
        layers = doc.get("layers", {})
        if not isinstance(layers, dict):
            raise ValueError("recipe 'layers' must be an object of layer name -> choices")
        for name, l in layers.items():
            if not isinstance(l, dict):
                raise ValueError(f"recipe layer {name!r}: expected an object, got {type(l).__name__}")
            unknown = set(l) - {"option", "quant", "sparsity", "pattern", "rank", "delta", "bits", "latency"}
            if unknown:
                raise ValueError(f"recipe layer {name!r}: unknown keys {sorted(unknown)}")
        return cls(layers=layers, target=doc.get("target", {}), seed=int(doc.get("seed", 0)),
                   summary=doc.get("summary", {}))

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recipe":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def apply(self, model, *, calib: Any = None, inplace: bool = False, progress_bar: bool = True):
        """Applies the recipe to ``model``: low-rank factorization first, then
        pruning masks, then quantization (GPTQ for specs with ``method: gptq``,
        calibrated on ``calib``). A factorized layer's quant spec applies to both
        of its factors. Returns the compressed model (a copy unless ``inplace``)."""
        from .lowrank import factorize
        from .prune import prune
        from .quantize import quantize
        if not inplace:
            model = copy.deepcopy(model)
        ranks = {n: l["rank"] for n, l in self.layers.items() if l.get("rank") is not None}
        if ranks:
            factorize(model, rank=ranks, inplace=True)
        names = {n for n, _ in model.named_modules()}
        qspecs: dict[str, Any] = {}
        for n, l in self.layers.items():
            targets = [n] if n in names and n not in ranks else [f"{n}.first", f"{n}.second"]
            targets = [t for t in targets if t in names]
            if not targets:
                raise ValueError(f"recipe layer {n!r} is not in the model")
            if l.get("sparsity"):
                for t in targets:
                    prune(model, {t: float(l["sparsity"])}, pattern=l.get("pattern", "unstructured"),
                          inplace=True, progress_bar=False)
            if l.get("quant"):
                for t in targets:
                    qspecs[t] = l["quant"]
        if qspecs:
            quantize(model, qspecs, calib, layers=list(qspecs), inplace=True, progress_bar=progress_bar)
        return model


def _cost(entry: dict, key: str) -> float:
    v = entry.get(key)
    if v is None:
        raise ValueError(f"the sensitivity table has no {key!r} for an option; measure it (latency_fn=...)")
    return float(v)


def solve(table: dict[str, Any], *, size_bits: float | None = None, bits_per_weight: float | None = None,
          latency: float | None = None, options: list[str] | None = None, seed: int = 0,
          layer_latency: Callable | None = None) -> Recipe:
    """Picks one option per layer so that the total cost fits the budget with the
    least summed metric increase (a multiple-choice knapsack, solved by a
    Lagrangian search over the price of a bit / second, then greedy use of the
    leftover budget). Budgets: ``size_bits`` (total weight bits of the layers
    in the table), ``bits_per_weight`` (the same, divided by their weight
    count), or ``latency`` (seconds, summed over layers; the table needs
    latencies, from ``sensitivity(latency_fn=...)``). ``options`` restricts the
    choice. Deterministic: ties go to the option listed first."""
    layers = table["layers"]
    if not layers:
        raise ValueError("empty sensitivity table")
    if sum(x is not None for x in (size_bits, bits_per_weight, latency)) != 1:
        raise ValueError("give exactly one budget: size_bits=, bits_per_weight= or latency=")
    n_weights = sum(l["params"] for l in layers.values())
    key = "latency" if latency is not None else "bits"
    budget = latency if latency is not None else (size_bits if size_bits is not None else bits_per_weight * n_weights)
    names = sorted(layers)
    choices = {}
    for n in names:
        opts = layers[n]["options"]
        allowed = [o for o in opts if options is None or o in options or o == "fp32"]
        choices[n] = [(o, float(opts[o]["delta"]), _cost(opts[o], key)) for o in allowed]

    def pick(lam: float) -> dict[str, tuple]:
        return {n: min(choices[n], key=lambda c: (c[1] + lam * c[2], c[2])) for n in names}

    def total(sel) -> float:
        return sum(c[2] for c in sel.values())

    cheapest = {n: min(choices[n], key=lambda c: (c[2], c[1])) for n in names}
    if total(cheapest) > budget:
        raise ValueError(f"budget {budget:.4g} {key} is below the cheapest choice ({total(cheapest):.4g})")
    lo, hi = 0.0, 1.0
    while total(pick(hi)) > budget:
        hi *= 4.0
        if hi > 1e30:
            break
    sel = pick(hi)
    if total(pick(0.0)) <= budget:
        sel = pick(0.0)
    else:
        for _ in range(100):
            mid = (lo + hi) / 2
            if total(pick(mid)) <= budget:
                hi = mid
            else:
                lo = mid
        sel = pick(hi)
    # spend what is left: repeatedly take the upgrade with the best loss saved per cost
    while True:
        slack = budget - total(sel)
        best = None
        for n in names:
            cur = sel[n]
            for c in choices[n]:
                gain, extra = cur[1] - c[1], c[2] - cur[2]
                if gain > 0 and extra <= slack:
                    ratio = gain / max(extra, 1e-12)
                    if best is None or ratio > best[0]:
                        best = (ratio, n, c)
        if best is None:
            break
        sel[best[1]] = best[2]
    rec_layers = {}
    for n in names:
        o, d, c = sel[n]
        p = parse_option(o)
        entry = layers[n]["options"][o]
        rec_layers[n] = {"option": o, "quant": p["quant"], "sparsity": p["sparsity"], "pattern": p["pattern"],
                         "rank": p["rank"], "delta": d, "bits": entry["bits"], "latency": entry.get("latency")}
    total_bits = sum(l["bits"] for l in rec_layers.values())
    summary = {"metric": table.get("metric"), "accounting": table.get("accounting", "toolkit"),
               "sum_delta": sum(l["delta"] for l in rec_layers.values()),
               "weight_bits": total_bits, "bits_per_weight": total_bits / n_weights, "weights": n_weights}
    if key == "latency":
        summary["latency"] = total(sel)
    target = {"size_bits": size_bits, "bits_per_weight": bits_per_weight, "latency": latency}
    return Recipe(layers=rec_layers, target={k: v for k, v in target.items() if v is not None}, seed=seed,
                  summary=summary)
