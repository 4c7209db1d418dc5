"""``Model``: a loaded .qbin file bound to the C++ executor."""

from __future__ import annotations

import gc
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
        bytes of constants, activation and the kernel that runs it; for a layer
        whose encoding convert chose by timing, ``choice`` holds what was chosen,
        why, and the measured microseconds of every candidate per row count;
        LowRank layers also give their ``rank``."""
        out = []
        for n, kern in zip(self.graph.nodes, self._kernels):
            consts = [self.graph.tensors[i] for i in n.inputs if i in self.graph.tensors]
            weight = consts[0] if consts else None
            wshape = tuple(weight.shape) if weight is not None else None
            enc = weight.encoding if weight is not None else None
            extra: dict[str, Any] = {}
            # (V and U by position: a file may make any input a constant, x included)
            vu = [self.graph.tensors[i] for i in n.inputs[1:3] if i in self.graph.tensors] if n.op == "LowRank" else []
            if len(vu) == 2 and all(len(t.shape) == 2 for t in vu):
                v, u = vu
                wshape = (v.shape[0], u.shape[1])
                enc = f"lowrank({v.encoding}, {u.encoding})"
                extra["rank"] = v.shape[1]
            if weight is not None and "choice" in weight.meta:
                extra["choice"] = weight.meta["choice"]
            out.append({
                "name": n.name,
                "op": n.op,
                "inputs": [i for i in n.inputs if i and i not in self.graph.tensors],
                "outputs": list(n.outputs),
                "weight_shape": wshape,
                "shapes": [tuple(c.shape) for c in consts],
                "encoding": enc,
                "bytes": sum(c.nbytes for c in consts),
                "activation": ({0: None, 1: "relu", 2: "gelu"}.get(n.attrs.get("activation", 0))
                               if n.op in ("Dense", "LowRank") else None),
                "kernel": kern,
                **extra,
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

    def _arrays(self, x: np.ndarray | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        specs = self.graph.inputs
        if isinstance(x, Mapping):
            names = [s.name for s in specs]
            unknown = [k for k in x if k not in names]
            if unknown:
                raise ValueError(f"unknown input name(s) {unknown}; this model's inputs are {names}")
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"missing input(s) {missing}; this model's inputs are {names}")
            return [self._check(s, x[s.name]) for s in specs]
        if len(specs) != 1:
            raise ValueError(f"this model has {len(specs)} inputs {[s.name for s in specs]}: pass a dict name -> array")
        return [self._check(specs[0], x)]

    def _result(self, outs: list[np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        if len(outs) == 1:
            return outs[0]
        return {o.name: y for o, y in zip(self.graph.outputs, outs)}

    def run(self, x: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        return self._result(self._engine.run(self._arrays(x)))

    def profile(self, x: np.ndarray | Mapping[str, np.ndarray], repeat: int = 10,
                warmup: int = 1) -> list[dict[str, Any]]:
        """Runs the model ``warmup + repeat`` times on ``x`` and times every node.

        Returns one dict per node, in graph order: ``name``, ``op``, ``kernel``,
        ``seconds`` (median over the ``repeat`` timed runs), ``min_seconds`` and
        ``share`` (of the summed medians). Nodes evaluated once at plan time (shape
        arithmetic) report 0. Only these runs read the clock; ``run`` never does.
        ``lowbit.format_profile(rows)`` prints them as a table."""
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        arrays = self._arrays(x)
        for _ in range(warmup):
            self._engine.run(arrays)
        _, times = self._engine.profile(arrays, repeat)
        t = np.asarray(times, dtype=np.float64).reshape(repeat, len(self.graph.nodes))
        med, best = np.median(t, axis=0), t.min(axis=0)
        total = float(med.sum()) or 1.0
        return [{"name": n.name, "op": n.op, "kernel": k, "seconds": float(m), "min_seconds": float(b),
                 "share": float(m) / total}
                for n, k, m, b in zip(self.graph.nodes, self._kernels, med, best)]

    __call__ = run

    def __repr__(self) -> str:
        ins = ", ".join(f"{v.name}{v.shape_str()}" for v in self.graph.inputs)
        outs = ", ".join(f"{v.name}{v.shape_str()}" for v in self.graph.outputs)
        return f"<lowbit.Model {os.path.basename(self.path)}: {ins} -> {outs}, {len(self.graph.nodes)} nodes>"


def load(path: str | os.PathLike, *, verify: bool = True) -> Model:
    """Maps a ``.qbin`` file and validates it (all checksums unless ``verify=False``,
    which skips only the data checksum, for trusted files). Weights are used in
    place from the map. Raises ``FormatError`` naming the file and the problem."""
    # The header becomes thousands of short-lived dicts and lists; the cyclic collector
    # would walk every tracked object of the process several times over them. Paused
    # for the load (none of them form cycles), then restored as it was.
    paused = gc.isenabled()
    gc.disable()
    try:
        return Model(load_file(path, verify=verify))
    finally:
        if paused:
            gc.enable()


def format_profile(rows: list[dict[str, Any]], top: int | None = None, by_op: bool = False) -> str:
    """A text table of ``Model.profile`` rows, slowest first (``top`` limits the
    rows); ``by_op`` sums the nodes of each op type and kernel instead."""
    if by_op:
        agg: dict[tuple[str, str], list[float]] = {}
        for r in rows:
            a = agg.setdefault((r["op"], r["kernel"]), [0.0, 0.0, 0])
            a[0] += r["seconds"]
            a[1] += r["min_seconds"]
            a[2] += 1
        rows = [{"name": f"{n} node{'s' if n != 1 else ''}", "op": op, "kernel": k, "seconds": s, "min_seconds": b}
                for (op, k), (s, b, n) in agg.items()]
    total = sum(r["seconds"] for r in rows) or 1.0
    rows = sorted(rows, key=lambda r: -r["seconds"])[:top]
    w = max([len(r["name"]) for r in rows] + [4])
    lines = [f"{'node':<{w}}  {'op':<20} {'ms':>8} {'min ms':>8} {'share':>6}  kernel"]
    for r in rows:
        lines.append(f"{r['name']:<{w}}  {r['op']:<20} {r['seconds'] * 1e3:8.3f} {r['min_seconds'] * 1e3:8.3f} "
                     f"{100 * r['seconds'] / total:5.1f}%  {r['kernel']}")
    lines.append(f"{'total (sum of node medians)':<{w}}  {'':<20} {total * 1e3:8.3f}")
    return "\n".join(lines)
