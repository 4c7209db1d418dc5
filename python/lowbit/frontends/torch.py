"""PyTorch importer: a live ``torch.nn.Module`` to a lowbit ``Graph``.

The module is exported to ONNX in memory with PyTorch's TorchScript exporter
(``dynamo=False``) and imported by the ONNX frontend, so both paths share one
set of op handlers and passes. Every input's first dimension is exported as
dynamic (batch); integer inputs (token ids, masks) also get a dynamic second
dimension (sequence), so one .qbin serves any batch and sequence length.
``torch`` is imported lazily (it is an optional extra).
"""

from __future__ import annotations

import io
from typing import Any

from ..ir import Graph

OPSET = 17


def _as_tuple(example_inputs: Any) -> tuple:
    import torch
    if example_inputs is None:
        raise ValueError("converting a torch.nn.Module needs example_inputs=(tensor, ...) to trace it")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise TypeError("example_inputs must be a tensor or a tuple of tensors (passed positionally to forward)")


def export_onnx(module: Any, example_inputs: Any) -> Any:
    """Exports ``module`` to an ``onnx.ModelProto`` (in memory) with dynamic batch
    (and sequence, for integer inputs) dimensions."""
    import onnx
    import torch

    args = _as_tuple(example_inputs)
    names = [f"input_{i}" for i in range(len(args))] if len(args) > 1 else ["input"]
    dynamic: dict[str, dict[int, str]] = {}
    for name, t in zip(names, args):
        axes: dict[int, str] = {}
        if t.dim() >= 1:
            axes[0] = "batch"
        if t.dim() >= 2 and not t.is_floating_point():
            axes[1] = "sequence"
        dynamic[name] = axes
    modes = [(m, m.training) for m in module.modules()]  # restored one by one: children may differ
    module.eval()
    buf = io.BytesIO()
    try:
        with torch.no_grad():
            torch.onnx.export(module, args, buf, dynamo=False, input_names=names, output_names=["output"],
                              dynamic_axes={**dynamic, "output": {0: "batch"}}, opset_version=OPSET)
    finally:
        for m, training in modes:
            m.training = training
    return onnx.load_from_string(buf.getvalue())


def import_torch(module: Any, example_inputs: Any) -> Graph:
    """Imports a live module (see the module docstring) into a lowbit Graph."""
    from .onnx import import_onnx

    graph = import_onnx(export_onnx(module, example_inputs))
    graph.metadata["source"] = "torch"
    return graph


def compressed_weights(module: Any) -> list:
    """What ``lowbit.compress`` left on ``module``: one ``passes.encode.WeightSpec`` per
    quantized, pruned or low-rank-factor layer (its exact weight values plus the
    annotation's codes, scales, zero points, codebook, mask and low-rank role; see
    docs/compress.md). Empty for a module the toolkit has not touched."""
    import torch

    from ..passes.encode import WeightSpec

    for name, m in module.named_modules():
        p = getattr(m, "parametrizations", None)
        if p is not None and "weight" in p and any(type(x).__name__ == "LSQWeight" for x in p["weight"]):
            raise ValueError(f"layer '{name}' is still being trained for quantization (prepare_qat): call "
                             "lowbit.compress.finish_qat(model) before converting")
    if not any(hasattr(m, a) for m in module.modules() for a in ("lowbit_quant", "lowbit_sparsity", "lowbit_lowrank")):
        return []
    from ..compress.annotate import annotation

    layers = annotation(module)["layers"]
    roles: dict[str, dict] = {}
    for name, e in layers.items():
        lr = e.get("lowrank")
        if lr:
            roles[lr["first"]] = {"role": "first", "of": name, "rank": int(lr["rank"])}
            roles[lr["second"]] = {"role": "second", "of": name, "rank": int(lr["rank"])}
    mods = dict(module.named_modules())

    def arr(t: Any, dtype: Any) -> Any:
        return None if t is None else t.detach().cpu().numpy().astype(dtype)

    specs = []
    for name in sorted(set(layers) | set(roles)):
        m = mods.get(name)
        e = layers.get(name, {})
        if m is None or not hasattr(m, "weight") or not isinstance(m.weight, torch.Tensor) or "lowrank" in e:
            continue
        w = m.weight.detach().float().cpu()
        n = w.shape[0]
        q = e.get("quant")
        sp = e.get("sparsity")
        mask = m._buffers.get("lowbit_mask")
        specs.append(WeightSpec(
            layer=name, op=type(m).__name__, matrix=w.reshape(n, -1).numpy().copy(),
            quant=None if q is None else {k: v for k, v in q.items() if k != "buffers"},
            codes=arr(m._buffers.get("lowbit_codes") if q else None, "int32"),
            scale=arr(m._buffers.get("lowbit_scale") if q else None, "float32"),
            zero=arr(m._buffers.get("lowbit_zero") if q else None, "int32"),
            codebook=arr(m._buffers.get("lowbit_codebook") if q else None, "float32"),
            mask=None if mask is None else (mask.detach().cpu().reshape(n, -1) > 0).numpy(),
            pattern=sp["pattern"] if sp else "unstructured", lowrank=roles.get(name)))
    return specs
