"""What a ``.qbin`` model holds and how fast each layer runs: the per-layer table
behind ``lowbit inspect`` / ``lowbit report``, example inputs for a model's
declared shapes, latency percentiles, and per-layer latency measured through
lowbit itself."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .ir import DTYPES, Graph, Node, Tensor, ValueInfo
from .runtime import Model, build_engine

# -- the per-layer table ------------------------------------------------------------------


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _first(meta: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if meta.get(k) is not None:
            return meta[k]
    return None


def layer_table(model: Model) -> list[dict[str, Any]]:
    """``Model.layers()`` plus, per layer: ``fp32_bytes`` (what its constants take
    as plain float32: the size before compression), ``ratio`` (fp32_bytes / bytes),
    ``sparsity`` (fraction of weights the encoding does not store; None for a
    dense encoding) and ``rank`` (inner dimension of a low-rank layer; None
    otherwise). Both come from the weight's header metadata, so encodings added
    later report them by writing ``sparsity``/``nnz`` and ``rank`` there."""
    rows = []
    graph = model.graph
    for node, layer in zip(graph.nodes, model.layers()):
        consts = [graph.tensors[i] for i in node.inputs if i in graph.tensors]
        sizes = []
        for t in consts:
            orig = t.meta.get("original_shape") or t.meta.get("dense_shape")
            shape = tuple(orig) if orig else t.shape
            sizes.append(_numel(shape) * (4 if t.dtype == "float32" else DTYPES[t.dtype].itemsize))
        if layer.get("rank") is not None and layer.get("weight_shape") and len(consts) >= 2:
            # a low-rank layer: before compression it was one [K, N] matrix, not two factors
            sizes[:2] = [4 * _numel(layer["weight_shape"])]
        fp32 = sum(sizes)
        weight = consts[0] if consts else None
        meta: Mapping[str, Any] = weight.meta if weight is not None else {}
        # sparse encodings (issue 4) write density = nonzeros / weights, and nnz = stored values
        sparsity = _first(meta, ("sparsity", "measured_sparsity"))
        if sparsity is None and meta.get("density") is not None:
            sparsity = 1.0 - float(meta["density"])
        elif sparsity is None and meta.get("nnz") is not None and weight is not None:
            sparsity = 1.0 - float(meta["nnz"]) / max(1, _numel(weight.shape))
        rank = _first(layer, ("rank",))
        if rank is None:
            rank = _first(meta, ("rank",))
        if rank is None:
            rank = node.attrs.get("rank")
        row = dict(layer)
        row.update({"fp32_bytes": int(fp32), "ratio": (fp32 / layer["bytes"]) if layer["bytes"] else None,
                    "sparsity": None if sparsity is None else float(sparsity),
                    "rank": None if rank is None else int(rank)})
        rows.append(row)
    return rows


def totals(rows: Iterable[Mapping[str, Any]], file_bytes: int) -> dict[str, Any]:
    """Summed stored and fp32 bytes of the layers' constants, and the
    compression ratios (fp32 weights / stored weights, fp32 weights / file)."""
    rows = list(rows)
    stored = sum(int(r["bytes"]) for r in rows)
    fp32 = sum(int(r["fp32_bytes"]) for r in rows)
    return {"layers": len(rows), "weight_bytes": stored, "fp32_weight_bytes": fp32, "file_bytes": int(file_bytes),
            "weight_compression": fp32 / stored if stored else None,
            "file_compression": fp32 / file_bytes if file_bytes else None}


# -- inputs ---------------------------------------------------------------------------------


def parse_dims(specs: Iterable[str]) -> dict[str, int]:
    """``["batch=8", "sequence=128"]`` -> ``{"batch": 8, "sequence": 128}``."""
    out: dict[str, int] = {}
    for s in specs:
        name, sep, value = s.partition("=")
        if not sep or not name or not value.strip().lstrip("-").isdigit() or int(value) < 1:
            raise ValueError(f"--dim expects NAME=N with N >= 1 (e.g. --dim sequence=128), got {s!r}")
        out[name] = int(value)
    return out


def example_inputs(inputs: Sequence[ValueInfo], batch: int = 1, dims: Mapping[str, int] | None = None,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the declared shapes: the first symbolic dimension is
    ``batch``, other symbolic dims come from ``dims`` (name -> size, default 1).
    float inputs are standard normal; integer inputs named like a mask are 1,
    other integers uniform in [0, 100) (token ids of any vocabulary)."""
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    feeds: dict[str, np.ndarray] = {}
    for v in inputs:
        shape = []
        for i, d in enumerate(v.shape):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str) and d in dims:
                shape.append(dims[d])
            else:
                shape.append(batch if i == 0 else 1)
        dt = DTYPES[v.dtype]
        if dt.kind == "f":
            feeds[v.name] = rng.standard_normal(shape).astype(dt)
        elif "mask" in v.name.lower():
            feeds[v.name] = np.ones(shape, dt)
        else:
            feeds[v.name] = rng.integers(0, 100, size=shape).astype(dt)
    return feeds


def load_feeds(path: str, model: Model) -> dict[str, np.ndarray]:
    """Inputs from a ``.npy`` (a single-input model) or ``.npz`` (arrays named
    like the model's inputs; one unnamed array is fine for a single input)."""
    data = np.load(path, allow_pickle=False)
    names = model.input_names
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise ValueError(f"{path}: this model has {len(names)} inputs {names}; pass an .npz with one array per name "
                             f"(np.savez('x.npz', {names[0]}=..., ...))")
        return {names[0]: data}
    with data:
        arrays = {k: data[k] for k in data.files}
    if len(names) == 1 and len(arrays) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ValueError(f"{path}: no array named {missing} (the file has {sorted(arrays)}; the model's inputs are "
                         f"{names})")
    return {n: arrays[n] for n in names}


# -- timing ---------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], min_seconds: float = 1.0, min_iters: int = 10, max_iters: int = 100000,
               warmup: int = 2, on_tick: Callable[[float], None] | None = None) -> np.ndarray:
    """Times ``fn()`` after ``warmup`` calls, at least ``min_iters`` times and for at
    least ``min_seconds`` (never more than ``max_iters``); returns the seconds
    of each call. ``on_tick(fraction_done)`` reports progress."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if len(times) >= min_iters and t1 - start >= min_seconds:
            break
        if on_tick is not None:
            on_tick(min(1.0, max(len(times) / min_iters, (t1 - start) / max(min_seconds, 1e-9))))
    return np.asarray(times, dtype=np.float64)


def latency_stats(times: np.ndarray, samples_per_call: int = 1) -> dict[str, float]:
    """Percentiles (p50, p90, p99), mean and min in milliseconds, and the
    throughput in samples per second (samples per call / mean time)."""
    t = np.asarray(times, dtype=np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    mean = float(t.mean())
    return {"iterations": int(t.size), "p50_ms": float(p50) * 1e3, "p90_ms": float(p90) * 1e3,
            "p99_ms": float(p99) * 1e3, "mean_ms": mean * 1e3, "min_ms": float(t.min()) * 1e3,
            "throughput_per_s": samples_per_call / mean if mean > 0 else float("inf")}


# -- per-layer latency ----------------------------------------------------------------------

_OUT_DTYPES = ("float32", "int64", "uint8", "int32", "int8")


def _dtype_name(a: np.ndarray) -> str:
    for name, dt in DTYPES.items():
        if a.dtype == dt:
            return name
    raise ValueError(f"unsupported dtype {a.dtype}")


def _aligned_const(name: str, arr: np.ndarray) -> Tensor:
    """A constant whose data starts on a 64-byte boundary, as the engine requires."""
    t = Tensor.from_array(name, arr)
    raw = np.empty(t.data.nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    data = raw[off:off + t.data.nbytes].view(t.data.dtype)
    data[...] = t.data
    t.data = data
    return t


def _node_engine(graph: Graph, node: Node, values: Mapping[str, np.ndarray],
                 int_inputs_const: bool = False) -> tuple[Any, list[str]]:
    """An engine that runs ``node`` alone on runtime inputs named in ``values``
    (and the names of those inputs, in order). The engine infers each output's
    dtype and rejects a wrong declaration, so the first declaration it accepts
    is the node's real output dtype. ``int_inputs_const`` passes integer inputs
    as constants: shape arithmetic (Slice ends, Reshape shapes) must be known
    when the engine plans, as it is inside the whole model."""
    tensors = {i: graph.tensors[i] for i in node.inputs if i in graph.tensors}
    names: list[str] = []
    for i in node.inputs:
        if not i or i in graph.tensors or i in names or i in tensors:
            continue
        if int_inputs_const and values[i].dtype.kind in "iu":
            tensors[i] = _aligned_const(i, values[i])
        else:
            names.append(i)
    ins = [ValueInfo(n, _dtype_name(values[n]), tuple(values[n].shape)) for n in names]
    first_error: Exception | None = None
    candidates = list(_OUT_DTYPES)
    if ins:
        candidates.insert(0, ins[0].dtype)
    for dt in dict.fromkeys(candidates):
        sub = Graph(ins, [ValueInfo(o, dt, ()) for o in node.outputs if o], [node], tensors)
        try:
            return build_engine(sub), names
        except ValueError as e:
            first_error = first_error or e
    raise ValueError(f"node '{node.name}' ({node.op}) cannot run alone: {first_error}")


def _node_runner(graph: Graph, node: Node, values: Mapping[str, np.ndarray]) -> tuple[Any, list[np.ndarray], list]:
    """(engine, its input arrays, the outputs of a first run) for ``node`` alone."""
    try:
        eng, names = _node_engine(graph, node, values)
        args = [values[i] if values[i].flags.c_contiguous else values[i].copy() for i in names]
        return eng, args, eng.run(args)
    except ValueError:
        eng, names = _node_engine(graph, node, values, int_inputs_const=True)
        args = [values[i] if values[i].flags.c_contiguous else values[i].copy() for i in names]
        return eng, args, eng.run(args)


def _layer_latency_alone(model: Model, feeds: Mapping[str, np.ndarray], repeat: int,
                         on_layer: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    graph = model.graph
    values: dict[str, np.ndarray] = dict(feeds)
    rows = []
    kernels = [l["kernel"] for l in model.layers()]
    n = len(graph.nodes)
    for idx, node in enumerate(graph.nodes):
        eng, args, outs = _node_runner(graph, node, values)  # the first run plans the arena
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            eng.run(args)
            times.append(time.perf_counter() - t0)
        for o, y in zip([o for o in node.outputs if o], outs):
            values[o] = y
        rows.append({"name": node.name, "op": node.op, "kernel": kernels[idx], "seconds": float(np.median(times)),
                     "min_seconds": float(np.min(times))})
        if on_layer is not None:
            on_layer(idx + 1, n)
    total = sum(r["seconds"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["seconds"] / total
    return rows


def layer_latency(model: Model, feeds: Mapping[str, np.ndarray], repeat: int = 20,
                  on_layer: Callable[[int, int], None] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Per-layer latency on ``feeds``: one dict per node (``name``, ``op``,
    ``kernel``, ``seconds`` = median, ``min_seconds``, ``share``) and how it was
    measured. Uses the engine's own per-node clock (``Model.profile``) when this
    lowbit has one; otherwise runs every layer alone, as a one-node graph on the
    real intermediate values, which adds one Python call per layer (a few µs)."""
    profile = getattr(model, "profile", None)
    if callable(profile):
        rows = profile(dict(feeds), repeat=repeat)
        return list(rows), "engine per-node clock (Model.profile), median of %d runs" % repeat
    rows = _layer_latency_alone(model, feeds, repeat, on_layer)
    return rows, f"each layer run alone as a one-node graph on the real intermediate values, median of {repeat} runs"
