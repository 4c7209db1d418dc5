"""The sparse matmul kernels (docs/kernels.md "Sparse and low-rank"): fp32
unstructured ("f32-csr-s8", SELL-8), int8 unstructured ("qs8-csr-k16", 4-bit
chunk indices) and int8 1x4 blocks along K ("qs8-bsr1x4-s8", SELL-8).

The scalar reference is checked against numpy (int8 exactly, given the same
quantized activations; fp32 within 1e-5 relative to the row's magnitude, since
the reference's per-lane FMA chain is one valid summation order), and every ISA
this machine has must reproduce the scalar reference bit for bit — for fp32 too:
every ISA runs the same FMA chain per lane. Results do not depend on the thread
count either."""

import numpy as np
import pytest

from lowbit import _core

from conftest import ISAS


def quantize_np(x, Kp):
    """The activation quantizer's definition (qs8_quant.h), in numpy."""
    x = np.asarray(x, np.float32)
    amax = np.abs(x).max(axis=1).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, 0).astype(np.float32)
    v = np.clip((x * inv[:, None]).astype(np.float32), -127, 127)
    q = np.zeros((x.shape[0], Kp), np.int8)
    q[:, :x.shape[1]] = np.rint(v).astype(np.int8)
    return q, (amax / np.float32(127)).astype(np.float32)


def act_np(y, act):
    return np.where(np.float32(0) > y, np.float32(0), y) if act == 1 else y

SIMD = [i for i in ISAS if i != "scalar"]
MS = list(range(1, 11)) + [15, 16, 17, 31, 32, 33, 63, 64, 65, 128]
KNS = [(1, 1), (5, 17), (37, 33), (100, 47), (129, 70)]
ENCS = ["f32-csr-s8", "qs8-csr-k16", "qs8-bsr1x4-s8"]


def pattern(rng, K, N, kind, density):
    """A mask [K, N] of nonzeros: random, 1x4 blocks along K, empty/full columns, one nonzero."""
    if kind == "random":
        return rng.random((K, N)) < density
    if kind == "block":
        nb = (K + 3) // 4
        blocks = rng.random((nb, N)) < density
        return np.repeat(blocks, 4, axis=0)[:K]
    if kind == "rows":  # some output columns empty, some full, the rest random
        m = rng.random((K, N)) < density
        m[:, ::3] = False
        m[:, 1::5] = True
        return m
    if kind == "single":
        m = np.zeros((K, N), bool)
        m[rng.integers(K), rng.integers(N)] = True
        return m
    raise ValueError(kind)


def make_weights(rng, K, N, enc, kind="random", density=0.1):
    mask = pattern(rng, K, N, kind, density)
    if enc == "f32-csr-s8":
        w = (rng.standard_normal((K, N)) * mask).astype(np.float32)
        return w, None, None, _core.pack_sell_f32(w)
    q = rng.integers(-127, 128, (K, N)).astype(np.int8) * mask.astype(np.int8)
    q[0, 0] = 127 if mask[0, 0] else 0            # extremes: |127| x 127 pairs must not saturate
    if K > 1 and mask[1, 0]:
        q[1, 0] = -127
    s = (rng.random(N) + 0.5).astype(np.float32) / 127
    return q.astype(np.float32) * s, q, s, _core.pack_sell_s8(q, s, 4 if enc == "qs8-bsr1x4-s8" else 1)


def expected(enc, x, w, q, s, bias, act):
    if enc == "f32-csr-s8":
        y = x.astype(np.float64) @ w.astype(np.float64)
        if bias is not None:
            y = y + bias
        return act_np(y.astype(np.float32), act)
    K = x.shape[1]
    xq, xs = quantize_np(x, K)
    acc = xq.astype(np.int64) @ q.astype(np.int64)
    y = acc.astype(np.float32) * (xs[:, None] * s[None, :])
    if bias is not None:
        y = y + bias
    return act_np(y.astype(np.float32), act)


def check_ref(enc, y, want):
    if enc == "f32-csr-s8":
        tol = 1e-5 * (np.abs(want).max() + 1)
        np.testing.assert_allclose(y, want, atol=tol, rtol=1e-5)
    else:
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("enc", ENCS)
@pytest.mark.parametrize("K,N", KNS)
@pytest.mark.parametrize("kind,density", [("random", 0.1), ("random", 0.0), ("random", 1.0), ("block", 0.2),
                                          ("rows", 0.3), ("single", 0.0)])
def test_reference_and_isas_agree(enc, K, N, kind, density):
    rng = np.random.default_rng(K * 1000 + N)
    w, q, s, blob = make_weights(rng, K, N, enc, kind, density)
    bias = rng.standard_normal(N).astype(np.float32)
    for M in (1, 2, 3, 4, 5, 9, 17):
        x = rng.standard_normal((M, K)).astype(np.float32)
        for act in (0, 1):
            ref = _core.spdense("scalar", x, blob, enc, K, N, bias, act)
            check_ref(enc, ref, expected(enc, x, w, q, s, bias, act))
            for isa in SIMD:
                got = _core.spdense(isa, x, blob, enc, K, N, bias, act)
                np.testing.assert_array_equal(got, ref, err_msg=f"{isa} {enc} M={M} act={act}")


@pytest.mark.parametrize("enc", ENCS)
def test_every_batch_size(enc):
    """M over 1..10, 15-17, 31-33, 63-65, 128 (the bsr kernel switches to packed 8-row tiles at 2, 3 or
    4 rows depending on the table, and to 16-row ones above 8 rows on AVX-512)."""
    rng = np.random.default_rng(3)
    K, N = 75, 41
    w, q, s, blob = make_weights(rng, K, N, enc, "block" if "bsr" in enc else "random", 0.25)
    for M in MS:
        x = rng.standard_normal((M, K)).astype(np.float32)
        ref = _core.spdense("scalar", x, blob, enc, K, N, None, 0)
        check_ref(enc, ref, expected(enc, x, w, q, s, None, 0))
        for isa in SIMD:
            np.testing.assert_array_equal(_core.spdense(isa, x, blob, enc, K, N, None, 0), ref, err_msg=f"{isa} M={M}")


@pytest.mark.parametrize("enc", ENCS)
def test_gelu_and_threads(enc):
    """GELU runs on the finished rows; any thread count gives the same bits."""
    rng = np.random.default_rng(11)
    K, N = 300, 260
    w, q, s, blob = make_weights(rng, K, N, enc, "block" if "bsr" in enc else "random", 0.2)
    x = rng.standard_normal((40, K)).astype(np.float32)
    base = _core.spdense(ISAS[0], x, blob, enc, K, N, None, 2, False)
    lin = expected(enc, x, w, q, s, None, 0).astype(np.float64)
    from math import erf, sqrt
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / sqrt(2))))(lin)
    np.testing.assert_allclose(base, gelu, atol=1e-4 * (np.abs(gelu).max() + 1) if enc == "f32-csr-s8" else 1e-5,
                               rtol=1e-4)
    old = _core.get_num_threads()
    try:
        for t in (1, 2, 3):
            _core.set_num_threads(t)
            np.testing.assert_array_equal(_core.spdense(ISAS[0], x, blob, enc, K, N, None, 2, True), base)
    finally:
        _core.set_num_threads(old)


def test_extreme_int8_values_do_not_saturate():
    """|a| = |w| = 127 everywhere: every vpmaddubsw pair is 2 x 16129 and must stay exact."""
    K, N = 64, 24
    for enc, bk in (("qs8-csr-k16", 1), ("qs8-bsr1x4-s8", 4)):
        q = np.full((K, N), 127, np.int8)
        q[:, ::2] = -127
        s = np.full(N, 1.0, np.float32)
        blob = _core.pack_sell_s8(q, s, bk)
        x = np.where(np.arange(K) % 3 == 0, 1.0, -1.0).astype(np.float32)[None, :].repeat(5, 0)
        want = expected(enc, x, None, q, s, None, 0)
        for isa in ISAS:
            np.testing.assert_array_equal(_core.spdense(isa, x, blob, enc, K, N), want, err_msg=isa)


def test_entry_counts():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 16)).astype(np.float32)
    w[rng.random(w.shape) < 0.75] = 0
    info = _core.sell_info(_core.pack_sell_f32(w), "f32-csr-s8", 64, 16)
    assert info["nnz"] == np.count_nonzero(w)
    assert info["slices"] == 2
    # columns sorted by entry count: each slice pads only to its longest column
    counts = np.sort(np.count_nonzero(w, axis=0))[::-1]
    assert info["steps"] == counts[0] + counts[8]
    q = (rng.integers(-127, 128, (64, 16)) * (rng.random((64, 16)) < 0.2)).astype(np.int8)
    k16 = _core.sell_info(_core.pack_sell_s8(q, np.ones(16, np.float32), 1), "qs8-csr-k16", 64, 16)
    assert k16["nnz"] == np.count_nonzero(q)


@pytest.mark.slow
@pytest.mark.parametrize("enc", ENCS)
def test_large_sweep(enc):
    rng = np.random.default_rng(99)
    for K, N in ((1024, 513), (4099, 130), (333, 1000)):
        for density in (0.02, 0.1, 0.5):
            w, q, s, blob = make_weights(rng, K, N, enc, "block" if "bsr" in enc else "random", density)
            for M in (1, 7, 16, 33, 128):
                x = rng.standard_normal((M, K)).astype(np.float32)
                ref = _core.spdense("scalar", x, blob, enc, K, N, None, 1)
                check_ref(enc, ref, expected(enc, x, w, q, s, None, 1))
                for isa in SIMD:
                    np.testing.assert_array_equal(_core.spdense(isa, x, blob, enc, K, N, None, 1), ref)


def test_bsr_columns_outside_their_window():
    """The packer keeps each lane's column in the lane's window of 256 (sorting by entry count
    within windows), and the AVX-512 batched path then moves each window's staged results to
    the output as soon as it is done. A blob from elsewhere may permute columns freely: swapping
    two lanes' columns across windows must swap those two output columns, on every ISA, at any
    batch size and thread count (that blob takes the path that moves results after all slices)."""
    rng = np.random.default_rng(21)
    K, N = 64, 600
    S = (N + 7) // 8
    enc = "qs8-bsr1x4-s8"
    w, q, s, blob = make_weights(rng, K, N, enc, "block", 0.3)
    perm_at = 64 + (4 * (S + 1) + 63) // 64 * 64
    perm = np.frombuffer(blob, np.uint32, S * 8, perm_at).copy()
    assert all(perm[i] // 256 == i // 256 for i in range(N)), "the packer's windows"
    a, b = 3, 300  # lanes in windows 0 and 1
    ca, cb = int(perm[a]), int(perm[b])
    moved = np.array(blob, copy=True)
    p2 = perm.copy()
    p2[a], p2[b] = cb, ca
    moved[perm_at:perm_at + 4 * S * 8] = np.frombuffer(p2.tobytes(), np.uint8)
    old = _core.get_num_threads()
    try:
        for M in (1, 5, 9, 16, 33):
            x = rng.standard_normal((M, K)).astype(np.float32)
            want = _core.spdense("scalar", x, blob, enc, K, N, None, 0)
            want[:, [ca, cb]] = want[:, [cb, ca]]
            for isa in ISAS:
                for t in (1, 2):
                    _core.set_num_threads(t)
                    got = _core.spdense(isa, x, moved, enc, K, N, None, 0, True)
                    np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M} threads={t}")
    finally:
        _core.set_num_threads(old)


# The T16 form of 1x4-block weights (kernels/sparse/t16.h): the tables that have its kernel, forced at
# any M with path="t16" (the scalar table keeps the reference there; models take it only on `amx`,
# from 9 rows). Every one must give the SELL-8 reference's bits.
T16_ISAS = [i for i in ISAS if i in ("scalar", "amx")]
T16_SHAPES = [(1, 1), (4, 16), (63, 17), (64, 15), (65, 33), (200, 70), (1000, 48)]


def _sell_sections(blob, K, N, T):
    """Byte offsets of a SELL-8 blob's sections (kernels/sparse/sell.h): slice, perm, scale, idx, val."""
    S = (N + 7) // 8
    up = lambda v: (v + 63) // 64 * 64  # noqa: E731
    slice_at = 64
    perm_at = slice_at + up(4 * (S + 1))
    scale_at = perm_at + up(4 * 8 * S)
    idx_at = scale_at + up(4 * 8 * S)
    val_at = idx_at + up(2 * 8 * T)
    return S, perm_at, idx_at, val_at


@pytest.mark.parametrize("K,N", T16_SHAPES)
@pytest.mark.parametrize("kind,density", [("block", 0.2), ("block", 1.0), ("random", 0.1), ("rows", 0.3),
                                          ("single", 0.0), ("random", 0.0)])
def test_t16_matches_the_reference(K, N, kind, density):
    """K chunks of 64 with tails, groups of 16 columns with tails, M over whole and partial 16-row
    tiles and blocks of 32 rows, bias and ReLU, 1 and 2 threads."""
    rng = np.random.default_rng(K * 7 + N)
    enc = "qs8-bsr1x4-s8"
    w, q, s, blob = make_weights(rng, K, N, enc, kind, density)
    bias = rng.standard_normal(N).astype(np.float32)
    old = _core.get_num_threads()
    try:
        for M in (1, 2, 8, 9, 15, 16, 17, 31, 32, 33, 48, 63, 65, 128):
            x = rng.standard_normal((M, K)).astype(np.float32)
            for act in (0, 1):
                ref = _core.spdense("scalar", x, blob, enc, K, N, bias, act)
                check_ref(enc, ref, expected(enc, x, w, q, s, bias, act))
                for isa in T16_ISAS:
                    for t in (1, 2):
                        _core.set_num_threads(t)
                        got = _core.spdense(isa, x, blob, enc, K, N, bias, act, True, "t16")
                        np.testing.assert_array_equal(got, ref, err_msg=f"{isa} t16 M={M} act={act} threads={t}")
    finally:
        _core.set_num_threads(old)


def test_t16_integer_sums_wrap_exactly():
    """K = 70000 with every weight and activation at +-127: the biased tile sums, 255 * 127 per pair,
    pass 2^31 and wrap; less 128 * the column sum (also modulo 2^32) they are exact."""
    rng = np.random.default_rng(5)
    K, N = 70000, 20
    q = np.full((K, N), 127, np.int8)
    q[:, 3] = -127
    q[::2, 7] = -127
    s = np.full(N, 1 / 127, np.float32)
    blob = _core.pack_sell_s8(q, s, 4)
    x = np.ones((17, K), np.float32)
    x[1] = -1
    x[2, ::3] = -1
    x[3] = rng.standard_normal(K)
    ref = _core.spdense("scalar", x, blob, "qs8-bsr1x4-s8", K, N)
    check_ref("qs8-bsr1x4-s8", ref, expected("qs8-bsr1x4-s8", x, q.astype(np.float32) * s, q, s, None, 0))
    assert ref[0, 0] == np.float32(K * 127 * 127 / 127 / 127) and abs(ref[0, 0]) > 0
    for isa in T16_ISAS:
        np.testing.assert_array_equal(_core.spdense(isa, x, blob, "qs8-bsr1x4-s8", K, N, path="t16"), ref, err_msg=isa)


def test_t16_refuses_a_blob_with_a_block_stored_twice():
    """SELL-8 lets a lane store one block index twice (their products add); the T16 form holds one
    block per (column, quad), so such a blob keeps SELL-8 on every path, with the same result."""
    rng = np.random.default_rng(8)
    K, N, enc = 64, 8, "qs8-bsr1x4-s8"
    q = np.zeros((K, N), np.int8)
    q[0:8, 0] = rng.integers(1, 100, 8)  # column 0: blocks 0 and 1
    q[:, 1:] = rng.integers(-127, 128, (K, N - 1))
    s = np.full(N, 0.01, np.float32)
    blob = np.array(_core.pack_sell_s8(q, s, 4), copy=True)
    T = _core.sell_info(blob, enc, K, N)["steps"]
    S, perm_at, idx_at, val_at = _sell_sections(blob, K, N, T)
    perm = np.frombuffer(blob, np.uint32, 8 * S, perm_at)
    lane = int(np.nonzero(perm == 0)[0][0])
    idx = np.frombuffer(blob, np.uint16, 8 * T, idx_at).copy()
    assert idx[lane] == 0 and idx[8 + lane] == 1
    idx[8 + lane] = 0  # column 0's second block now also at quad 0
    blob[idx_at:idx_at + 2 * 8 * T] = np.frombuffer(idx.tobytes(), np.uint8)
    q2 = q.astype(np.int64)
    q2[0:4, 0] += q2[4:8, 0]
    q2[4:8, 0] = 0
    x = rng.standard_normal((16, K)).astype(np.float32)
    xq, xs = quantize_np(x, K)
    want = ((xq.astype(np.int64) @ q2).astype(np.float32) * (xs[:, None] * s[None, :])).astype(np.float32)
    ref = _core.spdense("scalar", x, blob, enc, K, N)
    np.testing.assert_array_equal(ref, want)
    for isa in T16_ISAS:
        with pytest.raises(ValueError, match="no T16 form"):
            _core.spdense(isa, x, blob, enc, K, N, path="t16")
    for isa in ISAS:
        np.testing.assert_array_equal(_core.spdense(isa, x, blob, enc, K, N), ref, err_msg=isa)
