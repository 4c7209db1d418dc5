"""Constant folding: nodes whose inputs are all constants are evaluated once,
at convert time, with the numpy reference implementations below."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..ir import DTYPES, Graph, Node, Tensor

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _reshape(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    shape = list(a["shape"])
    if not a.get("allowzero", 0):
        if any(d == 0 and i >= x.ndim for i, d in enumerate(shape)):
            raise ValueError(f"Reshape target {shape} copies a dimension that the input of shape {x.shape} lacks")
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _softmax(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    axis = a.get("axis", -1)
    if a.get("legacy", 0):
        ax = axis % x.ndim
        flat = x.reshape(int(np.prod(x.shape[:ax])), -1)
        return _softmax(flat, {"axis": -1}).reshape(x.shape)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _axes_reduce(fn):
    def f(i: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
        axes = a.get("axes", [int(v) for v in i[1].reshape(-1)] if len(i) > 1 else None)
        if axes is not None and len(axes) == 0 and not a.get("noop_with_empty_axes", 0):
            axes = None
        if axes is not None and len(axes) == 0:
            return i[0]
        return fn(i[0], axis=None if axes is None else tuple(axes), keepdims=bool(a.get("keepdims", 1)))
    return f


def _squeeze(i: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    axes = a.get("axes", [int(v) for v in i[1].reshape(-1)] if len(i) > 1 else None)
    return np.squeeze(i[0], axis=None if axes is None else tuple(axes))


def _unsqueeze(i: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    axes = a.get("axes", [int(v) for v in i[1].reshape(-1)] if len(i) > 1 else [])
    return np.expand_dims(i[0], tuple(axes))


def _slice(i: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x = i[0]
    starts, ends = i[1].reshape(-1), i[2].reshape(-1)
    axes = i[3].reshape(-1) if len(i) > 3 else np.arange(len(starts))
    steps = i[4].reshape(-1) if len(i) > 4 else np.ones(len(starts), np.int64)
    sl = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        dim = x.shape[int(ax)]
        s, e = int(max(min(s, 2 * dim + 1), -2 * dim - 1)), int(max(min(e, 2 * dim + 1), -2 * dim - 1))
        sl[int(ax)] = slice(s, e, int(st))
    return x[tuple(sl)]


def _cast(i: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x = i[0]
    if a.get("bool", 0):
        return (x != 0).astype(np.uint8)
    return x.astype(DTYPES[a.get("to", "float32")])


def _reshape_any(x: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    if "shape" in a:
        return _reshape(x[0], a)
    return _reshape(x[0], {"shape": [int(v) for v in x[1].reshape(-1)], "allowzero": a.get("allowzero", 0)})


def _dequantize_linear(i: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    """ONNX DequantizeLinear on constants: (x - zero_point) * scale, per tensor or per axis, in float32."""
    x, s = i[0], i[1].astype(np.float32)
    z = i[2] if len(i) > 2 else np.zeros((), x.dtype)
    if s.size > 1:
        shape = [1] * x.ndim
        shape[int(a.get("axis", 1)) % x.ndim] = s.size
        s, z = s.reshape(shape), z.reshape(shape)
    return ((x.astype(np.int32) - z.astype(np.int32)).astype(np.float32) * s).astype(np.float32)


def _div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "i" and y.dtype.kind == "i":  # integer division truncates toward zero (ONNX Runtime)
        return (np.sign(x) * np.sign(y) * (np.abs(x) // np.abs(y))).astype(np.result_type(x, y))
    return x / y


_BOOL = np.uint8  # booleans are stored as uint8 0/1

#: numpy reference per op, used for folding: (inputs, attrs) -> output.
NUMPY_OPS: dict[str, Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]] = {
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: _div(i[0], i[1]),
    "Pow": lambda i, a: np.power(i[0], i[1]),
    "Relu": lambda i, a: np.maximum(i[0], 0),
    "Sigmoid": lambda i, a: 1 / (1 + np.exp(-i[0])),
    "Tanh": lambda i, a: np.tanh(i[0]),
    "Erf": lambda i, a: _erf(i[0]).astype(i[0].dtype),
    "Gelu": lambda i, a: (0.5 * i[0] * (1 + _erf(i[0] / math.sqrt(2)))).astype(i[0].dtype),
    "Sqrt": lambda i, a: np.sqrt(i[0]),
    "Reciprocal": lambda i, a: 1 / i[0],
    "Exp": lambda i, a: np.exp(i[0]),
    "Neg": lambda i, a: -i[0],
    "Abs": lambda i, a: np.abs(i[0]),
    "Identity": lambda i, a: i[0],
    "Transpose": lambda i, a: np.transpose(i[0], a.get("perm")),
    "Reshape": _reshape_any,
    "Flatten": lambda i, a: i[0].reshape(int(np.prod(i[0].shape[: a.get("axis", 1)])), -1),
    "Softmax": lambda i, a: _softmax(i[0], a),
    "MatMul": lambda i, a: np.matmul(i[0], i[1]),
    "Shape": lambda i, a: np.array(i[0].shape[a.get("start", 0):a.get("end", None)], np.int64),
    "Cast": _cast,
    "Concat": lambda i, a: np.concatenate(i, axis=a["axis"]),
    "Gather": lambda i, a: np.take(i[0], i[1].astype(np.int64), axis=a.get("axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "Equal": lambda i, a: (i[0] == i[1]).astype(_BOOL),
    "Less": lambda i, a: (i[0] < i[1]).astype(_BOOL),
    "Greater": lambda i, a: (i[0] > i[1]).astype(_BOOL),
    "Not": lambda i, a: (i[0] == 0).astype(_BOOL),
    "And": lambda i, a: ((i[0] != 0) & (i[1] != 0)).astype(_BOOL),
    "Or": lambda i, a: ((i[0] != 0) | (i[1] != 0)).astype(_BOOL),
    "Where": lambda i, a: np.where(i[0] != 0, i[1], i[2]),
    "Expand": lambda i, a: i[0] * np.ones([int(v) for v in i[1].reshape(-1)], i[0].dtype),
    "ConstantOfShape": lambda i, a: np.full([int(v) for v in i[0].reshape(-1)], a.get("value", 0.0),
                                            DTYPES[a.get("dtype", "float32")]),
    "Range": lambda i, a: np.arange(i[0].reshape(-1)[0], i[1].reshape(-1)[0], i[2].reshape(-1)[0]).astype(i[0].dtype),
    "ReduceMean": _axes_reduce(np.mean),
    "ReduceSum": _axes_reduce(np.sum),
    "DequantizeLinear": _dequantize_linear,
}


def fold_constants(graph: Graph) -> Graph:
    """Replaces every node whose inputs are all constants (and that has a numpy
    reference) by the constant it computes. Graph outputs stay computed by a
    node so that they keep their names and dtypes."""
    outputs = graph.output_names()
    kept: list[Node] = []
    for n in graph.nodes:
        ins = [i for i in n.inputs if i]
        if (n.op in NUMPY_OPS and ins and len(n.outputs) == 1 and n.outputs[0] not in outputs
                and all(graph.tensors.get(i) is not None and graph.tensors[i].encoding == "raw" for i in ins)):
            vals = [graph.tensors[i].array() for i in ins]
            try:
                with np.errstate(all="ignore"):
                    y = np.asarray(NUMPY_OPS[n.op](vals, n.attrs))
            except (ValueError, IndexError, TypeError, ZeroDivisionError) as e:
                # a node that cannot run on its constant inputs is an invalid graph, not a crash
                raise ValueError(f"node '{n.name}' ({n.op}) cannot be evaluated on its constant inputs "
                                 f"{[v.shape for v in vals]}: {e}") from None
            if vals and all(v.dtype == np.float32 for v in vals) and y.dtype == np.float64:
                y = y.astype(np.float32)
            if y.dtype == np.bool_:
                y = y.astype(np.uint8)
            graph.tensors[n.outputs[0]] = Tensor.from_array(n.outputs[0], y)
            continue
        kept.append(n)
    graph.nodes = kept
    return graph
