"""Weight quantization at convert time: every Dense weight becomes int8
(per output channel), int4 (group-wise along K, symmetric or asymmetric) or
4-bit codes into a 16-entry table (NF4 or a k-means codebook), packed into the
layout the integer kernels read (docs/format.md, docs/kernels.md).

Scales are not min-max: for each channel (int8) or group (4-bit), a grid of
clipping ratios is tried and the one with the least squared weight error is
kept, with the stored (f16 for 4-bit) scale used for the rounding. The grid is
deterministic, so the same weights always give the same bytes. int4 group scales then
move onto a per-channel lattice (integer multiples of one step, ``_on_lattice``), which
makes the weights int8 values for the large-M kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import _core
from ..ir import Graph, Node, Tensor

#: The NormalFloat-4 levels (Dettmers et al., QLoRA, 2023): quantiles of N(0, 1)
#: scaled to [-1, 1], with an exact zero.
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=np.float64)

#: Clipping ratios tried per channel/group (1.0 = min-max).
CLIP_GRID = np.linspace(1.0, 0.55, 19)

QUANT_MODES = ("int8", "int4", "nf4")
#: Most activations per row an int8 layer may keep in float (the kernel's limit).
MAX_OUTLIERS = 8
GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class QuantSpec:
    """What to do to each Dense weight: ``mode`` in int8 | int4 | nf4,
    ``group`` (4-bit only), ``symmetric`` (int4 only), ``codebook`` (nf4:
    "nf4" for the fixed NormalFloat table, "kmeans" for one learned from the
    layer's normalized weights), ``reduce_range`` (int8 only: codes in
    [-64, 64], the ``qs7-n16k4`` encoding, for the faster u8 x s7 AVX2 kernel);
    and to its input at run time: ``outliers``, how many of the
    largest-magnitude activations of each row stay float32 (the rest is
    quantized to int8 with the row's remaining range)."""

    mode: str
    group: int = 32
    symmetric: bool = False
    codebook: str = "nf4"
    outliers: int = 1
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.outliers, int) or not 0 <= self.outliers <= MAX_OUTLIERS:
            raise ValueError(f"outliers={self.outliers!r}: expected an integer in [0, {MAX_OUTLIERS}]")
        if self.mode not in QUANT_MODES:
            raise ValueError(f"quant={self.mode!r}: expected one of {', '.join(QUANT_MODES)}")
        if self.mode != "int8" and self.group not in GROUP_SIZES:
            raise ValueError(f"group_size={self.group!r}: expected one of {GROUP_SIZES}")
        if self.codebook not in ("nf4", "kmeans"):
            raise ValueError(f"codebook={self.codebook!r}: expected 'nf4' or 'kmeans'")

    @property
    def encoding(self) -> str:
        if self.mode == "int8":
            return "qs7-n16k4" if self.reduce_range else "qs8-n16k4"
        if self.mode == "int4":
            return f"q4-g{self.group}-{'sym' if self.symmetric else 'asym'}-n16k8"
        return f"q4t-g{self.group}-n16k8"

    @property
    def int8_qmax(self) -> int:
        """The largest int8 weight code: 127, or ``QS7_MAX`` (64) with ``reduce_range``."""
        return QS7_MAX if self.reduce_range else 127


# ---- int8, per output channel --------------------------------------------------------

#: Largest 7-bit weight code (``qs7-n16k4``): a biased u8 activation times it never
#: saturates AVX2's vpmaddubsw pair sums (2 * 255 * 64 = 32640 < 32767).
QS7_MAX = 64


def int8_encoding(q: np.ndarray) -> str:
    """The encoding of int8 weight codes ``q`` in [-127, 127]: ``qs7-n16k4`` when every
    code is in [-64, 64] (the same bytes, run by the 7-bit kernels where a level has
    them), else ``qs8-n16k4``."""
    q = np.asarray(q)
    return "qs7-n16k4" if q.size == 0 or int(np.abs(q.astype(np.int16)).max()) <= QS7_MAX else "qs8-n16k4"


def quantize_int8(w: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """W[K, N] -> (q int8 [K, N] in [-qmax, qmax], scale float32 [N]) with the
    clipping ratio per column that minimizes sum_k (q*s - w)^2. ``qmax`` is 127
    (int8) or 64 (7-bit weights, ``reduce_range``)."""
    if qmax not in (127, QS7_MAX):
        raise ValueError(f"qmax={qmax!r}: expected 127 or {QS7_MAX}")
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=0) if w.shape[0] else np.zeros(w.shape[1], np.float32)
    best_err = np.full(w.shape[1], np.inf)
    best_s = np.zeros(w.shape[1], np.float32)
    for c in CLIP_GRID:
        s = (amax * np.float32(c) / np.float32(qmax)).astype(np.float32)
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
        q = np.clip(np.rint(w * inv), -qmax, qmax)
        err = ((q * s - w) ** 2).sum(axis=0)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
    inv = np.divide(1.0, best_s, out=np.zeros_like(best_s), where=best_s > 0)
    q = np.clip(np.rint(w * inv), -qmax, qmax).astype(np.int8)
    return q, best_s.astype(np.float32)


# ---- 4-bit, group-wise along K --------------------------------------------------------

def _groups(w: np.ndarray, group: int) -> np.ndarray:
    """W[K, N] -> [NG, G, N] float32, K zero-padded to a multiple of G."""
    k, n = w.shape
    kg = -(-k // group) * group
    wp = np.zeros((kg, n), np.float32)
    wp[:k] = w
    return wp.reshape(kg // group, group, n)


def _f16(s: np.ndarray, what: str) -> np.ndarray:
    """Scales as stored (f16), back in float32; refuses weights beyond f16 range."""
    if np.any(~np.isfinite(s)) or np.any(np.abs(s) > 65504.0):
        raise ValueError(f"{what}: weights too large for f16 group scales (max |w| / scale above 65504)")
    return s.astype(np.float16).astype(np.float32)


def quantize_int4(w: np.ndarray, group: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """W[K, N] -> (codes u8 [K, N] in [0, 15], f16 scales [NG, N], zero points
    u8 [NG, N] or None when symmetric (z = 8)). Per group, the clip ratio (and,
    symmetric, whether the largest magnitude maps to -8 or to 7) with the least
    squared error wins; then the scales of each output channel move onto its int8
    lattice (``_on_lattice``)."""
    w = np.asarray(w, dtype=np.float32)
    k, n = w.shape
    wg = _groups(w, group)
    ng = wg.shape[0]
    best_err = np.full((ng, n), np.inf, np.float32)
    best_s = np.zeros((ng, n), np.float32)
    best_z = np.full((ng, n), 8.0, np.float32)
    if symmetric:
        amax = np.abs(wg).max(axis=1)
        # the code range is [-8, 7]: the largest magnitude can take -8 if the scale carries its
        # sign (s = -m/8, m the signed extreme), or 7 with a positive scale; both are tried
        idx = np.abs(wg).argmax(axis=1)
        signed_max = np.take_along_axis(wg, idx[:, None, :], axis=1)[:, 0, :]
        flip = np.where(signed_max > 0, np.float32(-1), np.float32(1))
        cands = [(c, d) for c in CLIP_GRID for d in (7.0, -8.0)]
    else:
        lo = np.minimum(wg.min(axis=1), 0.0)
        hi = np.maximum(wg.max(axis=1), 0.0)
        cands = [(c, 15.0) for c in CLIP_GRID]
    for c, d in cands:
        if symmetric:
            s = _f16(amax * np.float32(c / 7.0), "int4") if d > 0 else _f16(amax * flip * np.float32(c / 8.0), "int4")
            z = np.full_like(s, 8.0)
        else:
            s = _f16((hi - lo) * np.float32(c / d), "int4")
            inv0 = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
            z = np.clip(np.rint(-lo * np.float32(c) * inv0), 0, 15)
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
        q = np.clip(np.rint(wg * inv[:, None, :]) + z[:, None, :], 0, 15)
        err = (((q - z[:, None, :]) * s[:, None, :] - wg) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_z = np.where(better, z, best_z)
    best_s, best_z = _on_lattice(wg, best_s, best_z, symmetric)
    inv = np.divide(1.0, best_s, out=np.zeros_like(best_s), where=best_s != 0)
    q = np.clip(np.rint(wg * inv[:, None, :]) + best_z[:, None, :], 0, 15).astype(np.uint8)
    codes = q.reshape(-1, n)[:k]
    return (np.ascontiguousarray(codes), best_s.astype(np.float16),
            None if symmetric else best_z.astype(np.uint8))


#: The int4 group scales are put on a lattice per output channel, s[g, n] = m[g, n] * step[n]
#: with integer m in [-16, 16] and every m * (u - z) in [-128, 127], so the weights are int8
#: values m * (u - z) and the large-M kernels run them as one int8 GEMM instead of a drain of
#: int32 sums per group (docs/kernels.md, "int4 on the int8 lattice"). The step is tried at
#: these fractions of the channel's largest free scale (its largest multiple 16, 14 or 12).
LATTICE_FRACTIONS = (16, 15, 14, 13, 12, 11, 10)


def _mant7(x: np.ndarray) -> np.ndarray:
    """x > 0 rounded to a number with 7 significant bits: its multiples by |m| <= 16 are
    exact f16 numbers while they are normal."""
    m, e = np.frexp(x.astype(np.float32))
    return np.ldexp(np.rint(m * 128) / 128, e).astype(np.float32)


def _on_lattice(wg: np.ndarray, s0: np.ndarray, z0: np.ndarray, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Group scales s0 [NG, N] (free, from the clipping search) moved onto a lattice per
    column (see LATTICE_FRACTIONS) with the least squared error: for each step, each group's
    multiple around |s0| / step and (asymmetric) three zero points are tried. A column whose
    step would be below f16's normal range keeps its free scales (the layer then runs the
    group-wise kernels)."""
    lo = np.minimum(wg.min(axis=1), 0.0)
    hi = np.maximum(wg.max(axis=1), 0.0)
    smax = np.abs(s0).max(axis=0)
    sign = np.where(s0 < 0, np.float32(-1), np.float32(1))
    # largest |m|: symmetric v in [-8, 7]: 16 for m > 0, 15 for m < 0; asymmetric: the zero point's bound
    mmax = np.where(sign > 0, np.float32(16), np.float32(15)) if symmetric else np.float32(16)
    best_tot = np.full(s0.shape[1], np.inf)
    out_s, out_z = s0.copy(), z0.copy()
    for t in LATTICE_FRACTIONS:
        step = _mant7(np.where(smax > 0, smax / np.float32(t), np.float32(1)))
        ok_col = step >= np.float32(2.0 ** -14)
        safe = np.where(ok_col, step, np.float32(1))
        base = np.floor(np.abs(s0) / safe)
        be = np.full(s0.shape, np.inf, np.float32)
        bs, bz = np.zeros_like(s0), np.zeros_like(z0)
        for dm in (0.0, 1.0, -1.0, 2.0):
            m = np.clip(base + dm, 1, mmax)
            s = sign * m * safe
            if symmetric:
                zs = [np.full_like(s, 8.0)]
            else:
                # z in [15 - 127 // m, 128 // m] keeps m * (u - z) in [-128, 127]
                zlo, zhi = np.maximum(0, 15 - np.floor(127 / m)), np.minimum(15, np.floor(128 / m))
                zs = [np.clip(c, zlo, zhi) for c in (np.rint(-lo / s), np.rint(7.5 - (lo + hi) / (2 * s)), z0)]
            for z in zs:
                q = np.clip(np.rint(wg / s[:, None, :]) + z[:, None, :], 0, 15)
                err = (((q - z[:, None, :]) * s[:, None, :] - wg) ** 2).sum(axis=1)
                better = err < be
                be = np.where(better, err, be)
                bs = np.where(better, s, bs)
                bz = np.where(better, z, bz)
        tot = np.where(ok_col, be.sum(axis=0), np.inf)
        take = tot < best_tot
        best_tot = np.where(take, tot, best_tot)
        out_s = np.where(take[None, :], bs, out_s)
        out_z = np.where(take[None, :], bz, out_z)
    return out_s.astype(np.float32), out_z


#: Peak of the s8 tables convert writes (NF4 and k-means): 64, not 127. Entries in
#: [-64, 64] let AVX2 multiply (T[u] + 64) as u8 by the s8 activations with the exact 3-op
#: vpmaddubsw cell instead of the 4-op sign trick (docs/kernels.md); the scale absorbs the
#: peak, and the coarser grid does not change the weight error measurably (NF4 on N(0, 1)
#: weights, g32: 0.0812 relative error with either peak).
TABLE_PEAK = 64


def nf4_table() -> np.ndarray:
    """The NF4 levels as the kernel's s8 table (x TABLE_PEAK)."""
    return np.rint(NF4_LEVELS * TABLE_PEAK).astype(np.int8)


def kmeans_table(w: np.ndarray, group: int, iters: int = 25) -> np.ndarray:
    """A 16-entry s8 codebook learned by 1-D k-means (Lloyd, started from the NF4
    levels) on the layer's weights normalized by their group's absmax: the
    levels follow this layer's weight histogram instead of a normal curve."""
    wg = _groups(np.asarray(w, np.float32), group)
    amax = np.abs(wg).max(axis=1, keepdims=True)
    v = np.divide(wg, amax, out=np.zeros_like(wg), where=amax > 0).ravel().astype(np.float64)
    if v.size > 1 << 20:  # a fixed, evenly spaced subsample keeps big layers fast and deterministic
        v = v[:: v.size // (1 << 20)]
    v.sort()
    centers = NF4_LEVELS.copy()
    for _ in range(iters):
        edges = (centers[1:] + centers[:-1]) / 2
        idx = np.searchsorted(edges, v)
        sums = np.bincount(idx, weights=v, minlength=16)
        cnts = np.bincount(idx, minlength=16)
        new = np.where(cnts > 0, sums / np.maximum(cnts, 1), centers)
        if np.allclose(new, centers, atol=1e-7):
            break
        centers = np.sort(new)
    peak = np.abs(centers).max()
    t = np.rint(centers / peak * TABLE_PEAK) if peak > 0 else np.zeros(16)
    return np.clip(t, -TABLE_PEAK, TABLE_PEAK).astype(np.int8)


def quantize_table4(w: np.ndarray, group: int, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W[K, N] -> (codes u8 [K, N], f16 scales [NG, N]) for w ~ s * table[code]:
    per group, the clip ratio with the least squared error; codes are the
    nearest table entries."""
    w = np.asarray(w, dtype=np.float32)
    k, n = w.shape
    t = table.astype(np.float32)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    edges = (ts[1:] + ts[:-1]) / 2
    tmax = float(np.abs(t).max()) or 1.0
    wg = _groups(w, group)
    amax = np.abs(wg).max(axis=1)

    def encode(s: np.ndarray) -> np.ndarray:
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
        return order[np.searchsorted(edges, wg * inv[:, None, :])]

    best_err = np.full(amax.shape, np.inf, np.float32)
    best_s = np.zeros(amax.shape, np.float32)
    for c in CLIP_GRID:
        s = _f16(amax * np.float32(c / tmax), "nf4")
        err = ((t[encode(s)] * s[:, None, :] - wg) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
    codes = encode(best_s).astype(np.uint8).reshape(-1, n)[:k]
    return np.ascontiguousarray(codes), best_s.astype(np.float16)


# ---- packing and dequantization ---------------------------------------------------------

def pack_weight(w: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, dict]:
    """Quantizes and packs W[K, N]; returns (packed bytes, meta for the header)."""
    w = np.asarray(w, dtype=np.float32)
    if spec.mode == "int8":
        q, s = quantize_int8(w, spec.int8_qmax)
        return _core.pack_qs8(q, s), {"quant": "int8", "clip": "mse", "bits": 7 if spec.reduce_range else 8}
    if spec.mode == "int4":
        codes, s, z = quantize_int4(w, spec.group, spec.symmetric)
        kind = "sym" if spec.symmetric else "asym"
        return (_core.pack_q4(codes, s.view(np.uint16), z, None, kind, spec.group),
                {"quant": "int4", "group": spec.group, "symmetric": spec.symmetric, "clip": "mse"})
    table = nf4_table() if spec.codebook == "nf4" else kmeans_table(w, spec.group)
    codes, s = quantize_table4(w, spec.group, table)
    return (_core.pack_q4(codes, s.view(np.uint16), None, table, "table", spec.group),
            {"quant": "nf4", "group": spec.group, "codebook": spec.codebook, "clip": "mse"})


def dequantize(w: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """The float weights a layer effectively computes with under ``spec``
    (quantize, then expand): for error measurements and tests."""
    w = np.asarray(w, dtype=np.float32)
    k, n = w.shape
    if spec.mode == "int8":
        q, s = quantize_int8(w, spec.int8_qmax)
        return q.astype(np.float32) * s[None, :]
    g = spec.group
    kg = -(-k // g) * g
    if spec.mode == "int4":
        codes, s, z = quantize_int4(w, g, spec.symmetric)
        zz = np.full(s.shape, 8, np.float32) if z is None else z.astype(np.float32)
        cp = np.zeros((kg, n), np.float32)
        cp[:k] = codes
        vals = (cp.reshape(-1, g, n) - zz[:, None, :]) * s.astype(np.float32)[:, None, :]
        return vals.reshape(kg, n)[:k]
    table = nf4_table() if spec.codebook == "nf4" else kmeans_table(w, g)
    codes, s = quantize_table4(w, g, table)
    cp = np.zeros((kg, n), np.int64)
    cp[:k] = codes
    vals = table.astype(np.float32)[cp].reshape(-1, g, n) * s.astype(np.float32)[:, None, :]
    return vals.reshape(kg, n)[:k]


def quantize_dense_weights(spec: QuantSpec) -> Callable[[Graph], Graph]:
    """Returns the pass that quantizes every raw float32 Dense weight [K, N]
    per ``spec`` and stores it packed in the integer kernels' layout."""

    def quantize_dense_weights(graph: Graph) -> Graph:
        for node in graph.nodes:
            if node.op != "Dense":
                continue
            w = graph.tensors[node.inputs[1]]
            if w.encoding != "raw" or w.dtype != "float32":
                continue
            arr = w.array().astype(np.float32, copy=False)
            packed, meta = pack_weight(arr, spec)
            graph.tensors[w.name] = Tensor(w.name, packed, "float32", tuple(arr.shape), spec.encoding, dict(w.meta, **meta))
            if spec.outliers:
                node.attrs["outliers"] = spec.outliers
            if spec.mode != "int8":
                # weights lowbit chose itself: the runtime may requantize them per column to int8
                # for batches (the rounded lattice form, docs/format.md)
                node.attrs["requantize"] = 1
        return graph

    return quantize_dense_weights


#: Embedding tables at least this large are stored int8 (smaller tables are not worth three ops).
MIN_TABLE_ELEMENTS = 1 << 14


def quantize_gather_tables(graph: Graph) -> Graph:
    """Stores each large float32 lookup table (a 2-D constant only gathered along axis 0:
    token and position embeddings) as int8 rows with one float32 scale per row
    (amax / 127): ``Gather(T, i)`` becomes ``GatherDequantize(Tq, s, i)`` =
    ``float(Tq[i]) * s[i]``, the same values to within half a step of each row's grid,
    from a quarter of the bytes."""
    consumers = graph.consumers()
    done: dict[str, tuple[str, str]] = {}
    nodes = []
    for n in graph.nodes:
        t = graph.tensors.get(n.inputs[0]) if n.op == "Gather" and n.inputs else None
        if (t is None or t.encoding != "raw" or t.dtype != "float32" or len(t.shape) != 2
                or t.data.size < MIN_TABLE_ELEMENTS or n.inputs[0] in graph.output_names()
                or any(c.op != "Gather" or int(c.attrs.get("axis", 0)) != 0 for c in consumers.get(t.name, []))):
            nodes.append(n)
            continue
        if t.name not in done:
            table = t.array().astype(np.float32)
            amax = np.abs(table).max(axis=1)
            scale = (amax / np.float32(127)).astype(np.float32)
            inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax > 0)
            codes = np.clip(np.rint(table * inv[:, None]), -127, 127).astype(np.int8)
            qname, sname = graph.unique_name(f"{t.name}.int8"), graph.unique_name(f"{t.name}.row_scale")
            graph.tensors[qname] = Tensor.from_array(qname, codes)
            graph.tensors[sname] = Tensor.from_array(sname, scale.reshape(-1, 1))
            done[t.name] = (qname, sname)
        qname, sname = done[t.name]
        nodes.append(Node("GatherDequantize", [qname, sname, n.inputs[1]], list(n.outputs), {}, n.name))
    graph.nodes = nodes
    for name in done:
        del graph.tensors[name]
    return graph
