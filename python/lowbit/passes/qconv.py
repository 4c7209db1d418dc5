"""The int8 CNN path: static activation quantization of convolutions.

Activations between int8 layers are int8 codes with one scale and zero point per
tensor (real = scale * (q - zero_point), codes in [-128, 127]; ONNX's uint8
activations are the same numbers shifted by 128). Weights are int8 per output
channel, symmetric, in [-127, 127]; biases int32 in units of x_scale * w_scale.

Two ways in, one IR:

- ``static_quantize_convs(calib, method)``: runs the fp32 graph on calibration
  inputs, picks each activation's range from a histogram (min-max, percentile or
  entropy/KL) and rewrites every quantizable Conv into ``QConv`` /
  ``QDepthwiseConv`` (with ``Quantize`` / ``Dequantize`` where the int8 region
  starts and ends, ``QMaxPool`` and ``QGlobalAveragePool`` inside it).
- ``lower_qdq``: an ONNX model already quantized in QDQ form (onnxruntime's
  ``quantize_static(..., quant_format=QDQ)``): the integer weights, their scales,
  the int32 biases and the activations' scales are taken from the Q/DQ nodes as
  they are (no re-quantization).

``pack_qconv_weights`` then lays the int8 weights out for the kernels.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

import numpy as np

from .. import _core
from ..ir import Graph, Node, Tensor, ValueInfo
from .conv import CONV_ACTS  # noqa: F401  (the fp32 conv activations; only Relu/Clip map onto a code range)
from .quantize import int8_encoding, quantize_int8

CALIB_METHODS = ("minmax", "percentile", "entropy")
HIST_BINS = 2048
_I32 = np.iinfo(np.int32)


# ---- choosing (scale, zero point) from a range ---------------------------------------

def qparams_from_range(lo: float, hi: float) -> tuple[float, int]:
    """[lo, hi] (widened to contain 0, so that 0.0 and the padding are exact codes)
    -> (scale, zero_point) on the int8 grid [-128, 127]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError(f"activation range [{lo}, {hi}] is not finite (NaN or inf in the calibration outputs)")
    s = np.float32((hi - lo) / 255.0)
    if not s > 0:
        return 1.0, 0
    zp = int(np.clip(np.rint(-128.0 - lo / float(s)), -128, 127))
    return float(s), zp


def _code(v: float, s: float, zp: int) -> int:
    return int(np.clip(np.rint(np.float32(v) / np.float32(s)) + zp, -128, 127))


# ---- calibration ---------------------------------------------------------------------

class _Stats:
    """Running min/max, then a histogram over [min, max] (second pass)."""

    def __init__(self) -> None:
        self.lo, self.hi = np.inf, -np.inf
        self.hist: np.ndarray | None = None

    def update_range(self, a: np.ndarray) -> None:
        if a.size:
            self.lo = min(self.lo, float(a.min()))
            self.hi = max(self.hi, float(a.max()))

    def update_hist(self, a: np.ndarray) -> None:
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if hi <= lo:
            return
        h, _ = np.histogram(a.ravel(), bins=HIST_BINS, range=(lo, hi))
        self.hist = h.astype(np.float64) if self.hist is None else self.hist + h

    def edges(self) -> np.ndarray:
        return np.linspace(min(self.lo, 0.0), max(self.hi, 0.0), HIST_BINS + 1)


def _percentile_range(st: _Stats, pct: float) -> tuple[float, float]:
    """Two-sided: the values below which (100 - pct)% and pct% of the mass lie."""
    if st.hist is None or st.hist.sum() == 0:
        return st.lo, st.hi
    cdf = np.cumsum(st.hist) / st.hist.sum()
    e = st.edges()
    tail = (100.0 - pct) / 100.0
    i_lo = int(np.searchsorted(cdf, tail, side="left"))
    i_hi = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
    lo = e[i_lo] if st.lo < 0 else 0.0
    hi = e[min(i_hi + 1, HIST_BINS)] if st.hi > 0 else 0.0
    return min(lo, 0.0), max(hi, 0.0)


def _kl_threshold(hist: np.ndarray, levels: int) -> int:
    """TensorRT-style entropy calibration on a one-sided histogram: the number of
    bins i (>= levels) whose clipped distribution P (outliers folded into the last
    bin) and its ``levels``-level quantization Q have the least KL(P || Q)."""
    n = hist.size
    if n <= levels:
        return n
    best_i, best_kl = n, np.inf
    total = hist.sum()
    if total == 0:
        return n
    step = max(1, (n - levels) // 256)  # 256 candidate thresholds keep it fast
    for i in list(range(levels, n, step)) + [n]:
        p = hist[:i].astype(np.float64).copy()
        p[-1] += hist[i:].sum()
        nz = p > 0
        # quantize the first i bins into `levels` groups, spread each group's mass over its non-empty bins
        groups = np.minimum((np.arange(i) * levels) // i, levels - 1)
        gsum = np.bincount(groups, weights=hist[:i].astype(np.float64), minlength=levels)
        gcnt = np.bincount(groups, weights=(hist[:i] > 0).astype(np.float64), minlength=levels)
        q = np.where(hist[:i] > 0, gsum[groups] / np.maximum(gcnt[groups], 1), 0.0)
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-300)
        valid = nz & (qs > 0)
        kl = float(np.sum(ps[valid] * np.log(ps[valid] / qs[valid]))) + float(ps[nz & ~(qs > 0)].sum()) * 50.0
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i


def _entropy_range(st: _Stats) -> tuple[float, float]:
    if st.hist is None or st.hist.sum() == 0:
        return st.lo, st.hi
    e = st.edges()
    lo_e, hi_e = e[0], e[-1]
    width = (hi_e - lo_e) / HIST_BINS
    if lo_e >= 0:  # one-sided (e.g. after ReLU): 256 levels over [0, T]
        # the bin at 0 is left out: ReLU puts about half the mass there, 0.0 is exact at any
        # threshold, and that spike would pull the threshold far into the tail
        h = st.hist.copy()
        h[0] = 0
        i = _kl_threshold(h, 256)
        return 0.0, float(lo_e + i * width)
    # two-sided: fold into |x| and use a symmetric threshold with 128 levels per side
    centers = (e[:-1] + e[1:]) / 2
    amax = max(-lo_e, hi_e)
    hist_abs, _ = np.histogram(np.abs(centers), bins=HIST_BINS, range=(0, amax), weights=st.hist)
    i = _kl_threshold(hist_abs, 128)
    t = float(i * amax / HIST_BINS)
    return max(-t, st.lo), min(t, st.hi)


def _feeds(graph: Graph, sample: Any) -> dict[str, np.ndarray]:
    names = [v.name for v in graph.inputs]
    if isinstance(sample, dict):
        missing = [n for n in names if n not in sample]
        if missing:
            raise ValueError(f"calibration sample lacks input(s) {missing}; the model's inputs are {names}")
        return {n: np.ascontiguousarray(sample[n], dtype=np.float32) if graph.inputs[k].dtype == "float32"
                else np.ascontiguousarray(sample[n]) for k, n in enumerate(names)}
    if len(names) != 1:
        raise ValueError(f"this model has inputs {names}: each calibration sample must be a dict name -> array")
    return {names[0]: np.ascontiguousarray(sample, dtype=np.float32)}


def _aligned(a: np.ndarray) -> np.ndarray:
    raw = np.empty(a.nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    out = raw[off:off + a.nbytes].view(a.dtype)
    out[...] = a.reshape(-1)
    return out


def collect_stats(graph: Graph, values: list[str], calib: Iterable[Any]) -> dict[str, _Stats]:
    """Runs the fp32 graph (packed on a copy) on every calibration sample with
    ``values`` as extra outputs: pass 1 min/max, pass 2 histograms."""
    from .conv import pack_conv_weights
    from .pack import pack_dense_weights
    from ..runtime import build_engine

    samples = list(calib)
    if not samples:
        raise ValueError("calib= is empty: static int8 quantization needs at least one calibration input")
    g = copy.deepcopy(graph)
    g = pack_conv_weights(pack_dense_weights(g))
    for t in g.tensors.values():  # the engine reads constants in place and wants them 64-byte aligned
        t.data = _aligned(t.data)
    input_names = {v.name for v in g.inputs}
    observed = [v for v in values if v not in input_names]
    g.outputs = g.outputs + [ValueInfo(v, "float32", ()) for v in observed]
    engine = build_engine(g)
    stats = {v: _Stats() for v in values}
    n_out = len(graph.outputs)
    feeds = [_feeds(graph, s) for s in samples]
    runs = []
    for f in feeds:
        outs = engine.run([f[v.name] for v in g.inputs])
        got = dict(zip(observed, outs[n_out:]))
        got.update({v: f[v] for v in values if v in input_names})
        runs.append(got)
        for v in values:
            stats[v].update_range(np.asarray(got[v]))
    for got in runs:
        for v in values:
            stats[v].update_hist(np.asarray(got[v]))
    return stats


def choose_range(st: _Stats, method: str, percentile: float) -> tuple[float, float]:
    if method == "minmax":
        return st.lo, st.hi
    if method == "percentile":
        return _percentile_range(st, percentile)
    return _entropy_range(st)


# ---- which convolutions run in int8 ------------------------------------------------------

def _act_codes(node: Node, s: float, zp: int) -> tuple[int, int] | None:
    """The output code range that applies the conv's fused activation, or None when
    the activation is not a clamp (those convs stay fp32)."""
    act = node.attrs.get("act")
    if not act:
        return -128, 127
    if act == "Relu":
        return max(-128, zp), 127
    if act == "Clip":
        lo = node.attrs.get("act_alpha", -np.inf)
        hi = node.attrs.get("act_beta", np.inf)
        clo = -128 if lo == -np.inf else _code(lo, s, zp)
        chi = 127 if hi == np.inf else _code(hi, s, zp)
        return (clo, chi) if clo <= chi else None
    return None


def _quantizable(graph: Graph, n: Node) -> bool:
    if n.op != "Conv" or n.attrs.get("layout") != "NHWC":
        return False
    t = graph.tensors.get(n.inputs[1])
    if t is None or t.encoding != "raw" or t.dtype != "float32" or len(t.shape) != 4:
        return False
    if n.attrs.get("act") not in (None, "", "Relu", "Clip"):
        return False
    cout, cg = t.shape[0], t.shape[1]
    g = int(n.attrs.get("group", 1))
    return g == 1 or (cg == 1 and g == cout)


def _quant_weights(w: np.ndarray, depthwise: bool, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Float conv weight [Cout, Cin, kh, kw] -> (int8 codes, same layout; scales [Cout]),
    per output channel, symmetric, with the MSE clipping search of the Dense path; codes in
    [-qmax, qmax] (64: 7-bit weights, ``reduce_range``; the depthwise kernel keeps 127)."""
    cout = w.shape[0]
    mat = w.reshape(cout, -1).T  # [Cin*kh*kw, Cout]
    q, s = quantize_int8(mat, 127 if depthwise else qmax)
    s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
    return np.ascontiguousarray(q.T.reshape(w.shape)), s


def _quant_bias(b: np.ndarray | None, x_scale: float, w_scale: np.ndarray, limit: int) -> np.ndarray | None:
    if b is None:
        return None
    unit = np.float32(x_scale) * w_scale.astype(np.float32)
    return np.clip(np.rint(b.astype(np.float64) / unit.astype(np.float64)), -limit, limit).astype(np.int32)


def static_quantize_convs(calib: Iterable[Any], method: str = "percentile", percentile: float = 99.99,
                          report: dict | None = None, qmax: int = 127) -> Callable[[Graph], Graph]:
    """Returns the pass that calibrates and rewrites the NHWC graph's convolutions
    to int8 (run after ``to_nhwc``, before the packing passes); weight codes in
    [-qmax, qmax] (64: 7-bit, ``reduce_range``)."""
    if method not in CALIB_METHODS:
        raise ValueError(f"calib_method={method!r}: expected one of {', '.join(CALIB_METHODS)}")
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"calib_percentile={percentile!r}: expected a value in (50, 100]")

    def static_quantize_convs(graph: Graph) -> Graph:
        convs = [n for n in graph.nodes if _quantizable(graph, n)]
        if not convs:
            return graph
        values: list[str] = []
        for n in convs:
            for v in [n.inputs[0], n.outputs[0]] + ([n.inputs[3]] if len(n.inputs) > 3 and n.inputs[3] else []):
                if v not in values:
                    values.append(v)
        stats = collect_stats(graph, values, calib)
        params = {v: qparams_from_range(*choose_range(stats[v], method, percentile)) for v in values}
        if report is not None:
            report.update({v: {"range": [float(stats[v].lo), float(stats[v].hi)], "scale": params[v][0],
                               "zero_point": params[v][1]} for v in values})
        return _rewrite_int8(graph, {id(n) for n in convs}, params, qmax)

    return static_quantize_convs


def _rewrite_int8(graph: Graph, convs: set[int], params: dict[str, tuple[float, int]], qmax: int = 127) -> Graph:
    """Walks the graph in order: the chosen convs become QConv / QDepthwiseConv on
    int8 values; MaxPool / GlobalAveragePool of int8 values run on the codes;
    ``Quantize`` / ``Dequantize`` are inserted where values cross the boundary."""
    q: dict[str, tuple[float, int]] = {}      # int8 values -> (scale, zp)
    as_q: dict[str, str] = {}                  # float value -> its quantized twin
    as_f: dict[str, str] = {}                  # int8 value -> its float twin
    outputs = graph.output_names()
    nodes: list[Node] = []
    used = set(graph.tensors) | {o for n in graph.nodes for o in n.outputs} | {i.name for i in graph.inputs}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    def to_int8(v: str) -> str:
        if v in q:
            return v
        if v not in as_q:
            s, z = params[v]
            name = fresh(f"{v}.q")
            nodes.append(Node("Quantize", [v], [name], {"scale": s, "zero_point": z}, f"{v}/quantize"))
            q[name] = (s, z)
            as_q[v] = name
        return as_q[v]

    def to_float(v: str) -> str:
        if v not in q:
            return v
        if v not in as_f:
            s, z = q[v]
            name = fresh(f"{v}.f")
            nodes.append(Node("Dequantize", [v], [name], {"scale": s, "zero_point": z}, f"{v}/dequantize"))
            as_f[v] = name
        return as_f[v]

    def int8_output(n: Node, out: str, p: tuple[float, int]) -> str:
        """The int8 value a node writes for `out`; a graph output gets a Dequantize under its name."""
        if out not in outputs:
            q[out] = p
            return out
        inner = fresh(f"{out}.q")
        q[inner] = p
        as_f[inner] = out
        return inner

    for n in graph.nodes:
        codes = _act_codes(n, *params[n.outputs[0]]) if id(n) in convs else None
        if codes is not None:  # (a Clip whose bounds cross stays float)
            x, y = n.inputs[0], n.outputs[0]
            res = n.inputs[3] if len(n.inputs) > 3 and n.inputs[3] else ""
            xq = to_int8(x)
            xs, xz = q[xq]
            ys, yz = params[y]
            w = graph.tensors[n.inputs[1]].array().astype(np.float32)
            depthwise = int(n.attrs.get("group", 1)) != 1
            wq, wsc = _quant_weights(w, depthwise, qmax)
            b = graph.const(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
            bq = _quant_bias(b, xs, wsc, (1 << 30) - 1 if depthwise else _I32.max)
            attrs = {k: v for k, v in n.attrs.items() if k not in ("act", "act_alpha", "act_beta")}
            attrs.update(x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz, y_lo=codes[0], y_hi=codes[1])
            ins = [xq] + _weight_inputs(graph, n.name, wq, wsc, bq)
            if res:
                rq = to_int8(res)
                attrs.update(r_scale=q[rq][0], r_zp=q[rq][1])
                ins += [rq]
            out = int8_output(n, y, (ys, yz))
            nodes.append(Node("QConv", ins, [out], attrs, n.name))
            if out != y:
                nodes.append(Node("Dequantize", [out], [y], {"scale": ys, "zero_point": yz}, f"{y}/dequantize"))
            continue
        if n.op == "MaxPool" and n.inputs[0] in q and n.attrs.get("layout") == "NHWC":
            p = q[n.inputs[0]]
            attrs = dict(n.attrs)
            out = int8_output(n, n.outputs[0], p)
            nodes.append(Node("QMaxPool", [n.inputs[0]], [out], attrs, n.name))
            if out != n.outputs[0]:
                nodes.append(Node("Dequantize", [out], [n.outputs[0]], {"scale": p[0], "zero_point": p[1]},
                                  f"{n.outputs[0]}/dequantize"))
            continue
        if n.op == "GlobalAveragePool" and n.inputs[0] in q and n.attrs.get("layout") == "NHWC":
            s, z = q[n.inputs[0]]
            nodes.append(Node("QGlobalAveragePool", [n.inputs[0]], list(n.outputs),
                              {"layout": "NHWC", "x_scale": s, "x_zp": z}, n.name))
            continue
        n.inputs = [to_float(i) if i else i for i in n.inputs]
        nodes.append(n)
    graph.nodes = nodes
    read = {i for n in nodes for i in n.inputs}
    graph.tensors = {k: t for k, t in graph.tensors.items() if k in read}  # the float weights of the int8 convs
    return graph


def _weight_inputs(graph: Graph, base: str, wq: np.ndarray, wsc: np.ndarray, bq: np.ndarray | None) -> list[str]:
    names = []
    for suffix, arr in (("wq", wq), ("wscale", wsc)):
        name = graph.unique_name(f"{base}.{suffix}")
        graph.tensors[name] = Tensor.from_array(name, arr)
        names.append(name)
    if bq is not None:
        name = graph.unique_name(f"{base}.bq")
        graph.tensors[name] = Tensor.from_array(name, bq)
        names.append(name)
    else:
        names.append("")
    return names


# ---- packing -----------------------------------------------------------------------------

def pack_qconv_weights(graph: Graph) -> Graph:
    """QConv weights (int8 [Cout, Cin, kh, kw]) -> ``qs8-n16k4`` [kh*kw*Cin, Cout] with
    rows in (ky, kx, ci) order and unit scales (the scales stay a separate input, so
    the GEMM's float output is the exact integer sum); a depthwise QConv becomes
    ``QDepthwiseConv`` with a raw int8 [kh, kw, C] weight."""
    for n in graph.nodes:
        if n.op != "QConv":
            continue
        t = graph.tensors[n.inputs[1]]
        if t.encoding != "raw":
            continue
        w = t.array()
        if w.dtype != np.int8 or w.ndim != 4:
            raise ValueError(f"QConv '{n.name}': weight must be int8 [Cout, Cin, kh, kw], got {w.dtype} {w.shape}")
        cout, cg, kh, kw = w.shape
        g = int(n.attrs.get("group", 1))
        name = graph.unique_name(f"{n.name}.weight")
        if g != 1:
            if not (cg == 1 and g == cout):
                raise ValueError(f"QConv '{n.name}': grouped int8 convolutions other than depthwise are not supported")
            n.op = "QDepthwiseConv"
            n.attrs.pop("group", None)
            graph.tensors[name] = Tensor.from_array(name, np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)))
            n.inputs = n.inputs[:4]
        else:
            mat = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kh * kw * cg, cout))
            packed = _core.pack_qs8(mat, np.ones(cout, np.float32))
            graph.tensors[name] = Tensor(name, packed, "float32", (kh * kw * cg, cout), int8_encoding(mat),
                                         {"quant": "int8-static"})
        n.inputs[1] = name
    return graph


# ---- QDQ import ------------------------------------------------------------------------------

_WINDOW_KEYS = ("kernel_shape", "strides", "pads", "dilations", "auto_pad", "group")


def _act_param(graph: Graph, node: Node) -> tuple[float, int, bool] | None:
    """(scale, zero point on the int8 grid, was uint8) of a per-tensor Q/DQ node, or None."""
    if len(node.inputs) < 3 or not node.inputs[2]:
        return None
    s, z = graph.const(node.inputs[1]), graph.const(node.inputs[2])
    if s is None or z is None or s.size != 1 or z.size != 1 or s.dtype != np.float32:
        return None
    sv = float(s.reshape(-1)[0])
    if not (np.isfinite(sv) and sv > 0):
        return None
    if z.dtype == np.uint8:  # uint8 codes are the int8 codes + 128: real = s (u - z) = s ((u-128) - (z-128))
        return sv, int(z.reshape(-1)[0]) - 128, True
    if z.dtype == np.int8:
        return sv, int(z.reshape(-1)[0]), False
    return None


def _dq_weight(graph: Graph, node: Node | None, cout_axis: int = 0):
    """int8 codes, per-channel scales [Cout] of DequantizeLinear(const int8 W, scales, zeros)."""
    if node is None or node.op != "DequantizeLinear" or len(node.inputs) < 2:
        return None
    w, s = graph.const(node.inputs[0]), graph.const(node.inputs[1])
    z = graph.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if w is None or s is None or w.dtype != np.int8 or w.ndim != 4 or s.dtype != np.float32:
        return None
    cout = w.shape[0]
    if s.size not in (1, cout) or (s.size == cout and cout > 1 and int(node.attrs.get("axis", 1)) != cout_axis):
        return None
    if z is not None and (np.any(z != 0) or z.size not in (1, cout)):
        return None  # asymmetric weights: left to the float path
    sc = np.broadcast_to(s.reshape(-1), (cout,)).astype(np.float32)
    if not np.all(np.isfinite(sc)) or np.any(sc <= 0):
        return None
    return w, sc


def lower_qdq(graph: Graph) -> Graph:
    """Lowers an ONNX QDQ graph (DequantizeLinear -> op -> QuantizeLinear around each
    int8 op, as onnxruntime's ``quantize_static(quant_format=QDQ)`` writes it):

    - ``DQ(x_q) -> Conv(DQ(W_int8), DQ(b_int32)) [-> Relu/Clip] -> Q`` becomes one
      ``QConv`` (or depthwise) reading x_q and writing the Q's output, with the
      integer weights, their per-channel scales, the int32 bias and both
      activation scales carried over unchanged;
    - ``DQ(a) + DQ(r) [-> Relu] -> Q`` right after such a conv becomes its int8
      residual (two-step: the conv's output is rounded to its own grid first, as
      onnxruntime's QLinearConv + QLinearAdd do);
    - ``DQ(x_q) -> MaxPool -> Q`` with the same scale becomes ``QMaxPool``;
    - every other Q / DQ of a run-time value becomes ``Quantize`` / ``Dequantize``
      (uint8 codes are stored as int8 with the zero point shifted by 128: the same
      numbers). DQ of constants stays for constant folding (float weights)."""
    prod = graph.producers()
    cons = graph.consumers()
    outputs = graph.output_names()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    removed: set[int] = set()
    replaced: dict[int, Node] = {}

    def runtime(v: str) -> bool:
        return v not in graph.tensors

    def sole_reader(v: str, op: str | tuple) -> Node | None:
        r = cons.get(v, [])
        ops = (op,) if isinstance(op, str) else op
        return r[0] if len(r) == 1 and r[0].op in ops and v not in outputs else None

    def dq_of(v: str):
        d = prod.get(v)
        if d is None or d.op != "DequantizeLinear" or not runtime(d.inputs[0]):
            return None
        p = _act_param(graph, d)
        return None if p is None else (d, d.inputs[0], p)

    def out_q(v: str):
        """The Q node reading v (through an optional Relu / Clip), and the clamp that activation means."""
        act = sole_reader(v, ("Relu", "Clip"))
        nxt = act.outputs[0] if act is not None else v
        qn = sole_reader(nxt, "QuantizeLinear")
        if qn is None:
            return None
        p = _act_param(graph, qn)
        if p is None:
            return None
        s, z, _ = p
        lo, hi = -128, 127
        if act is not None and act.op == "Relu":
            lo = max(lo, z)
        elif act is not None:  # the importer turned Clip's bound inputs into attrs (absent = unbounded)
            if len(act.inputs) > 1:
                return None
            if "min" in act.attrs:
                lo = max(lo, _code(act.attrs["min"], s, z))
            if "max" in act.attrs:
                hi = min(hi, _code(act.attrs["max"], s, z))
            if lo > hi:
                return None
        return qn, act, (s, z), (lo, hi)

    qconv_of: dict[str, Node] = {}
    for c in graph.nodes:
        if c.op != "Conv" or len(c.attrs.get("kernel_shape", [])) != 2:
            continue
        xin = dq_of(c.inputs[0])
        wt = _dq_weight(graph, prod.get(c.inputs[1]))
        oq = out_q(c.outputs[0])
        if xin is None or wt is None or oq is None:
            continue
        _, x_q, (xs, xz, _) = xin
        wq, wsc = wt
        cout, cg = wq.shape[:2]
        g = int(c.attrs.get("group", 1))
        if not (g == 1 or (cg == 1 and g == cout)):
            continue
        bq = None
        if len(c.inputs) > 2 and c.inputs[2]:
            bnode = prod.get(c.inputs[2])
            unit = (np.float32(xs) * wsc).astype(np.float32)
            b = graph.const(bnode.inputs[0]) if bnode is not None and bnode.op == "DequantizeLinear" else None
            bf = graph.const(c.inputs[2])
            if bnode is not None and b is not None:
                bs = graph.const(bnode.inputs[1])
                if b.dtype != np.int32 or bs is None or b.size != cout or bs.size not in (1, cout):
                    continue
                bs = np.broadcast_to(bs.reshape(-1), (cout,)).astype(np.float32)
                if np.allclose(bs, unit, rtol=1e-6, atol=0):
                    bq = b.reshape(-1).astype(np.int32)  # the quantizer's own int32 bias, as onnxruntime runs it
                else:
                    bq = np.rint(b.reshape(-1).astype(np.float64) * bs / unit).astype(np.int64)
            elif bf is not None:
                bq = np.rint(bf.reshape(-1).astype(np.float64) / unit).astype(np.int64)
            else:
                continue
            limit = (1 << 30) - 1 if g != 1 else _I32.max
            bq = np.clip(bq, -limit, limit).astype(np.int32)
        qn, act, (ys, yz), (lo, hi) = oq
        attrs = {k: c.attrs[k] for k in _WINDOW_KEYS if k in c.attrs}
        attrs.update(x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz, y_lo=lo, y_hi=hi)
        # onnxruntime's symmetric int8 weights stay within [-127, 127]; a stray -128 (which the
        # AVX2 sign trick cannot take) moves to -127
        wq = np.maximum(wq, -127).astype(np.int8)
        ins = [x_q] + _weight_inputs(graph, c.name or qn.outputs[0], wq, wsc, bq) + [""]
        node = Node("QConv", ins, [qn.outputs[0]], attrs, c.name)
        replaced[index[id(c)]] = node
        removed.add(index[id(qn)])
        if act is not None:
            removed.add(index[id(act)])
        qconv_of[qn.outputs[0]] = node

    # residual adds right after an int8 conv
    for add in graph.nodes:
        if add.op != "Add" or len(add.inputs) != 2 or index[id(add)] in removed:
            continue
        oq = out_q(add.outputs[0])
        if oq is None:
            continue
        for a_in, b_in in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
            da, db = dq_of(a_in), dq_of(b_in)
            if da is None or db is None:
                continue
            conv = qconv_of.get(da[1])
            if (conv is None or conv.inputs[4] or conv.attrs["y_lo"] != -128 or conv.attrs["y_hi"] != 127
                    or sole_reader(da[1], "DequantizeLinear") is None or sole_reader(a_in, "Add") is None):
                continue
            if da[2][:2] != (conv.attrs["y_scale"], conv.attrs["y_zp"]):
                continue
            qn, act, (ys, yz), (lo, hi) = oq
            r_s, r_z, _ = db[2]
            conv.inputs[4] = db[1]
            conv.attrs.update(mid_scale=conv.attrs["y_scale"], mid_zp=conv.attrs["y_zp"], y_scale=ys, y_zp=yz,
                              y_lo=lo, y_hi=hi, r_scale=r_s, r_zp=r_z)
            conv.outputs = [qn.outputs[0]]
            # the conv now also reads the residual: it runs where the Add was
            old = next(i for i, n in replaced.items() if n is conv)
            del replaced[old]
            removed.add(old)
            replaced[index[id(add)]] = conv
            removed.update(index[id(n)] for n in (qn, da[0]) + ((act,) if act is not None else ()))
            break

    # MaxPool between a DQ and a Q of the same scale: max over the codes
    for mp in graph.nodes:
        if mp.op != "MaxPool" or index[id(mp)] in removed or len(mp.outputs) != 1:
            continue
        din = dq_of(mp.inputs[0])
        qn = sole_reader(mp.outputs[0], "QuantizeLinear")
        qp = _act_param(graph, qn) if qn is not None else None
        if din is None or qn is None or qp is None:
            continue
        if qp[:2] != din[2][:2] or len(mp.attrs.get("kernel_shape", [])) != 2:
            continue
        replaced[index[id(mp)]] = Node("QMaxPool", [din[1]], [qn.outputs[0]], dict(mp.attrs), mp.name)
        removed.add(index[id(qn)])

    nodes: list[Node] = []
    for i, n in enumerate(graph.nodes):
        if i in replaced:
            nodes.append(replaced[i])
            continue
        if i in removed:
            continue
        if n.op in ("QuantizeLinear", "DequantizeLinear") and runtime(n.inputs[0]):
            p = _act_param(graph, n)
            if p is None:
                from ..errors import UnsupportedOpError
                raise UnsupportedOpError(
                    f"{n.op} '{n.name}': only per-tensor scales with an int8 or uint8 zero point are supported "
                    "on run-time values", {f"{n.op}(per-axis or no zero point)": [n.name]})
            op = "Quantize" if n.op == "QuantizeLinear" else "Dequantize"
            nodes.append(Node(op, [n.inputs[0]], list(n.outputs), {"scale": p[0], "zero_point": p[1]}, n.name))
            continue
        nodes.append(n)
    graph.nodes = nodes
    return graph
