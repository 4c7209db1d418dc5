"""``Model``: a loaded .qbin file bound to the C++ executor."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from . import _core
from .errors import FormatError
from .format import LoadedFile, load_file
from .ir import DTYPES, Graph, ValueInfo


def build_engine(graph: Graph) -> "_core.Engine":
    """Lowers an IR graph to the C++ engine (ids instead of names)."""
    ids: dict[str, int] = {}
    values: list[dict[str, Any]] = []

    def add(name: str, dtype: str, shape: tuple, data: Any = None, encoding: str = "raw") -> int:
        ids[name] = len(values)
        dims = [d if isinstance(d, int) else -1 for d in shape]
        values.append({"name": name, "dtype": dtype, "shape": dims, "data": data, "encoding": encoding})
        return ids[name]

    for v in graph.inputs:
        add(v.name, v.dtype, v.shape)
    for name, t in graph.tensors.items():
        add(name, t.dtype, t.shape, t.data, t.encoding)
    out_dtypes = {o.name: o.dtype for o in graph.outputs}
    nodes = []
    for n in graph.nodes:
        for o in n.outputs:
            add(o, out_dtypes.get(o, "float32"), ())
        nodes.append({"name": n.name, "op": n.op, "inputs": [ids[i] if i else -1 for i in n.inputs],
                      "outputs": [ids[o] for o in n.outputs], "attrs": n.attrs})
    return _core.Engine(values, nodes, [ids[v.name] for v in graph.inputs], [ids[v.name] for v in graph.outputs])


def _fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Model:
    """A compiled model. ``run`` takes one array (single-input models) or a dict
    name -> array, and returns one array (single-output models) or a dict."""

    def __init__(self, loaded: LoadedFile):
        self._file = loaded
        self.graph: Graph = loaded.graph
        self.path = loaded.path
        try:
            self._engine = build_engine(self.graph)
        except (ValueError, RuntimeError) as e:
            raise FormatError(f"{loaded.path}: the graph does not validate: {e}") from None
        self._kernels = self._engine.node_kernels()
        # Plan once at load when every input dim is known; symbolic dims (batch,
        # sequence) are planned on first sight of each shape and cached.
        if all(isinstance(d, int) for v in self.graph.inputs for d in v.shape):
            try:
                self._engine.arena_bytes([[d for d in v.shape if isinstance(d, int)] for v in self.graph.inputs])
            except _core.MemoryLimitError as e:
                raise FormatError(f"{loaded.path}: the declared shapes need too much memory: {e}") from None
            except ValueError as e:
                raise FormatError(f"{loaded.path}: the graph's shapes do not agree: {e}") from None

    # -- introspection -------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.graph.outputs]

    @property
    def inputs(self) -> list[ValueInfo]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[ValueInfo]:
        return list(self.graph.outputs)

    @property
    def producer(self) -> dict[str, Any]:
        return dict(self._file.header.get("producer", {}))

    @property
    def file_size(self) -> int:
        return self._file.file_size

    def layers(self) -> list[dict[str, Any]]:
        """One dict per node: name, op, input/output/weight shapes, encoding,
        bytes of constants, activation and the kernel that runs it."""
        out = []
        for n, kern in zip(self.graph.nodes, self._kernels):
            consts = [self.graph.tensors[i] for i in n.inputs if i in self.graph.tensors]
            weight = consts[0] if consts else None
            out.append({
                "name": n.name,
                "op": n.op,
                "inputs": [i for i in n.inputs if i and i not in self.graph.tensors],
                "outputs": list(n.outputs),
                "weight_shape": tuple(weight.shape) if weight is not None else None,
                "shapes": [tuple(c.shape) for c in consts],
                "encoding": weight.encoding if weight is not None else None,
                "bytes": sum(c.nbytes for c in consts),
                "activation": {0: None, 1: "relu", 2: "gelu"}.get(n.attrs.get("activation", 0)) if n.op == "Dense" else None,
                "kernel": kern,
            })
        return out

    # -- running -------------------------------------------------------------
    def _check(self, spec: ValueInfo, x: Any) -> np.ndarray:
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        want = DTYPES[spec.dtype]
        if arr.dtype != want:
            raise ValueError(f"input '{spec.name}': expected dtype {spec.dtype}, got {arr.dtype}")
        if arr.ndim != len(spec.shape):
            raise ValueError(f"input '{spec.name}': expected rank {len(spec.shape)} with shape {spec.shape_str()}, "
                             f"got rank {arr.ndim} with shape {_fmt_shape(arr.shape)}")
        for d, (got, exp) in enumerate(zip(arr.shape, spec.shape)):
            if isinstance(exp, int) and got != exp:
                raise ValueError(f"input '{spec.name}': expected shape {spec.shape_str()}, got {_fmt_shape(arr.shape)} "
                                 f"(dimension {d} is {got}, expected {exp})")
        return arr if arr.flags.c_contiguous else np.array(arr, order="C")

    def run(self, x: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        specs = self.graph.inputs
        if isinstance(x, Mapping):
            names = [s.name for s in specs]
            unknown = [k for k in x if k not in names]
            if unknown:
                raise ValueError(f"unknown input name(s) {unknown}; this model's inputs are {names}")
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"missing input(s) {missing}; this model's inputs are {names}")
            arrays = [self._check(s, x[s.name]) for s in specs]
        else:
            if len(specs) != 1:
                raise ValueError(f"this model has {len(specs)} inputs {[s.name for s in specs]}: pass a dict name -> array")
            arrays = [self._check(specs[0], x)]
        outs = self._engine.run(arrays)
        if len(outs) == 1:
            return outs[0]
        return {o.name: y for o, y in zip(self.graph.outputs, outs)}

    __call__ = run

    def __repr__(self) -> str:
        ins = ", ".join(f"{v.name}{v.shape_str()}" for v in self.graph.inputs)
        outs = ", ".join(f"{v.name}{v.shape_str()}" for v in self.graph.outputs)
        return f"<lowbit.Model {os.path.basename(self.path)}: {ins} -> {outs}, {len(self.graph.nodes)} nodes>"


def load(path: str | os.PathLike, *, verify: bool = True) -> Model:
    """Maps a ``.qbin`` file and validates it (all checksums unless ``verify=False``,
    which skips only the data checksum, for trusted files). Weights are used in
    place from the map. Raises ``FormatError`` naming the file and the problem."""
    return Model(load_file(path, verify=verify))
