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
