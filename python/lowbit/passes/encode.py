"""Encodings of weights that arrive already compressed (from ``lowbit.compress``):
the one place where such a weight's ``.qbin`` encoding is chosen.

The torch frontend hands over one ``WeightSpec`` per compressed layer: the exact
float values the torch model computes with, and what the annotation says about them
(quantization codes / scales / zero points / codebook, pruning mask, low-rank role).
``encode_compressed_weights`` finds each Dense / Conv weight of the graph whose values
are those of a spec (by value, so it survives the exporter's renaming and transposes),
and ``encode_weight`` picks its encoding:

=========================================================  ============================
annotation                                                 encoding (docs/compress.md)
=========================================================  ============================
linear, 2..4 bits, symmetric (incl. 2-bit QAT); ternary;   ``q4-g{G}-sym-n16k8``: u = code + 8
binary                                                     (restricted codes of int4)
linear, 2..4 bits, asymmetric                              ``q4-g{G}-asym-n16k8``: u = code, z = zero
nf4; k-means of at most 4 bits                             ``q4t-g{G}-n16k8``: the codebook is the table
linear, 5..8 bits, per channel / per tensor                ``qs8-n16k4``: code - zero in [-127, 127]
anything else, pruned-only, low-rank factors               ``f32-n16`` (dense; zeros stay zeros)
=========================================================  ============================

G is the largest of 128 / 64 / 32 that divides the annotation's group (any of them for
one scale per channel or tensor) with the least padding. An encoding is used only if it
reproduces every weight *bit for bit* (checked here, from the numbers about to be
packed); otherwise the layer is stored as f32 and the report says why. Conv weights stay
f32 until the runtime has a quantized convolution (``QUANTIZED_WEIGHT_OPS``). Sparse and
low-rank encodings (issue 4) plug in at ``encode_weight``: the spec already says which
weights are masked and which layers are the two factors of one low-rank layer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import _core
from ..ir import Graph, Tensor
from .quantize import int8_encoding

#: graph ops whose C++ implementation reads quantized weight encodings
QUANTIZED_WEIGHT_OPS = {"Dense"}
Q4_GROUPS = (128, 64, 32)
QS8_MAX_K = 131072


@dataclass
class WeightSpec:
    """One compressed torch layer, as the converter needs it (numpy only).

    ``matrix`` [N, K] float32: the weight the torch model computes with
    (``weight.reshape(N, -1)``). ``quant``: the annotation's quantization fields
    (``scheme``, ``bits``, ``symmetric``, ``granularity``, ``group_size``, ...) or None;
    ``codes`` [N, K], ``scale`` [N, G] / [1, 1], ``zero`` [N, G], ``codebook`` [2**bits].
    ``mask`` [N, K] bool (True = kept) for pruned layers, with ``pattern``.
    ``lowrank``: ``{"role": "first" | "second", "of": parent layer, "rank": r}``."""

    layer: str
    op: str
    matrix: np.ndarray
    quant: dict[str, Any] | None = None
    codes: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero: np.ndarray | None = None
    codebook: np.ndarray | None = None
    mask: np.ndarray | None = None
    pattern: str = "unstructured"
    lowrank: dict[str, Any] | None = None

    def key(self) -> tuple:
        return _key(self.matrix)

    def describe(self) -> str:
        """Short text of the quantization, e.g. ``int4 g32 sym gptq``."""
        q = self.quant
        if q is None:
            return "fp32"
        scheme = q["scheme"]
        head = f"int{q['bits']}" if scheme == "linear" else (scheme if scheme != "kmeans" else f"kmeans{q['bits']}")
        gran = {"group": f"g{q.get('group_size')}", "channel": "per-channel", "tensor": "per-tensor"}[q["granularity"]]
        sym = ("sym" if q.get("symmetric", True) else "asym") if scheme == "linear" else ""
        return " ".join(p for p in (head, gran, sym, q.get("method", "rtn")) if p)


def _key(matrix: np.ndarray) -> tuple:
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    return m.shape, hashlib.blake2b(m.tobytes(), digest_size=20).digest()


@dataclass
class Encoded:
    """The result of ``encode_weight``: ``encoding`` and its packed bytes, or
    ``data=None`` for f32 (the ordinary f32 packers lay it out); ``meta`` goes into
    the file's tensor entry; ``note`` says why a compressed layer stayed f32."""

    encoding: str
    data: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


# ---- the choice ----------------------------------------------------------------------

def encode_weight(op: str, spec: WeightSpec) -> Encoded:
    """Picks and packs the encoding of one compressed weight (see the module docstring).
    ``op`` is the graph op that reads it (``Dense`` or ``Conv``)."""
    meta: dict[str, Any] = {"source": spec.layer}
    if spec.quant is not None:
        meta["quant"] = spec.describe()
    if spec.mask is not None:
        meta["sparsity"] = round(float(1.0 - spec.mask.mean()), 4) if spec.mask.size else 0.0
    if spec.lowrank is not None:
        meta["lowrank"] = f"{spec.lowrank['role']} of {spec.lowrank['of']}"
    # Sparse (CSR / block-sparse) and fused low-rank encodings, once the kernels exist (issue 4),
    # are chosen here: ``spec.mask`` / ``spec.pattern`` and ``spec.lowrank`` carry what they need.
    if spec.quant is None:
        return Encoded("f32-n16", None, meta)
    if op not in QUANTIZED_WEIGHT_OPS:
        why = choose_encoding(op, spec.quant, *spec.matrix.shape)[1]
        return Encoded("f32-n16", None, meta, f"{spec.layer}: {spec.describe()} stored as its exact f32 values ({why})")
    try:
        plan = _plan(spec)
    except _NoExactEncoding as e:
        return Encoded("f32-n16", None, meta, f"{spec.layer}: {spec.describe()} stored as its exact f32 values ({e})")
    return Encoded(plan.encoding, plan.pack(), meta)


class _NoExactEncoding(Exception):
    pass


@dataclass
class _Plan:
    encoding: str
    pack: Callable[[], np.ndarray]


def choose_encoding(op: str, quant: dict[str, Any] | None, n: int, k: int) -> tuple[str, str | None]:
    """The encoding a weight [N, K] read by ``op`` gets under the annotation ``quant``
    (None: float), decided from the spec alone: ``(encoding, None)``, or
    ``("f32-n16", why)`` when the spec has no .qbin encoding. ``encode_weight`` then
    checks that the codes and scales reproduce the weight exactly; the size
    accounting (``lowbit.compress.size_report(accounting="qbin")``) reads this too."""
    if quant is None:
        return "f32-n16", None
    if op not in QUANTIZED_WEIGHT_OPS:
        return "f32-n16", f"{op} has no quantized weight encoding in this lowbit yet"
    scheme, bits = quant["scheme"], int(quant["bits"])
    try:
        if scheme == "linear" and bits <= 4:
            kind = "sym" if quant.get("symmetric", True) else "asym"
        elif scheme in ("ternary", "binary"):
            kind = "sym"
        elif scheme in ("nf4", "kmeans") and bits <= 4:
            kind = "table"
        elif scheme == "linear" and bits <= 8:
            if quant["granularity"] == "group" and _group_len(quant, k) < k:
                raise _NoExactEncoding(f"{bits}-bit group-wise scales: the int8 encoding has one scale per channel")
            if k > QS8_MAX_K:
                raise _NoExactEncoding(f"K = {k} is above the int8 encoding's {QS8_MAX_K}")
            return "qs8-n16k4", None
        else:
            raise _NoExactEncoding(f"no .qbin encoding for {scheme} with {bits} bits")
        G = _pick_q4_group(quant, k)
    except _NoExactEncoding as e:
        return "f32-n16", str(e)
    return (f"q4t-g{G}-n16k8" if kind == "table" else f"q4-g{G}-{kind}-n16k8"), None


def encoded_nbytes(encoding: str, k: int, n: int, groups: int = 1) -> int:
    """Bytes of a [K, N] weight (``groups`` of them for a grouped conv) in ``encoding``
    (the formulas of docs/format.md)."""
    p = -(-n // 16)
    if encoding == "f32-n16":
        return groups * p * 16 * k * 4
    if encoding in ("qs8-n16k4", "qs7-n16k4"):
        return p * 16 * (-(-k // 4) * 4 + 8)
    table = encoding.startswith("q4t-")
    g = int(encoding.split("-")[1][1:])
    kg = -(-k // g) * g
    ng = kg // g
    return (64 if table else 0) + p * kg * 8 + p * ng * 32 + (p * ng * 16 if "-asym-" in encoding else 0)


def _plan(spec: WeightSpec) -> _Plan:
    n, k = spec.matrix.shape
    if spec.codes is None or spec.scale is None:
        raise _NoExactEncoding("the annotation has no codes / scales")
    encoding, why = choose_encoding("Dense", spec.quant, n, k)
    if why is not None:
        raise _NoExactEncoding(why)
    if encoding == "qs8-n16k4":
        return _plan_qs8(spec)
    kind = "table" if encoding.startswith("q4t-") else encoding.split("-")[2]
    return _plan_q4(spec, kind, int(encoding.split("-")[1][1:]))


def _group_len(q: dict, k: int) -> int:
    """Columns per annotation group (K for one scale per channel / tensor)."""
    return min(int(q["group_size"]), k) if q["granularity"] == "group" else k


def _column_scale(spec: WeightSpec, arr: np.ndarray | None, cols: np.ndarray) -> np.ndarray:
    """The annotation's per-group values ``arr`` ([N, G] or [1, 1]) at columns ``cols``: [N, len(cols)]."""
    n, k = spec.matrix.shape
    assert arr is not None and spec.quant is not None  # _plan checked both
    arr = np.asarray(arr)
    if arr.shape == (1, 1):
        return np.broadcast_to(arr, (n, len(cols)))
    g = _group_len(spec.quant, k)
    return arr[:, np.minimum(cols // g, arr.shape[1] - 1)]


def _pick_q4_group(quant: dict[str, Any], k: int) -> int:
    """The lowbit group size: every lowbit group must lie inside one annotation group."""
    g = _group_len(quant, k)
    ok = [G for G in Q4_GROUPS if g >= k or g % G == 0]
    if not ok:
        raise _NoExactEncoding(f"group size {g} is not a multiple of 32 (the 4-bit encodings use groups of 32, 64, 128)")
    # the least padded K (codes), then the fewest groups (scales)
    return min(ok, key=lambda G: (-(-k // G) * G, -G))


def _check_exact(spec: WeightSpec, values_kn: np.ndarray) -> None:
    want = spec.matrix.T
    if not np.array_equal(values_kn, want):
        bad = np.argwhere(values_kn != want)[0]
        raise _NoExactEncoding(f"its codes and scales do not reproduce the weight exactly (row {bad[1]}, column "
                               f"{bad[0]}: {want[bad[0], bad[1]]!r} vs {values_kn[bad[0], bad[1]]!r}); "
                               "re-quantize it with this lowbit")


def _plan_q4(spec: WeightSpec, kind: str, G: int) -> _Plan:
    n, k = spec.matrix.shape
    kg = -(-k // G) * G
    ng = kg // G
    starts = np.arange(ng) * G
    s32 = np.ascontiguousarray(_column_scale(spec, spec.scale, starts).T, dtype=np.float32)   # [NG, N]
    s16 = s32.astype(np.float16)
    if not np.array_equal(s16.astype(np.float32), s32):
        raise _NoExactEncoding("its scales are not f16 values (the 4-bit encodings store f16 scales)")
    codes = np.asarray(spec.codes).astype(np.int32).T                                         # [K, N]
    group_of = np.arange(k) // G
    zeros = None
    table = None
    if kind == "sym":
        if codes.size and (codes.min() < -8 or codes.max() > 7):
            raise _NoExactEncoding(f"codes outside [-8, 7] ({codes.min()}..{codes.max()})")
        u = codes + 8
        zero_code = np.full((k, n), 8, np.int32)
        vals = (u - 8).astype(np.float32) * s16.astype(np.float32)[group_of]
    elif kind == "asym":
        if spec.zero is None:
            raise _NoExactEncoding("an asymmetric annotation without zero points")
        z = np.ascontiguousarray(_column_scale(spec, spec.zero, starts).T).astype(np.int32)      # [NG, N]
        if codes.size and (codes.min() < 0 or codes.max() > 15) or z.size and (z.min() < 0 or z.max() > 15):
            raise _NoExactEncoding("codes or zero points outside [0, 15]")
        u = codes
        zeros = z.astype(np.uint8)
        zero_code = z[group_of]
        vals = (u - zero_code).astype(np.float32) * s16.astype(np.float32)[group_of]
    else:
        cb = np.asarray(spec.codebook, dtype=np.float32).reshape(-1) if spec.codebook is not None else None
        if cb is None or cb.size > 16 or not np.array_equal(cb, np.round(cb)) or np.abs(cb).max(initial=0) > 127:
            raise _NoExactEncoding("its codebook is not on the s8 table grid (integers in [-127, 127], at most 16)")
        table = np.zeros(16, np.int8)
        table[:cb.size] = cb.astype(np.int8)
        if codes.size and (codes.min() < 0 or codes.max() >= cb.size):
            raise _NoExactEncoding("codes outside the codebook")
        u = codes
        zi = np.flatnonzero(table == 0)
        zero_code = np.full((k, n), zi[0] if zi.size else -1, np.int32)
        vals = table.astype(np.float32)[u] * s16.astype(np.float32)[group_of]
    # masked (pruned) weights are exact zeros: store the code whose value is 0 there
    want = spec.matrix.T
    fix = (want == 0) & (vals != 0)
    if fix.any():
        if (zero_code[fix] < 0).any():
            raise _NoExactEncoding("pruned weights need a zero entry in the codebook")
        u = np.where(fix, zero_code, u)
        vals = np.where(fix, np.float32(0), vals)
    _check_exact(spec, vals)
    u8 = np.ascontiguousarray(u, dtype=np.uint8)
    bits16 = np.ascontiguousarray(s16).view(np.uint16)
    enc = f"q4-g{G}-{kind}-n16k8" if kind != "table" else f"q4t-g{G}-n16k8"
    return _Plan(enc, lambda: _core.pack_q4(u8, bits16, zeros, table, kind, G))


def _plan_qs8(spec: WeightSpec) -> _Plan:
    n, k = spec.matrix.shape
    cols = np.zeros(1, np.int64)
    s = np.ascontiguousarray(_column_scale(spec, spec.scale, cols)[:, 0], dtype=np.float32)      # [N]
    c = np.asarray(spec.codes).astype(np.int32)
    if spec.zero is not None:
        c = c - _column_scale(spec, spec.zero, cols).astype(np.int32)
    if c.size and (c.min() < -127 or c.max() > 127):
        raise _NoExactEncoding("int8 codes outside [-127, 127] (the int8 kernels reject -128)")
    wq = np.ascontiguousarray(c.T, dtype=np.int8)                                              # [K, N]
    vals = wq.astype(np.float32) * s[None, :]
    want = spec.matrix.T
    fix = (want == 0) & (vals != 0)
    if fix.any():  # pruned weights: code 0
        wq = np.where(fix, np.int8(0), wq)
        vals = np.where(fix, np.float32(0), vals)
    _check_exact(spec, vals)
    return _Plan(int8_encoding(wq), lambda: _core.pack_qs8(wq, s))


# ---- the pass ------------------------------------------------------------------------

def encode_compressed_weights(specs: list[WeightSpec], notes: list[str] | None = None) -> Callable[[Graph], Graph]:
    """Returns the pass that gives every Dense / Conv weight holding the values of a
    compressed layer (``specs``) the encoding ``encode_weight`` picks. Runs after the
    rewrites (so BatchNorm folding and the NHWC layout are done) and before the f32
    packers. Appends to ``notes`` why a compressed layer stayed f32 or was not found."""
    by_key: dict[tuple, list[WeightSpec]] = {}
    for s in specs:
        by_key.setdefault(s.key(), []).append(s)
    notes = notes if notes is not None else []

    def encode_compressed_weights(graph: Graph) -> Graph:
        found: set[str] = set()
        for node in graph.nodes:
            if node.op not in ("Dense", "Conv") or len(node.inputs) < 2:
                continue
            t = graph.tensors.get(node.inputs[1])
            if t is None or t.encoding != "raw" or t.dtype != "float32":
                continue
            w = t.array()
            if node.op == "Dense":
                if w.ndim != 2:
                    continue
                matrix = w.T
            else:
                matrix = w.reshape(w.shape[0], -1)
            cands = by_key.get(_key(matrix), [])
            # equal digests: confirm the values (and prefer a quantized annotation over a plain one)
            cands = sorted((c for c in cands if np.array_equal(c.matrix, matrix)), key=lambda c: c.quant is None)
            if not cands:
                continue
            spec = cands[0]
            found.update(c.layer for c in cands)
            enc = encode_weight(node.op, spec)
            if enc.note:
                notes.append(enc.note)
            if enc.data is None:
                t.meta.update(enc.meta)
            else:
                graph.tensors[t.name] = Tensor(t.name, enc.data, "float32", tuple(w.shape), enc.encoding, enc.meta)
        for s in specs:
            if s.layer not in found and (s.quant is not None or s.mask is not None):
                notes.append(f"{s.layer}: no graph weight holds its values (folded into another constant, e.g. a "
                             "BatchNorm); converted from the folded values")
        return graph

    return encode_compressed_weights


# ---- reading an encoding back (the inverse of the packers; for checks and tools) -------------

def _f16(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.float16).astype(np.float32)


def _sections(raw: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Byte ranges after the 64-byte header, each starting on a 64-byte boundary."""
    out, off = [], 64
    for size in sizes:
        out.append(raw[off:off + size])
        off += -(-size // 64) * 64
    return out


def _decode_sparse(encoding: str, k: int, n: int, raw: np.ndarray) -> np.ndarray:
    """The sparse encodings of docs/format.md ("Sparse encodings") back to [K, N]."""
    w = np.zeros((k, n), np.float32)
    if encoding == "qs8-csr-k16":
        hk, hn, cells = (int(v) for v in raw[8:32].view(np.uint64))
        if (hk, hn) != (k, n):
            raise ValueError(f"{encoding}: header says {hk}x{hn}, tensor is {k}x{n}")
        g = -(-n // 8)
        group, scale, chunk, shuf, val = _sections(raw, [4 * (g + 1), 32 * g, 2 * cells, 32 * cells, 32 * cells])
        group, scale, chunk = group.view(np.uint32), scale.view(np.float32), chunk.view(np.uint16)
        val = val.view(np.int8)
        for gi in range(g):
            for c in range(int(group[gi]), int(group[gi + 1])):
                for j in range(8):
                    col = 8 * gi + j
                    for slot in range(4):
                        pos = int(shuf[32 * c + 4 * j + slot])
                        if pos != 0x80 and col < n:
                            w[16 * int(chunk[c]) + pos, col] += float(val[32 * c + 4 * j + slot]) * scale[col]
        return w
    bk, vbytes, has_scale = (int(v) for v in raw[4:16].view(np.uint32))
    hk, hn, steps = (int(v) for v in raw[16:40].view(np.uint64))
    if (hk, hn) != (k, n):
        raise ValueError(f"{encoding}: header says {hk}x{hn}, tensor is {k}x{n}")
    sl = -(-n // 8)
    sizes = [4 * (sl + 1), 32 * sl] + ([32 * sl] if has_scale else []) + [16 * steps, 8 * steps * bk * vbytes]
    secs = _sections(raw, sizes)
    slices, perm = secs[0].view(np.uint32), secs[1].view(np.uint32)
    scale = secs[2].view(np.float32) if has_scale else np.ones(8 * sl, np.float32)
    idx = secs[-2].view(np.uint16)
    val = (secs[-1].view(np.float32) if vbytes == 4 else secs[-1].view(np.int8).astype(np.float32))
    for si in range(sl):
        for t in range(int(slices[si]), int(slices[si + 1])):
            for j in range(8):
                lane = 8 * si + j
                col = int(perm[lane])
                if col == 0xFFFFFFFF:
                    continue
                for b in range(bk):
                    v = val[(8 * t + j) * bk + b]
                    if v != 0:
                        w[int(idx[8 * t + j]) * bk + b, col] = v * scale[lane]
    return w


def decode_weight(encoding: str, shape: tuple, data: Any) -> np.ndarray:
    """The float32 matrix [K, N] a Dense weight computes with, decoded from its stored
    bytes ``data`` per docs/format.md (``raw``, ``f32-n16``, ``qs8-n16k4``, ``q4-*``,
    ``q4t-*``, and the sparse ``f32-csr-s8``, ``qs8-bsr1x4-s8``, ``qs8-csr-k16``): the inverse of the packers, written from the spec, for checks and tools."""
    if len(shape) != 2:
        raise ValueError(f"decode_weight reads [K, N] matrices, got shape {tuple(shape)}")
    k, n = (int(d) for d in shape)
    raw = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else \
        np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    p = -(-n // 16)
    if encoding == "raw":
        return raw[:k * n * 4].view(np.float32).reshape(k, n).copy()
    if encoding == "f32-n16":
        w = raw[:p * k * 64].view(np.float32).reshape(p, k, 16).transpose(1, 0, 2).reshape(k, p * 16)
        return np.ascontiguousarray(w[:, :n])
    if encoding in ("qs8-n16k4", "qs7-n16k4"):
        kp = -(-k // 4) * 4
        wq = raw[:p * kp * 16].view(np.int8).reshape(p, kp // 4, 16, 4)    # [p, k/4, j, k%4]
        wq = wq.transpose(1, 3, 0, 2).reshape(kp, p * 16)[:k, :n]
        s = raw[p * kp * 16:p * kp * 16 + p * 64].view(np.float32)[:n]
        return wq.astype(np.float32) * s[None, :]
    if encoding in ("f32-csr-s8", "qs8-bsr1x4-s8", "qs8-csr-k16"):
        return _decode_sparse(encoding, k, n, raw)
    for prefix in ("q4t-g", "q4-g"):
        if encoding.startswith(prefix):
            parts = encoding[len(prefix):].split("-")
            g = int(parts[0])
            table = prefix == "q4t-g"
            asym = not table and parts[1] == "asym"
            break
    else:
        raise ValueError(f"decode_weight: unknown encoding {encoding}")
    kg = -(-k // g) * g
    ng = kg // g
    off = 64 if table else 0
    tab = raw[:16].view(np.int8).astype(np.float32) if table else None
    cb = raw[off:off + p * kg * 8].reshape(p, kg // 8, 16, 4)             # [p, c, j, i]
    lo, hi = cb & 0x0F, cb >> 4
    u = np.concatenate([lo, hi], axis=3)                                  # [p, c, j, 8]: k = 8c + (0..3 | 4..7)
    u = u.transpose(1, 3, 0, 2).reshape(kg, p * 16)[:k, :n].astype(np.int32)
    o = off + p * kg * 8
    s = _f16(raw[o:o + p * ng * 32].view(np.uint16)).reshape(p, ng, 16).transpose(1, 0, 2).reshape(ng, p * 16)[:, :n]
    gi = np.arange(k) // g
    if tab is not None:
        return tab[u] * s[gi]
    if asym:
        o += p * ng * 32
        z = raw[o:o + p * ng * 16].reshape(p, ng, 16).transpose(1, 0, 2).reshape(ng, p * 16)[:, :n].astype(np.int32)
    else:
        z = np.full((ng, n), 8, np.int32)
    return (u - z[gi]).astype(np.float32) * s[gi]
