"""PyTorch importer: a live ``torch.nn.Module`` to a lowbit ``Graph``.

Two paths, tried in this order; the graph's ``metadata["source"]`` (saved in the
.qbin, and in ``ConvertReport.notes``) says which one ran:

1. ``"torch.export"``: ``torch.export.export(module, args, dynamic_shapes=...)``
   captures the module as an ATen graph, which ``frontends.torch_export`` imports
   directly into lowbit's IR.
2. ``"torch.onnx(torchscript)"``: when export cannot capture the model (data-dependent
   control flow, an ATen op lowbit has no handler for, ...), the module is exported to
   ONNX in memory with PyTorch's TorchScript exporter (``dynamo=False``) and imported by
   the ONNX frontend; ``metadata["fallback_reason"]`` keeps why.

Either way every input's first dimension is dynamic (batch); integer inputs (token ids,
masks) also get a dynamic second dimension (sequence), so one .qbin serves any batch
and sequence length. The module runs in eval mode for the capture (modes are restored).

``torch.nn.utils.prune`` masks need nothing special: the pruning hook's
``weight_orig * weight_mask`` is evaluated at import, so the weight holds exact zeros
and ``convert(sparse=...)`` can choose a sparse encoding. ``torch.ao`` dynamically
quantized ``Linear`` modules are swapped, for the capture only, for float ``Linear``
modules holding their dequantized int8 weights; ``compressed_weights`` hands their
codes and scales to ``passes.encode``, which stores them as ``qs8-n16k4`` (int8)
without re-quantizing. ``torch`` is imported lazily (it is an optional extra).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Iterator

import numpy as np

from ..ir import Graph

OPSET = 17
SOURCE_EXPORT = "torch.export"
SOURCE_ONNX = "torch.onnx(torchscript)"


def _as_tuple(example_inputs: Any) -> tuple:
    import torch
    if example_inputs is None:
        raise ValueError("converting a torch.nn.Module needs example_inputs=(tensor, ...) to trace it")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise TypeError("example_inputs must be a tensor or a tuple of tensors (passed positionally to forward)")


def _input_names(args: tuple) -> list[str]:
    return [f"input_{i}" for i in range(len(args))] if len(args) > 1 else ["input"]


def _dynamic_axes(t: Any) -> dict[int, str]:
    """The axes of an example input that stay dynamic: 0 (batch), and 1 (sequence) for integer inputs."""
    axes: dict[int, str] = {}
    if t.dim() >= 1:
        axes[0] = "batch"
    if t.dim() >= 2 and not t.is_floating_point():
        axes[1] = "sequence"
    return axes


@contextlib.contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]  # restored one by one: children may differ
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def export_onnx(module: Any, example_inputs: Any) -> Any:
    """Exports ``module`` to an ``onnx.ModelProto`` (in memory) with the TorchScript exporter,
    with dynamic batch (and sequence, for integer inputs) dimensions."""
    import onnx
    import torch

    args = _as_tuple(example_inputs)
    names = _input_names(args)
    dynamic = {name: _dynamic_axes(t) for name, t in zip(names, args)}
    buf = io.BytesIO()
    with _eval_mode(module), torch.no_grad():
        torch.onnx.export(module, args, buf, dynamo=False, input_names=names, output_names=["output"],
                          dynamic_axes={**dynamic, "output": {0: "batch"}}, opset_version=OPSET)
    return onnx.load_from_string(buf.getvalue())


def export_program(module: Any, example_inputs: Any) -> tuple[Any, dict[str, str]]:
    """``torch.export.export`` of ``module`` with the batch (and integer inputs' sequence) axes
    dynamic. Returns the ExportedProgram and a map from its symbolic sizes to "batch" /
    "sequence". A dynamic axis of size 1 in the example is captured at size 2 (export
    specializes sizes 0 and 1); the program is the same for every size."""
    import torch
    from torch.export import Dim

    args = _as_tuple(example_inputs)
    capture, shapes = [], []
    for t in args:
        axes = _dynamic_axes(t)
        for ax in axes:
            if t.shape[ax] == 1:
                t = torch.cat([t, t], dim=ax)
        capture.append(t)
        shapes.append({ax: Dim.DYNAMIC for ax in axes} or None)
    with _eval_mode(module), torch.no_grad(), warnings.catch_warnings():
        # a pruning hook assigns module.weight during the forward: export warns, the value is traced right
        warnings.filterwarnings("ignore", message=".*was assigned during export.*")
        ep = torch.export.export(module, tuple(capture), dynamic_shapes=tuple(shapes))
    names: dict[str, str] = {}
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
    from torch.export.graph_signature import InputKind
    user = [n for n, s in zip(placeholders, ep.graph_signature.input_specs) if s.kind == InputKind.USER_INPUT]
    for node, t in zip(user, capture):
        val = node.meta.get("val")
        for ax, role in _dynamic_axes(t).items():
            d = val.shape[ax]
            if not isinstance(d, int):
                names.setdefault(str(d.node.expr), role)
    return ep, names


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def import_torch(module: Any, example_inputs: Any) -> Graph:
    """Imports a live module (see the module docstring) into a lowbit Graph."""
    from .onnx import import_onnx
    from .torch_export import import_exported

    args = _as_tuple(example_inputs)
    notes: list[str] = []
    with _dequantized_dynamic_linears(module, notes):
        try:
            ep, dim_names = export_program(module, args)
            with warnings.catch_warnings():  # torch's own pytree deprecation inside run_decompositions
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
                graph = import_exported(ep, _input_names(args), dim_names)
        except Exception as e:  # noqa: BLE001 - any capture/import failure falls back, and says why
            reason = _first_line(e)
            try:
                graph = import_onnx(export_onnx(module, args))
            except Exception as e2:
                raise type(e2)(f"{e2} (torch.export could not capture the model either: {reason})") from e2
            graph.metadata["source"] = SOURCE_ONNX
            graph.metadata["fallback_reason"] = reason
            notes.append(f"imported through {SOURCE_ONNX}: torch.export path failed ({reason})")
        else:
            graph.metadata["source"] = SOURCE_EXPORT
            notes.append(f"imported through {SOURCE_EXPORT}")
    graph.metadata["import_notes"] = notes
    return graph


# ---- torch.ao dynamically quantized Linear --------------------------------------------

def _is_dynamic_linear(m: Any) -> bool:
    import torch
    return isinstance(m, torch.ao.nn.quantized.dynamic.Linear)


def dynamic_linear_parts(m: Any) -> dict[str, Any]:
    """The int8 weight of a ``torch.ao.nn.quantized.dynamic.Linear``: ``codes`` [N, K] int32
    (``int_repr() - zero_point``, with -128 moved to -127: lowbit's int8 kernels take
    [-127, 127]), ``scale`` [N] float32 (per channel; the one scale repeated for per
    tensor), ``granularity``, ``moved`` (how many -128 codes moved), ``matrix`` = codes *
    scale in float32 (the exact values the int8 encoding reproduces) and ``bias``."""
    import torch

    w = m.weight()
    q = w.int_repr().to(torch.int32).reshape(w.shape[0], -1).numpy()
    n = q.shape[0]
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if int(w.q_per_channel_axis()) != 0:
            raise ValueError("dynamically quantized Linear with scales along the input axis")
        scale = w.q_per_channel_scales().to(torch.float32).numpy()
        zero = w.q_per_channel_zero_points().to(torch.int32).numpy()
        gran = "channel"
    else:
        scale = np.full(n, np.float32(w.q_scale()), np.float32)
        zero = np.full(n, int(w.q_zero_point()), np.int32)
        gran = "tensor"
    codes = q - zero[:, None]
    moved = int((codes < -127).sum())
    codes = np.clip(codes, -127, 127).astype(np.int32)
    matrix = codes.astype(np.float32) * scale.astype(np.float32)[:, None]
    b = m.bias()
    return {"codes": codes, "scale": scale.astype(np.float32), "granularity": gran, "moved": moved,
            "matrix": matrix.astype(np.float32), "bias": None if b is None else b.detach().float().clone()}


@contextlib.contextmanager
def _dequantized_dynamic_linears(module: Any, notes: list[str]) -> Iterator[None]:
    """For the capture, every dynamically quantized Linear is replaced by a float Linear
    holding its int8 values (``dynamic_linear_parts``); the originals come back after."""
    import torch

    swapped = []
    try:
        for parent_name, parent in list(module.named_modules()):
            for child_name, child in list(parent.named_children()):
                if not _is_dynamic_linear(child):
                    continue
                parts = dynamic_linear_parts(child)
                n, k = parts["matrix"].shape
                lin = torch.nn.Linear(k, n, bias=parts["bias"] is not None)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(parts["matrix"]))
                    if parts["bias"] is not None:
                        lin.bias.copy_(parts["bias"])
                setattr(parent, child_name, lin)
                swapped.append((parent, child_name, child))
                full = f"{parent_name}.{child_name}" if parent_name else child_name
                if parts["moved"]:
                    notes.append(f"{full}: {parts['moved']} int8 weight code(s) of -128 stored as -127 "
                                 "(lowbit's int8 weights are in [-127, 127])")
        yield
    finally:
        for parent, child_name, child in swapped:
            setattr(parent, child_name, child)


def _dynamic_linear_specs(module: Any) -> list:
    from ..passes.encode import WeightSpec

    specs = []
    for name, m in module.named_modules():
        if not _is_dynamic_linear(m):
            continue
        parts = dynamic_linear_parts(m)
        # per channel: [N, 1]; per tensor: [1, 1] (passes.encode broadcasts it)
        scale = parts["scale"][:, None] if parts["granularity"] == "channel" else parts["scale"][:1, None]
        specs.append(WeightSpec(
            layer=name, op="Linear", matrix=parts["matrix"],
            quant={"scheme": "linear", "bits": 8, "symmetric": True, "granularity": parts["granularity"],
                   "method": "torch.ao dynamic"},
            codes=parts["codes"], scale=np.ascontiguousarray(scale, dtype=np.float32), zero=None))
    return specs


def compressed_weights(module: Any) -> list:
    """What ``lowbit.compress`` left on ``module``: one ``passes.encode.WeightSpec`` per
    quantized, pruned or low-rank-factor layer (its exact weight values plus the
    annotation's codes, scales, zero points, codebook, mask and low-rank role; see
    docs/compress.md), and one per ``torch.ao`` dynamically quantized Linear (its int8
    codes and scales). Empty for a module neither has touched."""
    import torch

    from ..passes.encode import WeightSpec

    dynamic = _dynamic_linear_specs(module)
    for name, m in module.named_modules():
        p = getattr(m, "parametrizations", None)
        if p is not None and "weight" in p and any(type(x).__name__ == "LSQWeight" for x in p["weight"]):
            raise ValueError(f"layer '{name}' is still being trained for quantization (prepare_qat): call "
                             "lowbit.compress.finish_qat(model) before converting")
    if not any(hasattr(m, a) for m in module.modules() for a in ("lowbit_quant", "lowbit_sparsity", "lowbit_lowrank")):
        return dynamic
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
    return dynamic + specs
