"""The integer kernels: the activation quantizer, the int8 GEMM (qs8) and the
4-bit GEMM (q4: int4 symmetric/asymmetric and table codes).

Each scalar reference is checked against an independent numpy implementation of
its definition (qs8_quant.h, qs8_gemm.h, q4_gemm.h), and every ISA this machine
has must reproduce the scalar reference bit for bit (integer sums are exact and
the float epilogue follows the same operation order)."""

import numpy as np
import pytest

from lowbit import _core
from lowbit.passes.quantize import NF4_LEVELS, nf4_table

from conftest import ISAS

MS = list(range(1, 11)) + [15, 16, 17, 31, 32, 33, 63, 64, 65, 128]
# K and N off the 4/8/16/32-multiples and off the groups
KNS = [(1, 1), (5, 17), (37, 33), (100, 47), (129, 70)]
SIMD = [i for i in ISAS if i != "scalar"]
# table: entries in [-64, 64] (convert's NF4 / k-means tables; the AVX2 shifted-table path);
# table127: the full s8 range (the sign-trick path)
Q4_KINDS = ["sym", "asym", "table", "table127"]
ENC = {"sym": "q4-g{}-sym-n16k8", "asym": "q4-g{}-asym-n16k8", "table": "q4t-g{}-n16k8", "table127": "q4t-g{}-n16k8"}


def _table(kind, extreme=False):
    if not kind.startswith("table"):
        return None
    peak = 64 if kind == "table" else 127
    if extreme:
        return np.array([peak, -peak] * 8, np.int8)
    return np.rint(NF4_LEVELS * peak).astype(np.int8)


def f16_bits(s):
    return np.asarray(s, np.float16).view(np.uint16)


def quantize_np(x, Kp):
    """The activation quantizer's definition, in numpy."""
    x = np.asarray(x, np.float32)
    absx = np.abs(x)
    amax = np.where(np.isnan(absx), 0, absx).max(axis=1).astype(np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, 0).astype(np.float32)
    v = (x * inv[:, None]).astype(np.float32)
    v = np.where(v > -127, v, -127).astype(np.float32)
    v = np.where(v < 127, v, 127)
    q = np.zeros((x.shape[0], Kp), np.int8)
    q[:, :x.shape[1]] = np.rint(v).astype(np.int8)
    return q, scale


def act_np(y, act):
    if act == 1:
        return np.where(np.float32(0) > y, np.float32(0), y)
    return y


# ---- activation quantizer ------------------------------------------------------------

@pytest.mark.parametrize("K", [1, 15, 16, 17, 64, 100, 257])
def test_quantizer_matches_definition_and_isas(K):
    rng = np.random.default_rng(K)
    x = (rng.standard_normal((7, K)) * rng.choice([1e-3, 1.0, 1e3], size=(7, 1))).astype(np.float32)
    x[3] = 0.0                        # all-zero row: scale 0, codes 0
    x[4, 0] = np.nan                  # NaN ignored by the max, maps to -127
    x[5] = np.float32(2.5) * np.sign(rng.standard_normal(K)).astype(np.float32)  # +-127 exactly
    Kp = (K + 31) // 32 * 32
    q0, s0, g0 = _core.qs8_quant("scalar", x, Kp, 32, False)
    qn, sn = quantize_np(x, Kp)
    np.testing.assert_array_equal(q0, qn)
    np.testing.assert_array_equal(s0, sn)
    assert q0.min() >= -127
    if K > 1:
        assert q0[5, :K].max() == 127 and q0[5, :K].min() == -127
    assert q0[4, 0] == -127
    # group sums over [32g, 32g+32) of the s8 codes
    ng = Kp // 32
    np.testing.assert_array_equal(g0, q0.astype(np.int32).reshape(7, ng, 32).sum(axis=2))
    # biased form: the same codes + 128 as bytes
    qb, sb, gb = _core.qs8_quant("scalar", x, Kp, 32, True)
    np.testing.assert_array_equal(qb.view(np.uint8), (q0.astype(np.int16) + 128).astype(np.uint8))
    np.testing.assert_array_equal(gb, g0)
    for isa in SIMD:
        for bias in (False, True):
            q, s, g = _core.qs8_quant(isa, x, Kp, 32, bias)
            r = _core.qs8_quant("scalar", x, Kp, 32, bias)
            np.testing.assert_array_equal(q, r[0], err_msg=isa)
            np.testing.assert_array_equal(s, r[1], err_msg=isa)
            np.testing.assert_array_equal(g, r[2], err_msg=isa)


# ---- int8 GEMM ---------------------------------------------------------------------------

def qs8_problem(seed, M, K, N, extreme=False):
    rng = np.random.default_rng(seed)
    if extreme:  # every weight and activation code at +-127: the maddubs saturation trap
        Wq = (127 * rng.choice([-1, 1], size=(K, N))).astype(np.int8)
        x = rng.choice([-1.0, 1.0], size=(M, K)).astype(np.float32)
    else:
        Wq = rng.integers(-127, 128, size=(K, N)).astype(np.int8)
        x = rng.standard_normal((M, K)).astype(np.float32)
    scales = rng.uniform(0.001, 0.02, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    return x, Wq, scales, bias


def qs8_np(x, Wq, scales, bias, act):
    K = Wq.shape[0]
    q, s = quantize_np(x, (K + 3) // 4 * 4)
    acc = q[:, :K].astype(np.int64) @ Wq.astype(np.int64)
    assert np.abs(acc).max() < 2 ** 31
    y = acc.astype(np.float32) * (s[:, None] * scales[None, :]).astype(np.float32)
    y = (y + bias).astype(np.float32)
    return act_np(y, act)


@pytest.mark.parametrize("K,N", KNS)
def test_qs8_reference_matches_numpy(K, N):
    for M in (1, 3, 17):
        for act in (0, 1):
            x, Wq, sc, b = qs8_problem(K * 1000 + N + M, M, K, N)
            got = _core.qdense("scalar", x, _core.pack_qs8(Wq, sc), "qs8-n16k4", K, N, b, act)
            np.testing.assert_array_equal(got, qs8_np(x, Wq, sc, b, act))


@pytest.mark.parametrize("isa", SIMD)
# 4100: several K blocks in the tiled paths; (1024, 300), (2100, 400): several column blocks and a tail (AVX2)
@pytest.mark.parametrize("K,N", KNS + [(256, 64), (1024, 40), (4100, 70), (1024, 300), (2100, 400)])
def test_qs8_isas_match_reference(isa, K, N):
    for M in MS:
        x, Wq, sc, b = qs8_problem(M * 7 + K, M, K, N, extreme=(M % 3 == 0))
        W = _core.pack_qs8(Wq, sc)
        for act in (0, 1, 2):
            want = _core.qdense("scalar", x, W, "qs8-n16k4", K, N, b, act)
            got = _core.qdense(isa, x, W, "qs8-n16k4", K, N, b, act)
            if act == 2:  # GELU's vector erf may differ from libm by a few ulp (as in the fp32 GEMM)
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{isa} M={M}")
            else:
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M} act={act}")


@pytest.mark.parametrize("isa", SIMD)
# The AMX tiles (32 x 32 over K blocks of 1024, runs of 128 rows, a VNNI tail of < 16 rows):
# several row runs with K blocked (partial sums kept between blocks), K tails of 4..60 and
# an exact multiple of 64, 16-column and 48-column widths (a lone last panel), row counts
# that leave a 16-row block and a tail. Other ISAs run the same problems through their tiles.
@pytest.mark.parametrize("M,K,N", [(300, 2500, 48), (144, 1100, 33), (16, 64, 16), (47, 1024, 100),
                                   (129, 3076, 17), (64, 60, 64)])
def test_qs8_large_tiles_match_reference(isa, M, K, N):
    for extreme in (False, True):
        x, Wq, sc, b = qs8_problem(M + K + N, M, K, N, extreme=extreme)
        W = _core.pack_qs8(Wq, sc)
        for act in (0, 1):
            want = _core.qdense("scalar", x, W, "qs8-n16k4", K, N, b, act)
            got = _core.qdense(isa, x, W, "qs8-n16k4", K, N, b, act)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M} K={K} N={N} act={act} extreme={extreme}")


def test_qs8_extreme_sum_is_exact():
    """K = 4096 codes of +127 x +127: 66 million, exact in int32 on every path."""
    K, N = 4096, 16
    Wq = np.full((K, N), 127, np.int8)
    sc = np.ones(N, np.float32)
    for M in (1, 9):  # the small-M path and the K-blocked tiles
        x = np.ones((M, K), np.float32)
        for isa in ISAS:
            y = _core.qdense(isa, x, _core.pack_qs8(Wq, sc), "qs8-n16k4", K, N)
            # acc = 127*127*4096, times a_scale = 1/127 (in float32)
            want = np.float32(127 * 127 * K) * (np.float32(1) / np.float32(127))
            np.testing.assert_array_equal(y, np.full((M, N), want, np.float32), err_msg=isa)


# ---- 7-bit int8 weights (qs7-n16k4): the u8 x s7 AVX2 kernel ------------------------------

def qs7_problem(seed, M, K, N, extreme=False):
    """Weights in [-64, 64]; extreme: every weight at +-64 and every activation code at
    +-127, the largest vpmaddubsw pairs of the biased path (255 * 64 * 2 = 32640)."""
    rng = np.random.default_rng(seed)
    if extreme:
        Wq = (64 * rng.choice([-1, 1], size=(K, N))).astype(np.int8)
        x = rng.choice([-1.0, 1.0], size=(M, K)).astype(np.float32)
    else:
        Wq = rng.integers(-64, 65, size=(K, N)).astype(np.int8)
        Wq[:, 0] = 64  # the range ends in every problem
        Wq[:, -1] = -64
        x = rng.standard_normal((M, K)).astype(np.float32)
        x[:, ::7] *= 10  # a few large values per row
    if N > 4:
        Wq[:, 3] = 0  # an all-zero column
    scales = rng.uniform(0.001, 0.02, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    return x, Wq, scales, bias


def test_qs7_kernel_names():
    names = _core.kernel_names("scalar")
    assert names["qs7-gemm"] == names["qs8-gemm"] == "qs8_gemm_1x16__scalar"
    if "avx2" in ISAS:
        assert _core.kernel_names("avx2")["qs7-gemm"] == "qs7_gemm_6x16c4__avx2"


@pytest.mark.parametrize("K,N", KNS)
def test_qs7_reference_matches_numpy(K, N):
    """qs7 files mean the qs8 definition: the scalar path equals the numpy one."""
    for M in (1, 3, 17):
        for act in (0, 1):
            x, Wq, sc, b = qs7_problem(K * 1000 + N + M, M, K, N)
            got = _core.qdense("scalar", x, _core.pack_qs8(Wq, sc), "qs7-n16k4", K, N, b, act)
            np.testing.assert_array_equal(got, qs8_np(x, Wq, sc, b, act))


@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("K,N", KNS + [(256, 64), (1024, 40), (4100, 70), (1024, 300), (2100, 400)])
def test_qs7_isas_match_reference(isa, K, N):
    for M in MS:
        x, Wq, sc, b = qs7_problem(M * 7 + K, M, K, N, extreme=(M % 3 == 0))
        W = _core.pack_qs8(Wq, sc)
        for act in (0, 1, 2):
            want = _core.qdense("scalar", x, W, "qs8-n16k4", K, N, b, act)
            got = _core.qdense(isa, x, W, "qs7-n16k4", K, N, b, act)
            if act == 2:
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{isa} M={M}")
            else:
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M} act={act}")


def test_qs7_extreme_sum_is_exact():
    """K = 8192 codes of 127 x 64 (and of -127 x 64): exact on every path, including the
    biased sums (255 * 64 * 8192 = 133.7 million) the AVX2 kernel corrects."""
    K, N = 8192, 24
    sc = np.ones(N, np.float32)
    for sign in (1, -1):
        Wq = np.full((K, N), 64, np.int8)
        for M in (1, 4, 9):
            x = np.full((M, K), float(sign), np.float32)
            want = np.float32(sign * 127 * 64 * K) * (np.float32(1) / np.float32(127))
            for isa in ISAS:
                y = _core.qdense(isa, x, _core.pack_qs8(Wq, sc), "qs7-n16k4", K, N)
                np.testing.assert_array_equal(y, np.full((M, N), want, np.float32), err_msg=f"{isa} M={M}")


# ---- 4-bit GEMM ----------------------------------------------------------------------------
# (the group-wise form: lattice=False, since weights that happen to be on the int8 lattice, such as
# one group per column or unit scales, take the lattice form in models from a table's row count on)

def q4_problem(seed, M, K, N, kind, group, extreme=False):
    rng = np.random.default_rng(seed)
    ng = (K + group - 1) // group
    codes = (np.full((K, N), 15) if extreme else rng.integers(0, 16, size=(K, N))).astype(np.uint8)
    scales = rng.uniform(0.01, 0.1, size=(ng, N)).astype(np.float16)
    scales[0, : N // 2] = 0  # zero-scale groups (all-zero weights) must not disturb anything
    zeros = rng.integers(0, 16, size=(ng, N)).astype(np.uint8) if kind == "asym" else None
    if kind == "asym" and extreme:
        zeros[:] = 0
    table = _table(kind, extreme)
    if extreme:
        x = rng.choice([-1.0, 1.0], size=(M, K)).astype(np.float32)
    else:
        x = rng.standard_normal((M, K)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    W = _core.pack_q4(codes, f16_bits(scales), zeros, table, kind[:5], group)
    return x, codes, scales, zeros, table, bias, W


def q4_np(x, codes, scales, zeros, table, bias, kind, group, act):
    K, N = codes.shape
    kg = (K + group - 1) // group * group
    ng = kg // group
    q, s = quantize_np(x, kg)
    if kind.startswith("table"):
        v = table.astype(np.int64)[codes]
    else:
        z = np.full((ng, N), 8) if kind == "sym" else zeros.astype(np.int64)
        v = codes.astype(np.int64) - np.repeat(z, group, axis=0)[:K]
    vp = np.zeros((kg, N), np.int64)
    vp[:K] = v
    d = np.einsum("mgk,gkn->mgn", q.astype(np.int64).reshape(-1, ng, group), vp.reshape(ng, group, N))
    f = np.zeros((x.shape[0], N), np.float64)
    for g in range(ng):  # the fma chain, in float64 then rounded to float32 each step
        f = (d[:, g, :].astype(np.float64) * scales[g].astype(np.float64) + f).astype(np.float32).astype(np.float64)
    y = (f.astype(np.float32) * s[:, None]).astype(np.float32)
    y = (y + bias).astype(np.float32)
    return act_np(y, act)


@pytest.mark.parametrize("kind", Q4_KINDS)
@pytest.mark.parametrize("group", [32, 64, 128])
def test_q4_reference_matches_numpy(kind, group):
    for K, N in KNS:
        for M in (1, 5):
            x, codes, sc, z, t, b, W = q4_problem(K + N + M, M, K, N, kind, group)
            got = _core.qdense("scalar", x, W, ENC[kind].format(group), K, N, b, 1)
            want = q4_np(x, codes, sc, z, t, b, kind, group, 1)
            # fma vs. float64 emulation: equal up to a rare double-rounding ulp
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("kind", Q4_KINDS)
@pytest.mark.parametrize("group", [32, 64, 128])
def test_q4_isas_match_reference(isa, kind, group):
    # (1000, 150): several K blocks and column blocks (with a tail) in the AVX2 tiled path, whose
    # codes are decoded once per block from 3 row tiles (13, 33 rows) and on the fly below that
    for K, N in KNS + [(256, 64), (1000, 40), (1000, 150)]:
        for M in MS if (K, N) in ((100, 47), (256, 64)) else (1, 2, 4, 5, 6, 7, 13, 33):
            x, codes, sc, z, t, b, W = q4_problem(M * 31 + K, M, K, N, kind, group, extreme=(M % 4 == 1))
            enc = ENC[kind].format(group)
            for act in (0, 1):
                want = _core.qdense("scalar", x, W, enc, K, N, b, act)
                got = _core.qdense(isa, x, W, enc, K, N, b, act, lattice=False)
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} {enc} M={M} K={K} N={N} act={act}")


@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("kind", Q4_KINDS)
@pytest.mark.parametrize("group", [32, 64, 128])
def test_q4_int16_accumulation_bounds(isa, kind, group):
    """The AVX2 kernels add up to 8 vpmaddubsw pair sums in int16 before widening, the
    symmetric ones starting from -8*gsum: drive those sums to their proved bounds (all codes
    +-127 with codes 0 or 15, per group, all signs) and require the reference's bits."""
    K, N = 1000, 150  # several K blocks and column blocks in the tiled path
    ng = (K + group - 1) // group
    rng = np.random.default_rng(group)
    enc = ENC[kind].format(group)
    for codes_at in (0, 15, None):  # None: 0 or 15 per (group, column)
        if codes_at is None:
            pick = rng.integers(0, 2, size=(ng, N)).astype(bool)
            codes = np.where(np.repeat(pick, group, axis=0)[:K], 15, 0).astype(np.uint8)
        else:
            codes = np.full((K, N), codes_at, np.uint8)
        zeros = rng.choice([0, 15], size=(ng, N)).astype(np.uint8) if kind == "asym" else None
        table = _table(kind, extreme=True)
        scales = np.ones((ng, N), np.float16)
        W = _core.pack_q4(codes, f16_bits(scales), zeros, table, kind[:5], group)
        for M in (1, 2, 3, 5, 7, 13, 20):
            x = np.ones((M, K), np.float32)
            x[1::2] = -1.0                                   # rows of +127 and of -127
            if M >= 5:
                x[4] = np.where(np.arange(K) % 4 < 2, 1.0, -1.0)  # opposite signs in the two int16 lanes
            want = _core.qdense("scalar", x, W, enc, K, N)
            got = _core.qdense(isa, x, W, enc, K, N, lattice=False)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} {enc} codes={codes_at} M={M}")
            np.testing.assert_allclose(want, q4_np(x, codes, scales, zeros, table, np.zeros(N, np.float32), kind, group, 0),
                                       rtol=2e-6)


@pytest.mark.parametrize("isa", SIMD)
def test_q4_gemv_long_rows(isa):
    """The one- and two-row symmetric 32-k paths take each row's slice sum starts from a buffer
    of up to 1024 (row, group) entries, computed once per call, and compute them in the tile
    beyond that: rows on both sides of the limit (512 and 1025 groups) give the reference's bits."""
    for K in (16384, 16416, 32800):
        for M in (1, 2):
            x, codes, sc, z, t, b, W = q4_problem(K + M, M, K, 24, "sym", 32, extreme=(M == 2))
            want = _core.qdense("scalar", x, W, "q4-g32-sym-n16k8", K, 24, b, 0)
            got = _core.qdense(isa, x, W, "q4-g32-sym-n16k8", K, 24, b, 0, lattice=False)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M} K={K}")


@pytest.mark.parametrize("isa", SIMD)
def test_q4_asym_decoded_rows(isa):
    """Asymmetric 32-k groups with 3+ row tiles: the AVX2 kernel decodes u + 15 - z and starts
    the int16 slice sums from the rows' activation sums, computed once per run of row tiles
    that fits its buffer (8192 row-groups: several runs at K = 4096+), or per column and K
    block when a run would be under 3 tiles (K = 16384+). Random codes, and both extremes of
    u - z (+15 and -15 everywhere) with activations at +-127: the reference's bits."""
    for M, K, N in ((128, 4100, 40), (64, 4096, 72), (20, 16384, 24), (40, 16416, 16), (13, 1000, 150)):
        ng = (K + 31) // 32
        x, codes, sc, z, t, b, W = q4_problem(M * K + N, M, K, N, "asym", 32)
        cases = [(x, W)]
        xs = np.random.default_rng(K).choice([-1.0, 1.0], size=(M, K)).astype(np.float32)
        for u, zp in ((15, 0), (0, 15)):
            cases.append((xs, _core.pack_q4(np.full((K, N), u, np.uint8), f16_bits(sc), np.full((ng, N), zp, np.uint8),
                                            None, "asym", 32)))
        for xi, Wi in cases:
            want = _core.qdense("scalar", xi, Wi, "q4-g32-asym-n16k8", K, N, b, 0)
            got = _core.qdense(isa, xi, Wi, "q4-g32-asym-n16k8", K, N, b, 0, lattice=False)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M} K={K} N={N}")


def test_q4_nibble_order_and_extremes():
    """One nonzero code at a time: output column n must see exactly that weight,
    which pins the nibble order (low nibble = k, high = k+4) and the panel layout."""
    K, N, group = 64, 20, 32
    ng = K // group
    for (k, n) in [(0, 0), (3, 1), (4, 2), (7, 15), (8, 16), (37, 19), (63, 5)]:
        codes = np.full((K, N), 8, np.uint8)  # symmetric zero
        codes[k, n] = 15                      # +7 at (k, n)
        scales = np.ones((ng, N), np.float16)
        W = _core.pack_q4(codes, f16_bits(scales), None, None, "sym", group)
        x = np.zeros((1, K), np.float32)
        x[0, k] = 1.0                         # code 127, scale 1/127
        for isa in ISAS:
            y = _core.qdense(isa, x, W, ENC["sym"].format(group), K, N)
            want = np.zeros((1, N), np.float32)
            want[0, n] = np.float32(7 * 127) * (np.float32(1) / np.float32(127))
            np.testing.assert_array_equal(y, want, err_msg=f"{isa} k={k} n={n}")


@pytest.mark.parametrize("enc,size", [("qs8-n16k4", None), ("qs7-n16k4", None), ("q4-g32-asym-n16k8", None), ("q4-g32-sym-n16k8", None),
                                      ("q4t-g32-n16k8", None), ("q4-g128-sym-n16k8", None)])
def test_threaded_is_bit_identical(enc, size, threads):
    import lowbit
    rng = np.random.default_rng(3)
    K, N = 640, 300
    if enc in ("qs8-n16k4", "qs7-n16k4"):
        lim = 65 if enc == "qs7-n16k4" else 128
        W = _core.pack_qs8(rng.integers(-lim + 1, lim, (K, N)).astype(np.int8), rng.uniform(0.01, 0.02, N).astype(np.float32))
    else:
        group = int(enc.split("-g")[1].split("-")[0])
        kind = "table" if enc.startswith("q4t") else ("asym" if "-asym-" in enc else "sym")
        W = _core.pack_q4(rng.integers(0, 16, (K, N)).astype(np.uint8), f16_bits(rng.uniform(0.01, 0.1, (K // group, N))),
                          rng.integers(0, 16, (K // group, N)).astype(np.uint8) if kind == "asym" else None,
                          nf4_table() if kind == "table" else None, kind, group)
    for M in (1, 3, 64, 130):
        x = rng.standard_normal((M, K)).astype(np.float32)
        base = _core.qdense(_core.selected_isa(), x, W, enc, K, N, None, 2, False)
        for t in (2, 3, 4):
            lowbit.set_num_threads(t)
            got = _core.qdense(_core.selected_isa(), x, W, enc, K, N, None, 2, True)
            np.testing.assert_array_equal(got, base, err_msg=f"M={M} threads={t}")


def test_pack_rejects_bad_codes():
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        _core.pack_qs8(np.full((4, 4), -128, np.int8), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        _core.pack_q4(np.full((32, 4), 16, np.uint8), f16_bits(np.ones((1, 4))), None, None, "sym", 32)
    with pytest.raises(ValueError, match="group"):
        _core.pack_q4(np.zeros((32, 4), np.uint8), f16_bits(np.ones((1, 4))), None, None, "sym", 48)


# ---- 4-bit weights on the int8 lattice (q4_gemm.h "Lattice form") ----------------------------

# the ISAs whose table runs the lattice form in models (and from how many rows: dispatch.cc)
LATTICE_ISAS = [i for i in ISAS if i == "scalar" or "q4-gemm-lattice" in _core.kernel_names(i)]
LATTICE_MIN_ROWS = {"amx": 16, "avx512vnni": 32}


def q4_lattice_problem(seed, M, K, N, kind, group, extreme=False):
    """Affine 4-bit weights whose group scales are mul * step[n], mul in [-16, 16] and every
    mul * (u - z) in [-128, 127]: random, or (extreme) at the bounds: the largest multiple the
    zero point allows, codes 0 and 15, activations +-1 (codes +-127)."""
    rng = np.random.default_rng(seed)
    ng = (K + group - 1) // group
    z = rng.integers(0, 16, size=(ng, N)) if kind == "asym" else np.full((ng, N), 8)
    # largest |mul| with mul * v in [-128, 127] for v in [-z, 15 - z], both signs
    pos = np.minimum(np.minimum(128 // np.maximum(z, 1), 127 // np.maximum(15 - z, 1)), 16)
    neg = np.minimum(np.minimum(127 // np.maximum(z, 1), 128 // np.maximum(15 - z, 1)), 16)
    sign = rng.choice([-1, 1], size=(ng, N)) if kind == "sym" else np.ones((ng, N), np.int64)
    lim = np.where(sign > 0, pos, neg)
    mul = sign * (lim if extreme else rng.integers(1, 17, size=(ng, N)) % (lim + 1))
    mul[0, : N // 3] = 0                                         # all-zero groups
    step = np.ldexp(rng.integers(64, 128, size=N), rng.integers(-16, -9, size=N)).astype(np.float32)
    scales = (mul * step[None, :]).astype(np.float16)
    assert np.array_equal(scales.astype(np.float32), (mul * step[None, :]).astype(np.float32))
    codes = (rng.choice([0, 15], size=(K, N)) if extreme else rng.integers(0, 16, size=(K, N))).astype(np.uint8)
    x = (rng.choice([-1.0, 1.0], size=(M, K)) if extreme else rng.standard_normal((M, K))).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    W = _core.pack_q4(codes, f16_bits(scales), z.astype(np.uint8) if kind == "asym" else None, None, kind, group)
    return x, codes, scales, z, mul, bias, W


def q4_lattice_np(x, codes, mul, z, step, bias, group, act):
    K, N = codes.shape
    kg = (K + group - 1) // group * group
    q, s = quantize_np(x, kg)
    w8 = np.repeat(mul, group, axis=0)[:K] * (codes.astype(np.int64) - np.repeat(z, group, axis=0)[:K])
    assert np.abs(w8).max() <= 128 and w8.min() >= -128 and w8.max() <= 127
    d = q[:, :K].astype(np.int64) @ w8
    y = (d.astype(np.float32) * (s[:, None] * step[None, :]).astype(np.float32)).astype(np.float32)
    return act_np((y + bias).astype(np.float32), act)


def _lattice_of(W, enc, K, N, group):
    """q4_lattice's (step [P*16], multiples [NG, N] as int64, shift); it must find a form."""
    got = _core.q4_lattice(W, enc, K, N)
    assert got is not None
    step, m, shift = got
    ng = (K + group - 1) // group
    return step, m.reshape(-1, ng, 16).transpose(1, 0, 2).reshape(ng, -1)[:, :N].astype(np.int64), shift


@pytest.mark.parametrize("kind", ["sym", "asym"])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_q4_lattice_found_and_reference(kind, group):
    """q4_lattice recovers each column's step and the multiples (step: the largest common
    divisor of the scales, so the step found may be a multiple of the one used), and the
    reference of the lattice form equals numpy's int64 sums; off-lattice weights get the rounded
    form instead, and a non-finite scale none."""
    K, N = 200, 37
    x, codes, sc, z, mul, b, W = q4_lattice_problem(K + group, 5, K, N, kind, group)
    enc = ENC[kind].format(group)
    step, m, shift = _lattice_of(W, enc, K, N, group)
    assert shift == 0
    np.testing.assert_array_equal(m * step[None, :N], sc.astype(np.float32))
    assert np.all(np.abs(m) <= 16)
    for act in (0, 1):
        y = _core.qdense("scalar", x, W, enc, K, N, b, act, lattice=True)
        np.testing.assert_array_equal(y, q4_lattice_np(x, codes, m, z, step[:N], b, group, act))
        # the group-wise form agrees up to its per-group rounding
        np.testing.assert_allclose(y, _core.qdense("scalar", x, W, enc, K, N, b, act, lattice=False), rtol=1e-5, atol=1e-5)
    # off the exact lattice (a multiple of 17, a zero point that takes 16 * v out of s8, random
    # scales): the rounded form (test_q4_rounded_lattice_* below); a non-finite scale: none
    for bad in ("mul17", "range", "random"):
        s2, z2 = sc.astype(np.float32).copy(), z.copy()
        s2[0, 20] = step[20]                                # mul 1 in group 0 pins the step
        if bad == "mul17":
            s2[1, 20] = step[20] * 17
        elif bad == "range":
            s2[1, 20], z2[1, 20] = step[20] * 16, (0 if kind == "asym" else 8)
            if kind == "sym":
                s2[1, 20] = -step[20] * 16                  # -16 * 7 fits; -16 * -8 = 128 does not
        else:
            s2 = np.random.default_rng(1).uniform(0.01, 0.1, size=s2.shape)
        W2 = _core.pack_q4(codes, f16_bits(s2.astype(np.float16)), z2.astype(np.uint8) if kind == "asym" else None,
                           None, kind, group)
        assert _core.q4_lattice(W2, enc, K, N)[2] > 0, bad
    s2 = sc.astype(np.float32).copy()
    s2[1, 20] = np.inf
    W2 = _core.pack_q4(codes, f16_bits(s2.astype(np.float16)), z.astype(np.uint8) if kind == "asym" else None, None,
                       kind, group)
    assert _core.q4_lattice(W2, enc, K, N) is None
    with pytest.raises(ValueError, match="no lattice form"):
        _core.qdense("scalar", x, W2, enc, K, N, lattice=True)
    with pytest.raises(ValueError, match="expected a q4 encoding"):
        _core.q4_lattice(W, "qs8-n16k4", K, N)


@pytest.mark.parametrize("isa", [i for i in LATTICE_ISAS if i != "scalar"])
@pytest.mark.parametrize("kind", ["sym", "asym"])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_q4_lattice_isas_match_reference(isa, kind, group):
    """The AMX lattice kernel against the lattice reference, bit for bit: the M sweep (32-row
    blocks, a 16-row block, tails through shorter tiles), K with half a 64-k step (odd group
    counts at G = 32), K chunks (K > 2048, sums carried in int32), N with a lone last panel and
    a column tail, the extremes of mul * (u - z) with activations at +-127; with the outlier
    split's float part (in the AMX epilogue, from the packed codes) and without."""
    shapes = [(100, 47), (129, 70), (256, 64), (2080, 40), (4100, 33)]
    for K, N in shapes:
        for M in (MS if (K, N) == (100, 47) else (1, 16, 17, 33, 48, 65)):
            x, codes, sc, z, mul, b, W = q4_lattice_problem(M * 31 + K, M, K, N, kind, group, extreme=(M % 4 == 1))
            enc = ENC[kind].format(group)
            x[:, K // 3] *= 40.0                                  # an outlier column for the split
            for act in (0, 1):
                for no in (0, 2):
                    # the scalar table adds the outliers with qw_axpy after the GEMM; the AMX
                    # kernel in its epilogue, from the packed codes: the same bits
                    want = _core.qdense("scalar", x, W, enc, K, N, b, act, outliers=no, lattice=True)
                    got = _core.qdense(isa, x, W, enc, K, N, b, act, outliers=no, lattice=True)
                    np.testing.assert_array_equal(got, want, err_msg=f"{isa} {enc} M={M} K={K} N={N} act={act} outliers={no}")


@pytest.mark.parametrize("isa", [i for i in LATTICE_ISAS if i != "scalar"])
def test_q4_lattice_policy(isa):
    """Models take the lattice form from the table's row count on (16 rows on AMX, 32 with
    VNNI), and the group-wise kernel below it; threads never change a row's bits."""
    K, N = 640, 300
    x, codes, sc, z, mul, b, W = q4_lattice_problem(7, 40, K, N, "asym", 32)
    enc = ENC["asym"].format(32)
    lo = LATTICE_MIN_ROWS[isa]
    for M in (1, lo - 1, lo, 40):
        auto = _core.qdense(isa, x[:M], W, enc, K, N, b, 0)
        want = _core.qdense(isa, x[:M], W, enc, K, N, b, 0, lattice=(M >= lo))
        np.testing.assert_array_equal(auto, want, err_msg=f"M={M}")
        np.testing.assert_array_equal(_core.qdense(isa, x[:M], W, enc, K, N, b, 0, True), auto, err_msg=f"M={M} threaded")


# ---- the rounded lattice form (q4_gemm.h: table codes, affine codes off the exact lattice) ------

def q4_rounded_np(codes, table, scales, zeros, kind, group):
    """The rounded lattice form's definition in numpy: (w8 [K, N], step [N], mul [NG, N], S)."""
    K, N = codes.shape
    s = scales.astype(np.float32)
    minus = s < 0
    if kind.startswith("table"):
        t = table.astype(np.int64)
        v = t[codes]
        lo, hi = np.full(s.shape, t.min()), np.full(s.shape, t.max())
    else:
        z = np.full(s.shape, 8) if kind == "sym" else zeros.astype(np.int64)
        v = codes.astype(np.int64) - np.repeat(z, group, axis=0)[:K]
        lo, hi = -z, 15 - z
    lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
    pos = int(np.where(minus, -lo, hi).max())
    neg = int(np.where(minus, hi, -lo).max())
    best = None
    for S in range(1, 9):
        R, lim = 1 << (S - 1), 128 << S
        y = 255
        if pos > 0:
            y = min(y, (lim - 1 - R) // pos, (32767 - R) // pos)
        if neg > 0:
            y = min(y, (lim + R) // neg)
        score = min(y, 2.0 * max(pos, neg) * y / (1 << S))
        if best is None or score > best[0]:
            best = (score, S, y)
    _, S, ymax = best
    a = np.abs(s).max(axis=0)
    safe = np.where(a > 0, a, 1).astype(np.float64)
    y = np.where(a > 0, np.minimum(np.floor(np.abs(s).astype(np.float64) / safe * ymax + 0.5), ymax), 0).astype(np.int64)
    mul = np.where(minus, -y, y)
    step = np.where(a > 0, np.ldexp(a.astype(np.float64), S) / ymax, 0).astype(np.float32)
    w8 = (v * np.repeat(mul, group, axis=0)[:K] + (1 << (S - 1))) >> S
    assert w8.min() >= -128 and w8.max() <= 127
    return w8, step, mul, S


def q4_rounded_problem(seed, M, K, N, kind, group, extreme=False):
    """q4_problem's weights, with negative scales (a third of the groups) where the kind allows
    them (sym and tables: the sign trick of round-to-nearest writers)."""
    x, codes, sc, z, t, b, W = q4_problem(seed, M, K, N, kind, group, extreme)
    if kind != "asym":
        sc = np.where(np.random.default_rng(seed).random(sc.shape) < 0.3, -sc, sc).astype(np.float16)
        W = _core.pack_q4(codes, f16_bits(sc), z, t, kind[:5], group)
    return x, codes, sc, z, t, b, W


@pytest.mark.parametrize("kind", Q4_KINDS)
@pytest.mark.parametrize("group", [32, 64, 128])
def test_q4_rounded_lattice_found_and_reference(kind, group):
    """Table codes and affine codes off the exact lattice get the rounded form: per layer the
    shift S and the largest multiple Ymax (S = 7, Ymax = 254 for tables within +-64; S = 8 for
    +-127 ones; S = 4 for symmetric int4), per column y = round(|s| / max|s| * Ymax) with the
    scale's sign and step = max|s| * 2^S / Ymax; the reference equals numpy's int64 sums of
    w8 = (v * mul + 2^(S-1)) >> S, and w8 * step stays within its bounds of the group-wise
    weights v * s."""
    K, N = 200, 37
    x, codes, sc, z, t, b, W = q4_rounded_problem(K + group, 5, K, N, kind, group)
    enc = ENC[kind].format(group)
    step, mk, shift = _lattice_of(W, enc, K, N, group)
    w8, wstep, wmul, S = q4_rounded_np(codes, t, sc, z, kind, group)
    assert shift == S == {"table": 7, "table127": 8, "sym": 4, "asym": 5}[kind]
    np.testing.assert_array_equal(mk, wmul)
    np.testing.assert_array_equal(step[:N], wstep)
    assert np.abs(wmul).max() >= 250 and (wmul < 0).any() == (kind != "asym")
    kg = (K + group - 1) // group * group
    q, sa = quantize_np(x, kg)
    d = q[:, :K].astype(np.int64) @ w8
    for act in (0, 1):
        want = act_np(((d.astype(np.float32) * (sa[:, None] * wstep[None, :]).astype(np.float32)).astype(np.float32)
                       + b).astype(np.float32), act)
        np.testing.assert_array_equal(_core.qdense("scalar", x, W, enc, K, N, b, act, lattice=True), want)
    # w8 * step against the group-wise v * s: within step / 2 (w8's rounding) plus
    # |v| * step / 2^(S+1) (y's: half a unit of y is max|s| / (2 Ymax) per unit of v)
    if kind.startswith("table"):
        v = t.astype(np.float64)[codes]
    else:
        zz = np.full(sc.shape, 8) if kind == "sym" else z.astype(np.int64)
        v = (codes.astype(np.int64) - np.repeat(zz, group, axis=0)[:K]).astype(np.float64)
    wg = v * np.repeat(sc.astype(np.float64), group, axis=0)[:K]
    st = step[None, :N].astype(np.float64)
    err = np.abs(w8 * st - wg)
    assert np.all(err <= st * (0.5 + np.abs(v) / 2 ** (S + 1)) * (1 + 1e-6))
    assert err.max() > 0.3 * st.max()  # (and it does round)
    # the outputs of both forms agree to about that (random x: about a percent of the error)
    yl = _core.qdense("scalar", x, W, enc, K, N, b, 0, lattice=True)
    yg = _core.qdense("scalar", x, W, enc, K, N, b, 0, lattice=False)
    assert np.linalg.norm(yl - yg) / np.linalg.norm(yg - b) < 0.01
    for bad in (np.inf, np.nan):
        s2 = sc.astype(np.float32).copy()
        s2[1, 20] = bad
        W2 = _core.pack_q4(codes, f16_bits(s2.astype(np.float16)), z, t, kind[:5], group)
        assert _core.q4_lattice(W2, enc, K, N) is None, bad
        with pytest.raises(ValueError, match="no lattice form"):
            _core.qdense("scalar", x, W2, enc, K, N, lattice=True)


@pytest.mark.parametrize("isa", [i for i in LATTICE_ISAS if i != "scalar"])
@pytest.mark.parametrize("kind", Q4_KINDS)
@pytest.mark.parametrize("group", [32, 64, 128])
def test_q4_rounded_lattice_isas_match_reference(isa, kind, group):
    """The lattice kernels in the rounded form against the reference, bit for bit, over the
    shapes of the exact form's test: M sweep, half a 64-k step, K chunks, lone last panel;
    extremes (the table at +-peak, codes 15 / zero points 0 or codes of both signs, the
    largest multiple, activations +-127, negative scales); with the outlier split's float part
    (group-wise weights, from the packed codes) and without."""
    shapes = [(100, 47), (129, 70), (256, 64), (2080, 40), (4100, 33)]
    for K, N in shapes:
        for M in (MS if (K, N) == (100, 47) else (1, 16, 17, 33, 48, 65)):
            x, codes, sc, z, t, b, W = q4_rounded_problem(M * 31 + K, M, K, N, kind, group, extreme=(M % 4 == 1))
            if M % 4 == 1 and kind.startswith("table"):  # codes of both signs, one |scale|: y = Ymax
                codes = np.random.default_rng(M).integers(0, 2, size=(K, N)).astype(np.uint8)
                s1 = np.where(np.random.default_rng(M + 1).random(sc.shape) < 0.5, -0.05, 0.05).astype(np.float16)
                W = _core.pack_q4(codes, f16_bits(s1), None, t, "table", group)
            enc = ENC[kind].format(group)
            # (one group per column is on the exact lattice: that form then)
            assert _core.q4_lattice(W, enc, K, N)[2] > 0 or K <= group
            x[:, K // 3] *= 40.0
            for act in (0, 1):
                for no in (0, 2):
                    want = _core.qdense("scalar", x, W, enc, K, N, b, act, outliers=no, lattice=True)
                    got = _core.qdense(isa, x, W, enc, K, N, b, act, outliers=no, lattice=True)
                    np.testing.assert_array_equal(got, want, err_msg=f"{isa} {enc} M={M} K={K} N={N} act={act} outliers={no}")
