"""The last passes: check that run-time ops see float32 data, and pack each
Dense weight into the layout its kernel reads (stored that way in the file)."""

from __future__ import annotations

import numpy as np

from .. import _core
from ..errors import UnsupportedOpError
from ..ir import Graph, Tensor

#: ops whose every input is float32 (the engine re-checks each op's dtypes at load)
FLOAT_ONLY_OPS = {"Dense", "Conv", "DepthwiseConv", "MatMul", "Softmax", "LayerNormalization",
                  "AddLayerNormalization", "Gelu", "Erf",
                  "Sqrt", "Relu", "Sigmoid", "Tanh", "Exp", "Reciprocal", "BatchNormalization", "MaxPool",
                  "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Clip", "LeakyRelu", "HardSigmoid",
                  "HardSwish", "Pow"}


def check_runtime_dtypes(graph: Graph) -> Graph:
    """Rejects non-float32 constants that would reach a float32-only kernel at
    run time, with the node named (integer shape arithmetic, Gather indices,
    Where conditions and the like are fine)."""
    bad = []
    for n in graph.nodes:
        if n.op not in FLOAT_ONLY_OPS:
            continue
        for i in n.inputs:
            t = graph.tensors.get(i)
            if t is not None and t.dtype != "float32":
                bad.append(f"{n.op} node '{n.name}' reads {t.dtype} constant '{i}'")
    if bad:
        raise UnsupportedOpError("run-time integer tensors are not supported yet: " + "; ".join(bad[:5]),
                                 {"integer tensors": [b for b in bad]})
    return graph


def pack_dense_weights(graph: Graph) -> Graph:
    """Packs every raw float32 Dense weight [K, N] into the ``f32-n16`` panel
    layout of the fp32 GEMM (see docs/format.md)."""
    for n in graph.nodes:
        if n.op != "Dense":
            continue
        w = graph.tensors[n.inputs[1]]
        if w.encoding != "raw":
            continue
        arr = w.array().astype(np.float32, copy=False)
        packed = _core.pack_f32_n16(np.ascontiguousarray(arr))
        graph.tensors[w.name] = Tensor(w.name, packed, "float32", tuple(arr.shape), "f32-n16", dict(w.meta))
    return graph
