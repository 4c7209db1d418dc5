"""The quantized Dense's activation modes beyond the plain per-row quantizer:

- the outlier split (qs8_quant_split + the float part added after the integer GEMM):
  the reference against a numpy version of its definition, every ISA against the
  reference bit for bit, thread counts bit for bit;
- static activation scales with a zero point (imported QDQ models): codes in
  [-128, 127] (ONNX QuantizeLinear), the zero point's term moved into the bias;
  every int8 GEMM must be exact for the activation code -128;
- the output grid (a QuantizeLinear -> DequantizeLinear pair after the layer).
"""

import numpy as np
import pytest

from lowbit import _core

from conftest import ISAS
from kernels.test_qgemm import ENC, MS, SIMD, q4_problem, quantize_np

KS = [1, 7, 16, 33, 100, 257, 1000]  # 1000: every set of lanes of the 4 x 16-lane AVX-512 split, and a tail


def split_np(x, n):
    """qs8_quant_split's choice of outliers, in numpy: n times, the largest |x| not taken
    yet (NaN never, zeros never, ties to the lower index)."""
    idx = np.full((x.shape[0], n), -1, np.int32)
    val = np.zeros((x.shape[0], n), np.float32)
    for r, row in enumerate(np.abs(x)):
        a = np.where(np.isnan(row), -1.0, row)
        for j in range(n):
            k = int(np.argmax(a))  # argmax takes the first of equal maxima
            if not a[k] > 0:
                break
            idx[r, j], val[r, j] = k, x[r, k]
            a[k] = -1.0
    return idx, val


def without(x, idx):
    """x with the chosen outliers set to 0 (the integer part of the split sees this row)."""
    y = x.copy()
    for r in range(x.shape[0]):
        for k in idx[r]:
            if k >= 0:
                y[r, k] = 0
    return y


def split_rows(seed, M, K):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[0, rng.integers(0, K)] = 40.0                    # one outlier
    if M > 1:
        x[1] = 0                                       # all zero: no outliers, scale 0
    if M > 2:
        x[2, : max(1, K // 2)] = -3.0                  # ties: the lowest indices win
    if M > 3:
        x[3, rng.integers(0, K)] = np.nan               # never chosen; -127 as before
    if M > 4 and K > 2:
        x[4, :] = 0
        x[4, 1] = 2.0                                  # fewer nonzero values than outliers
    if M > 5:
        x[5, rng.integers(0, K)] = np.inf               # inf is the largest
    return x


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_split_quantizer_matches_definition_and_isas(K, n):
    x = split_rows(K * 10 + n, 7, K)
    Kp = (K + 31) // 32 * 32
    q, s, g, idx, val = _core.qs8_quant_split("scalar", x, Kp, 32, False, n)
    want_idx, want_val = split_np(x, n)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(val, want_val)
    # the integer part: exactly the plain quantizer on the row without its outliers
    q0, s0, g0 = _core.qs8_quant("scalar", without(x, idx), Kp, 32, False)
    np.testing.assert_array_equal(q, q0)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(g, g0)
    np.testing.assert_array_equal(quantize_np(without(x, idx), Kp)[0], q)
    for isa in SIMD:
        for bias in (False, True):
            got = _core.qs8_quant_split(isa, x, Kp, 32, bias, n)
            ref = _core.qs8_quant_split("scalar", x, Kp, 32, bias, n)
            for a, b, what in zip(got, ref, ("codes", "scales", "gsum", "idx", "val")):
                np.testing.assert_array_equal(a, b, err_msg=f"{isa} bias128={bias} {what}")


def test_split_zero_outliers_is_the_plain_quantizer():
    x = split_rows(1, 7, 100)
    for isa in ISAS:
        q, s, g, idx, val = _core.qs8_quant_split(isa, x, 128, 32, False, 0)
        for a, b in zip((q, s, g), _core.qs8_quant(isa, x, 128, 32, False)):
            np.testing.assert_array_equal(a, b)
        assert idx.shape == (7, 0)


def dequant_q4(codes, scales, zeros, table, kind, group):
    K = codes.shape[0]
    s = np.repeat(scales.astype(np.float32), group, axis=0)[:K]
    if kind == "table":
        v = table.astype(np.float32)[codes]
    else:
        z = 8 if kind == "sym" else np.repeat(zeros.astype(np.int64), group, axis=0)[:K]
        v = (codes.astype(np.int64) - z).astype(np.float32)
    return (v * s).astype(np.float32)


def fma32(a, b, c):
    """float32 fma, through float64 (exact product; the sum rounds twice only in rare cases)."""
    return (np.float64(a) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def split_dense_np(isa, x, W, enc, K, N, b, act, n, Wdeq):
    """The definition of Dense with the outlier split: the integer GEMM on the row without
    its outliers (bias in), then y = fma(val, W[idx, :], y) for j in order, then ReLU."""
    _, _, _, idx, val = _core.qs8_quant_split("scalar", x, (K + 127) // 128 * 128, 32, False, n)
    y = _core.qdense(isa, without(x, idx), W, enc, K, N, b, 0)
    for m in range(x.shape[0]):
        for j in range(n):
            if idx[m, j] >= 0:
                y[m] = fma32(val[m, j], Wdeq[idx[m, j]], y[m])
    if act == 1:
        y = np.where(np.float32(0) > y, np.float32(0), y)
    return y


def split_dense_check(got, want, what):
    """The reference against the float64-emulated fma chain (a rare double-rounding ulp)."""
    np.testing.assert_allclose(got, want, rtol=3e-7, atol=1e-30, err_msg=what)


def qs8_weights(seed, K, N):
    rng = np.random.default_rng(seed)
    Wq = rng.integers(-127, 128, size=(K, N)).astype(np.int8)
    sc = rng.uniform(0.001, 0.02, N).astype(np.float32)
    return Wq, sc, _core.pack_qs8(Wq, sc), (Wq.astype(np.float32) * sc).astype(np.float32)


@pytest.mark.parametrize("K,N", [(7, 5), (100, 47), (257, 70), (384, 1536)])
@pytest.mark.parametrize("n", [1, 2])
def test_qs8_split_dense_matches_definition_on_every_isa(K, N, n):
    Wq, sc, W, Wdeq = qs8_weights(K + N, K, N)
    b = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    for M in (1, 2, 3, 6, 9, 17, 32, 49):  # 17 and more: AMX tiles (32 x 32, 16 x 32) and leftover rows
        x = split_rows(M * K + n, M, K)
        x[~np.isfinite(x)] = 5.0  # inf/NaN rows make NaN outputs: compared elsewhere
        for act in (0, 1):
            ref = _core.qdense("scalar", x, W, "qs8-n16k4", K, N, b, act, outliers=n)
            split_dense_check(ref, split_dense_np("scalar", x, W, "qs8-n16k4", K, N, b, act, n, Wdeq), f"M={M}")
            for isa in SIMD:
                got = _core.qdense(isa, x, W, "qs8-n16k4", K, N, b, act, outliers=n)
                np.testing.assert_array_equal(got, ref, err_msg=f"{isa} M={M} act={act}")


@pytest.mark.parametrize("kind", ["sym", "asym", "table"])
@pytest.mark.parametrize("group", [32, 128])
def test_q4_split_dense_matches_definition_on_every_isa(kind, group):
    # M from 16 on runs the AMX group-wise kernel (the rows past a multiple of 16 through the
    # VNNI kernel), then qw_axpy; K = 4100 takes two of its K chunks
    for K, N in ((37, 33), (256, 64), (300, 40), (4100, 20)):
        for M in ((1, 4, 5, 13, 16, 17, 33) if K < 4096 else (17,)):
            x, codes, sc, z, t, b, W = q4_problem(M * 31 + K, M, K, N, kind, group)
            x[0, 3] = -25.0
            enc = ENC[kind].format(group)
            Wdeq = dequant_q4(codes, sc, z, t, kind, group)
            for act in (0, 1):
                # group-wise kernels only (one group per column is on the lattice, which AMX
                # would take from 16 rows: tests/kernels/test_qgemm.py covers that form)
                ref = _core.qdense("scalar", x, W, enc, K, N, b, act, outliers=2, lattice=False)
                split_dense_check(ref, split_dense_np("scalar", x, W, enc, K, N, b, act, 2, Wdeq), f"{enc} M={M}")
                for isa in SIMD:
                    got = _core.qdense(isa, x, W, enc, K, N, b, act, outliers=2, lattice=False)
                    np.testing.assert_array_equal(got, ref, err_msg=f"{isa} {enc} M={M} K={K} act={act}")


def test_split_gelu_within_ulps_and_many_distinct_outliers():
    """GELU after the float part (vector erf: a few ulp between ISAs); every row's outlier
    in another column."""
    K, N = 300, 90
    Wq, sc, W, Wdeq = qs8_weights(5, K, N)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((40, K)).astype(np.float32)
    x[np.arange(40), rng.permutation(K)[:40]] = 30.0  # 40 distinct outlier columns
    want = _core.qdense("scalar", x, W, "qs8-n16k4", K, N, None, 0, outliers=1)
    split_dense_check(want, split_dense_np("scalar", x, W, "qs8-n16k4", K, N, None, 0, 1, Wdeq), "")
    for isa in ISAS:
        np.testing.assert_array_equal(_core.qdense(isa, x, W, "qs8-n16k4", K, N, None, 0, outliers=1), want)
        got = _core.qdense(isa, x, W, "qs8-n16k4", K, N, None, 2, outliers=1)
        ref = (0.5 * want * (1 + np.vectorize(__import__("math").erf)(want / np.sqrt(2)))).astype(np.float32)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("enc", ["qs8-n16k4", "q4-g32-sym-n16k8", "q4-g64-asym-n16k8", "q4t-g128-n16k8"])
def test_qw_axpy_matches_definition_and_isas(enc):
    """The float part alone: y[n0:n1] = fma(v, W[k, n0:n1], y) for every k in a panel's
    4-/8-row groups, column ranges starting on any panel and ending anywhere."""
    K, N = 200, 70
    if enc.startswith("qs8"):
        Wq, sc, W, Wdeq = qs8_weights(7, K, N)
    else:
        kind = "table" if enc.startswith("q4t") else enc.split("-")[2]
        group = int(enc.split("-")[1][1:])
        x, codes, scq, z, t, b, W = q4_problem(3, 1, K, N, kind, group)
        Wdeq = dequant_q4(codes, scq, z, t, kind, group)
    rng = np.random.default_rng(1)
    for k in list(range(16)) + [63, 64, 127, 128, 199]:
        for n0, n1 in ((0, N), (16, 17), (32, 64), (48, 70), (0, 5)):
            y0 = rng.standard_normal(n1 - n0).astype(np.float32)
            v = np.float32(rng.standard_normal() * 10)
            ref = y0.copy()
            _core.qw_axpy("scalar", W, enc, K, N, k, float(v), n0, n1, ref)
            np.testing.assert_allclose(ref, fma32(v, Wdeq[k, n0:n1], y0), rtol=3e-7, atol=1e-30)
            for isa in SIMD:
                got = y0.copy()
                _core.qw_axpy(isa, W, enc, K, N, k, float(v), n0, n1, got)
                np.testing.assert_array_equal(got, ref, err_msg=f"{isa} k={k} n={n0}:{n1}")


def test_split_is_bit_identical_across_threads(threads):
    import lowbit
    K, N = 640, 300
    Wq, sc, W, _ = qs8_weights(3, K, N)
    rng = np.random.default_rng(4)
    for M in (1, 3, 64, 130):
        x = rng.standard_normal((M, K)).astype(np.float32)
        x[:, 17] *= 30
        lowbit.set_num_threads(1)
        base = _core.qdense(_core.selected_isa(), x, W, "qs8-n16k4", K, N, None, 1, False, outliers=2)
        for t in (2, 3):
            lowbit.set_num_threads(t)
            got = _core.qdense(_core.selected_isa(), x, W, "qs8-n16k4", K, N, None, 1, True, outliers=2)
            np.testing.assert_array_equal(got, base, err_msg=f"M={M} threads={t}")


def test_split_recovers_outlier_rows():
    """The point of it: one large value no longer coarsens the row's grid."""
    K, N = 384, 64
    Wq, sc, W, Wdeq = qs8_weights(11, K, N)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((32, K)).astype(np.float32)
    x[:, 99] = 40.0
    exact = x.astype(np.float64) @ Wdeq.astype(np.float64)
    err = {n: np.abs(_core.qdense("scalar", x, W, "qs8-n16k4", K, N, outliers=n) - exact).mean() for n in (0, 1)}
    assert err[1] < err[0] / 5, err


# ---- static activation scales and the output grid -----------------------------------------

def static_codes(x, s, zp):
    """ONNX QuantizeLinear to int8: saturate(rint(x / s) + zp)."""
    v = (x / np.float32(s)).astype(np.float32)
    return np.clip(np.rint(v) + zp, -128, 127).astype(np.int64)


def static_dense_np(x, Wq, sc, b, s, zp, act):
    """Definition: acc = sum_k q * Wq (q with its zero point), y = float(acc) * (s * w_scale)
    + (b - s * zp * w_scale * colsum) (that bias computed in double, rounded once), act."""
    q = static_codes(x, s, zp)
    acc = q @ Wq.astype(np.int64)
    colsum = Wq.astype(np.int64).sum(axis=0)
    bias = ((0 if b is None else b.astype(np.float64)) - np.float64(s) * zp * sc.astype(np.float64) * colsum)
    y = acc.astype(np.float32) * (np.float32(s) * sc).astype(np.float32)
    y = (y + bias.astype(np.float32)).astype(np.float32)
    return np.where(np.float32(0) > y, np.float32(0), y) if act == 1 else y


@pytest.mark.parametrize("zp", [-128, -3, 0, 77, 127])
def test_static_activations_match_definition_on_every_isa(zp):
    for K, N in ((7, 5), (100, 47), (257, 70)):
        Wq, sc, W, Wdeq = qs8_weights(K + zp + 128, K, N)
        rng = np.random.default_rng(K)
        s = np.float32(0.05)
        b = rng.standard_normal(N).astype(np.float32)
        for M in MS:
            x = (rng.standard_normal((M, K)) * 4).astype(np.float32)  # saturates at both ends
            for act in (0, 1):
                want = static_dense_np(x, Wq, sc, b, s, zp, act)
                for isa in ISAS:
                    got = _core.qdense(isa, x, W, "qs8-n16k4", K, N, b, act, x_grid=(float(s), zp))
                    np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M} zp={zp} act={act}")
        # and the meaning: (q - zp) * s times the dequantized weights, within float rounding
        x = (rng.standard_normal((9, K)) * 4).astype(np.float32)
        deq = ((static_codes(x, s, zp) - zp) * np.float64(s)) @ Wdeq.astype(np.float64) + b
        got = _core.qdense(ISAS[0], x, W, "qs8-n16k4", K, N, b, 0, x_grid=(float(s), zp))
        np.testing.assert_allclose(got, deq, rtol=1e-5, atol=1e-5 * np.abs(deq).max())


def test_every_int8_gemm_is_exact_for_activation_code_minus_128():
    """Static activations may reach -128 (u8 zero points, saturation): the int8 kernels
    take it exactly (AVX2: |-128| is 128 as u8, pairs stay within 2 * 128 * 127)."""
    K, N = 1024, 48
    Wq = np.random.default_rng(1).choice([-127, 127], size=(K, N)).astype(np.int8)
    sc = np.full(N, 1.0, np.float32)
    W = _core.pack_qs8(Wq, sc)
    for M in (1, 2, 5, 9):
        x = np.full((M, K), -1000.0, np.float32)  # every code -128 with s = 1, zp = 0
        want = (np.full((M, K), -128, np.int64) @ Wq.astype(np.int64)).astype(np.float32)
        for isa in ISAS:
            got = _core.qdense(isa, x, W, "qs8-n16k4", K, N, None, 0, x_grid=(1.0, 0))
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M}")


@pytest.mark.parametrize("y_zp", [-128, 0, 31])
def test_output_grid(y_zp):
    K, N = 100, 47
    Wq, sc, W, _ = qs8_weights(2, K, N)
    x = np.random.default_rng(3).standard_normal((9, K)).astype(np.float32)
    ys = np.float32(0.02)
    for isa in ISAS:
        plain = _core.qdense(isa, x, W, "qs8-n16k4", K, N, None, 1)
        got = _core.qdense(isa, x, W, "qs8-n16k4", K, N, None, 1, y_grid=(float(ys), y_zp))
        want = ((static_codes(plain, ys, y_zp) - y_zp).astype(np.float32) * ys).astype(np.float32)
        np.testing.assert_array_equal(got, want, err_msg=isa)


def test_bad_modes_are_rejected():
    Wq, sc, W, _ = qs8_weights(1, 16, 16)
    x = np.ones((1, 16), np.float32)
    with pytest.raises(ValueError):
        _core.qdense("scalar", x, W, "qs8-n16k4", 16, 16, outliers=9)
    with pytest.raises(ValueError):
        _core.qdense("scalar", x, W, "qs8-n16k4", 16, 16, x_grid=(0.0, 0))
    with pytest.raises(ValueError):
        _core.qdense("scalar", x, W, "qs8-n16k4", 16, 16, x_grid=(1.0, 128))
    with pytest.raises(ValueError):
        _core.qdense("scalar", x, W, "qs8-n16k4", 16, 16, outliers=1, x_grid=(1.0, 0))
