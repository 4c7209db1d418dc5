"""The intermediate representation: a small, plain graph.

``Graph(inputs, outputs, nodes, tensors)``: ``inputs``/``outputs`` are ``ValueInfo``
(name, dtype, shape with ``str`` for symbolic dims); ``nodes`` are in topological
order; ``tensors`` maps a name to a constant ``Tensor`` (its data and encoding).
Runtime values (activations) are only named by node inputs/outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

Dim = Union[int, str, None]

#: dtype names used in the IR and the file header, with their numpy types.
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
}


@dataclass
class ValueInfo:
    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def shape_str(self) -> str:
        dims = ["?" if d is None else str(d) for d in self.shape]
        return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


@dataclass
class Tensor:
    """A constant. ``data`` holds the bytes in ``encoding`` (``raw`` = row-major
    ``dtype`` array of ``shape``; other encodings are packed kernel layouts whose
    logical shape is ``shape``)."""

    name: str
    data: np.ndarray
    dtype: str = "float32"
    shape: tuple[int, ...] = ()
    encoding: str = "raw"
    meta: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_array(name: str, arr: np.ndarray | np.generic) -> "Tensor":
        arr = np.asarray(arr)
        dt = next((k for k, v in DTYPES.items() if arr.dtype.kind == v.kind and arr.dtype.itemsize == v.itemsize), None)
        if dt is None:
            raise ValueError(f"constant '{name}' has unsupported dtype {arr.dtype}")
        data = np.ascontiguousarray(arr.astype(DTYPES[dt], copy=False)).reshape(-1)
        return Tensor(name, data, dt, tuple(int(d) for d in arr.shape), "raw")

    def array(self) -> np.ndarray:
        """The logical array (only for ``raw`` tensors)."""
        if self.encoding != "raw":
            raise ValueError(f"tensor '{self.name}' is packed ({self.encoding}); no raw view")
        return self.data.reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class Graph:
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    nodes: list[Node]
    tensors: dict[str, Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def output_names(self) -> set[str]:
        return {o.name for o in self.outputs}

    def is_const(self, name: str) -> bool:
        return name in self.tensors

    def const(self, name: str) -> np.ndarray | None:
        t = self.tensors.get(name)
        return None if t is None or t.encoding != "raw" else t.array()

    def unique_name(self, base: str) -> str:
        used = set(self.tensors) | {v for n in self.nodes for v in n.outputs} | {i.name for i in self.inputs}
        if base not in used:
            return base
        k = 1
        while f"{base}_{k}" in used:
            k += 1
        return f"{base}_{k}"

    def check(self) -> None:
        """Raises ValueError unless nodes are in topological order and every value is defined once."""
        defined = {i.name for i in self.inputs} | set(self.tensors)
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in defined:
                    raise ValueError(f"node '{n.name}' ({n.op}) uses '{i}' before it is defined")
            for o in n.outputs:
                if o in defined:
                    raise ValueError(f"node '{n.name}' ({n.op}) redefines '{o}'")
                defined.add(o)
        for vi in self.outputs:
            if vi.name not in defined:
                raise ValueError(f"graph output '{vi.name}' is never produced")
