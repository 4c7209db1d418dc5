"""Constant folding: nodes whose inputs are all constants are evaluated once,
at convert time, with the numpy reference implementations below."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..ir import Graph, Node, Tensor

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


#: numpy reference per op, used for folding: (inputs, attrs) -> output.
NUMPY_OPS: dict[str, Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]] = {
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
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
    "Reshape": lambda i, a: _reshape(i[0], a),
    "Flatten": lambda i, a: i[0].reshape(int(np.prod(i[0].shape[: a.get("axis", 1)])), -1),
    "Softmax": lambda i, a: _softmax(i[0], a),
    "MatMul": lambda i, a: np.matmul(i[0], i[1]),
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
            if vals and all(v.dtype == np.float32 for v in vals):
                y = y.astype(np.float32)
            graph.tensors[n.outputs[0]] = Tensor.from_array(n.outputs[0], y)
            continue
        kept.append(n)
    graph.nodes = kept
    return graph
