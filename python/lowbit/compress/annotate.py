"""The annotation a compressed torch model carries for the converter, and the
size accounting (bits of values, scales, zero points, codebooks and sparse
indices) used by the tests and the budget solver. docs/compress.md is the spec."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._common import COMPRESSIBLE, weight_matrix

FORMAT = "lowbit.compress/1"
SCALE_BITS = 32      # scales are counted as fp32
INDEX_BITS = 16      # a CSR column index
ROWPTR_BITS = 32     # a CSR row pointer


def annotation(model: nn.Module) -> dict[str, Any]:
    """JSON-serialisable description of every compressed layer of ``model``:
    ``{"format": "lowbit.compress/1", "layers": {name: {...}}}`` where each layer
    entry has ``type``, ``weight_shape``, ``matrix`` [N, K] and, when present,
    ``quant`` (the QuantSpec fields, ``code_range``, ``groups`` and buffer names),
    ``sparsity`` (pattern, block, measured sparsity, mask buffer name) and
    ``lowrank`` (rank and the names of the two factor layers)."""
    layers: dict[str, Any] = {}
    for name, m in model.named_modules():
        entry: dict[str, Any] = {}
        if isinstance(m, COMPRESSIBLE):
            n, k = weight_matrix(m).shape
            entry.update(type=type(m).__name__, weight_shape=list(m.weight.shape), matrix=[n, k],
                         bias=m.bias is not None)
            q = getattr(m, "lowbit_quant", None)
            if q is not None:
                bufs = {b: f"{name}.lowbit_{b}" if f"lowbit_{b}" in m._buffers else None
                        for b in ("codes", "scale", "zero", "codebook")}
                entry["quant"] = dict(q, buffers=bufs)
            sp = getattr(m, "lowbit_sparsity", None)
            if sp is not None:
                entry["sparsity"] = dict(sp, measured=float((m.weight == 0).float().mean()),
                                         mask=f"{name}.lowbit_mask" if "lowbit_mask" in m._buffers else None)
        lr = getattr(m, "lowbit_lowrank", None)
        if lr is not None:
            entry.update(type=type(m).__name__, lowrank=dict(lr, first=f"{name}.first", second=f"{name}.second"))
        if entry and (len(entry) > 4 or "lowrank" in entry):
            layers[name] = entry
    return {"format": FORMAT, "layers": layers}


def _index_bits(n: int, k: int, mask: torch.Tensor | None, pattern: str) -> tuple[int, int]:
    """(stored values, index bits) of a mask: the cheaper of a bitmap and CSR."""
    if mask is None:
        return n * k, 0
    m = mask.reshape(n, -1) > 0
    if pattern == "block1x4":
        pad = (-k) % 4
        if pad:
            m = torch.cat([m, m.new_zeros(n, pad)], dim=1)
        blocks = m.reshape(n, -1, 4).any(-1)
        nb = int(blocks.sum())
        total_b = blocks.numel()
        return nb * 4, min(total_b, nb * INDEX_BITS + (n + 1) * ROWPTR_BITS)
    nnz = int(m.sum())
    return nnz, min(n * k, nnz * INDEX_BITS + (n + 1) * ROWPTR_BITS)


def qbin_weight_bits(n: int, k: int, quant: dict | None, op: str = "Dense", groups: int = 1) -> int:
    """Bits of one [N, K] weight in the ``.qbin`` file ``lowbit.convert`` writes: the
    encoding the converter picks for ``quant`` (passes/encode.py), padding, f16 scales,
    u8 zero points, int8 column sums and codebook table included. Pruned weights are
    stored dense until the sparse encodings exist (issue 4). ``op``: ``Dense`` (Linear)
    or ``Conv`` (``groups``: the conv's groups; a depthwise conv stores its weights raw)."""
    from ..passes.encode import choose_encoding, encoded_nbytes
    if op == "Conv" and groups == n and groups > 1:
        return n * k * 32
    encoding, _ = choose_encoding(op, quant, n, k)
    if op == "Conv" and encoding == "f32-n16":
        return 8 * encoded_nbytes(encoding, k, n // groups, groups)
    return 8 * encoded_nbytes(encoding, k, n)


def weight_bits(n: int, k: int, quant: dict | None, mask: torch.Tensor | None = None,
                pattern: str = "unstructured", accounting: str = "toolkit", op: str = "Dense",
                groups: int = 1) -> int:
    """Bits to store one [N, K] weight under ``quant`` (a QuantSpec dict or None for fp32) and ``mask``.
    ``accounting="toolkit"``: the values at their bit width, fp32 scales, ``bits``-wide zero
    points, the cheaper of a bitmap and CSR for masks; ``"qbin"``: the bytes of the .qbin
    encoding ``lowbit.convert`` writes (``qbin_weight_bits``)."""
    if accounting == "qbin":
        return qbin_weight_bits(n, k, quant, op, groups)
    if accounting != "toolkit":
        raise ValueError(f"accounting must be 'toolkit' or 'qbin', got {accounting!r}")
    values, idx = _index_bits(n, k, mask, pattern)
    if quant is None:
        return values * 32 + idx
    bits = int(quant["bits"])
    gran = quant.get("granularity", "channel")
    if gran == "tensor":
        n_scales = 1
    elif gran == "channel":
        n_scales = n
    else:
        n_scales = n * math.ceil(k / min(int(quant["group_size"]), k))
    total = values * bits + idx + n_scales * SCALE_BITS
    if quant.get("scheme", "linear") == "linear" and not quant.get("symmetric", True):
        total += n_scales * bits  # zero points
    if quant.get("scheme") == "kmeans":
        total += (2 ** bits) * 32
    return total


def _op_of(m: nn.Module) -> str:
    return "Dense" if isinstance(m, nn.Linear) else "Conv"


def size_report(model: nn.Module, accounting: str = "toolkit") -> dict[str, Any]:
    """Compressed size of ``model`` in bits: each Linear / Conv weight by its
    annotation (quantized values, scales, zero points, codebooks, sparse
    indices; ``accounting="qbin"``: as the converted file stores it, see
    ``weight_bits``), every other parameter and buffer that the model needs (biases,
    norms) at 32 bits. ``lowbit_*`` buffers are not counted again."""
    per_layer = {}
    counted = set()
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, COMPRESSIBLE):
            n, k = weight_matrix(m).shape
            sp = getattr(m, "lowbit_sparsity", None)
            mask = m._buffers.get("lowbit_mask")  # only a mask makes a layer sparse (zeros from rounding do not)
            b = weight_bits(n, k, getattr(m, "lowbit_quant", None), mask, sp["pattern"] if sp else "unstructured",
                            accounting, _op_of(m), getattr(m, "groups", 1))
            per_layer[name] = b
            total += b
            counted.add(id(m.weight))
    for p in model.parameters():
        if id(p) not in counted:
            total += p.numel() * 32
    for name, buf in model.named_buffers():
        if name.rsplit(".", 1)[-1].startswith("lowbit_") or buf is None or not buf.is_floating_point():
            continue
        total += buf.numel() * 32  # running statistics of norms
    return {"bits": total, "bytes": total / 8, "per_layer_bits": per_layer}


def fp32_bits(model: nn.Module) -> int:
    """Size of ``model`` with every parameter and float buffer at 32 bits."""
    t = sum(p.numel() * 32 for p in model.parameters())
    t += sum(b.numel() * 32 for n, b in model.named_buffers()
             if b is not None and b.is_floating_point() and not n.rsplit(".", 1)[-1].startswith("lowbit_"))
    return t
