"""Per-layer latency measured by lowbit itself, for ``sensitivity(latency_fn=...)``: each
(layer, option) is compressed by the toolkit on its own, converted to ``.qbin`` and timed
by lowbit's runtime, so a latency budget in ``solve`` is spent on measured times."""

from __future__ import annotations

import copy
import os
import tempfile
import time
from typing import Any, Callable

import torch
from torch import nn

from ._common import COMPRESSIBLE, run_model


def _input_shapes(model: nn.Module, example_input: Any) -> dict[str, tuple[int, ...]]:
    """The input shape of every Linear / Conv layer in one forward pass on ``example_input``."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:  # returns None: the inputs stay as they are
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, COMPRESSIBLE)]
    try:
        with torch.no_grad():
            run_model(model, example_input)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def lowbit_latency(model: nn.Module, example_input: Any, *, rows: int | None = None, repeats: int = 15,
                   threads: int = 1) -> Callable[[str, nn.Module, str], float]:
    """Returns a ``latency_fn(layer_name, module, option)`` for ``sensitivity``: the layer
    alone (a copy), compressed by ``option`` (GPTQ specs by round to nearest: the encoding
    and the speed are the same), converted with ``lowbit.convert`` and run by lowbit on an
    input of the shape the layer sees in ``model(example_input)`` (its leading dimension
    replaced by ``rows`` when given); the best of ``repeats`` runs on ``threads`` threads,
    in seconds. Measured once per (layer, option) and cached."""
    import lowbit

    from .recipe import Recipe
    from .sensitivity import parse_option

    shapes = _input_shapes(model, example_input)
    cache: dict[tuple[str, str], float] = {}

    def latency(name: str, module: nn.Module, option: str) -> float:
        if (name, option) in cache:
            return cache[(name, option)]
        if name not in shapes:
            raise ValueError(f"layer {name!r} did not run on example_input; cannot time it")
        shape = shapes[name] if rows is None else (int(rows),) + shapes[name][1:]
        o = parse_option(option)
        if o["quant"] is not None and o["quant"].get("method") == "gptq":
            o["quant"] = dict(o["quant"], method="rtn")
        alone = nn.Sequential(copy.deepcopy(module)).eval()
        if any(v is not None for k, v in o.items() if k != "pattern"):
            alone = Recipe(layers={"0": o}).apply(alone, progress_bar=False)
        x = torch.zeros(shape).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "layer.qbin")
            lowbit.convert(alone, path, example_inputs=(x,))
            m = lowbit.load(path)
        xn = x.numpy()
        old = lowbit.get_num_threads()
        lowbit.set_num_threads(threads)
        try:
            m.run(xn)
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                m.run(xn)
                best = min(best, time.perf_counter() - t)
        finally:
            lowbit.set_num_threads(old)
        cache[(name, option)] = best
        return best

    return latency
