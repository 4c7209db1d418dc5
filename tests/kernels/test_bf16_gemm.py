"""The bf16 GEMM (bf16_gemm.h): every ISA's packings write the reference's bytes (bf16_round:
round to nearest even, NaN quiet, subnormals to signed zero), and every ISA's GEMM agrees
with the reference within the fp32 accumulation bound K * 2^-23 * sum |a b| (AMX sums in its
own, unspecified order), while the reference equals a float64 product of the rounded inputs
within the same bound."""

import numpy as np
import pytest

from lowbit import _core

from conftest import ISAS

MS = list(range(1, 11)) + [15, 16, 17, 31, 32, 33, 63, 64, 65, 128]
NKS = [(1, 1), (3, 5), (16, 16), (17, 15), (31, 33), (33, 64), (64, 100), (100, 257), (128, 32), (32, 128)]


def bf16_round(x):
    """bf16_gemm.h's rounding, in numpy: the float32 values of the rounded bf16."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = np.where(nan, (u >> 16) | 0x40, r)
    r = np.where((u & 0x7F800000) == 0, (u >> 16) & 0x8000, r)
    return (r.astype(np.uint32) << 16).view(np.float32)


def test_table_names():
    names = _core.kernel_names()
    assert names["bf16-gemm"] in ("bf16_gemm_32x32__amx", "bf16_gemm_1x16__scalar")
    if "amx" in ISAS:
        assert names["bf16-gemm"] == "bf16_gemm_32x32__amx"


def test_rounding_rule():
    """The packed values are bf16_round of the inputs: ties to even, carry into the exponent,
    overflow to inf, NaN kept (quiet, signed), subnormals to signed zero."""
    bits = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F807FFF, 0x7F7FFFFF, 0x7F800000, 0xFF800000,
                     0x7F800001, 0xFFC00001, 0x00000001, 0x807FFFFF, 0x00800000, 0x80000000, 0x3F7FFFFF],
                     np.uint32)
    x = bits.view(np.float32).reshape(1, -1)
    want = np.array([0x3F80, 0x3F82, 0x3F81, 0x3F80, 0x7F80, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x0000, 0x8000,
                     0x0080, 0x8000, 0x3F80], np.uint16)
    for isa in ISAS:
        got = _core.bf16_pack(isa, x, "a")[:x.shape[1]]
        np.testing.assert_array_equal(got, want, err_msg=isa)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", ["a", "b", "bt"])
def test_packings_match_reference(isa, kind):
    rng = np.random.default_rng(1)
    for r, c in [(1, 1), (3, 17), (16, 32), (17, 33), (40, 70), (128, 32), (5, 200)]:
        x = rng.standard_normal((r, c)).astype(np.float32)
        flat = x.reshape(-1)  # specials and subnormals on random positions
        flat[rng.integers(0, flat.size, 3)] = [np.nan, np.inf, 1e-40]
        want = _core.bf16_pack("scalar", x, kind)
        got = _core.bf16_pack(isa, x, kind)
        np.testing.assert_array_equal(got, want, err_msg=f"{isa} {kind} {r}x{c}")


def test_packed_layouts():
    """The layouts of bf16_gemm.h, element by element (the reference's packings)."""
    rng = np.random.default_rng(2)
    K, N = 37, 21
    B = rng.standard_normal((K, N)).astype(np.float32)
    Kp = 64
    pb = _core.bf16_pack("scalar", B, "b").view(np.uint16)
    pbt = _core.bf16_pack("scalar", B.T.copy(), "bt").view(np.uint16)
    np.testing.assert_array_equal(pb, pbt)
    vals = (pb.astype(np.uint32) << 16).view(np.float32)
    assert vals.size == 32 * Kp
    full = np.zeros((Kp, 32), np.float32)
    for p in range(2):
        for k in range(Kp):
            for n in range(16):
                full[k, 16 * p + n] = vals[p * Kp * 16 + (k // 2) * 32 + n * 2 + k % 2]
    np.testing.assert_array_equal(full[:K, :N], bf16_round(B))
    assert not full[K:].any() and not full[:, N:].any()
    A = rng.standard_normal((5, K)).astype(np.float32)
    pa = (_core.bf16_pack("scalar", A, "a").astype(np.uint32) << 16).view(np.float32).reshape(16, Kp)
    np.testing.assert_array_equal(pa[:5, :K], bf16_round(A))
    assert not pa[5:].any() and not pa[:, K:].any()


def bound(A, B):
    a, b = bf16_round(A).astype(np.float64), bf16_round(B).astype(np.float64)
    return a @ b, A.shape[1] * 2.0 ** -23 * (np.abs(a) @ np.abs(b))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M", MS)
def test_gemm_matches_reference(isa, M):
    rng = np.random.default_rng(M)
    for N, K in NKS:
        A = (rng.standard_normal((M, K)) * rng.choice([1e-3, 1.0, 30.0])).astype(np.float32)
        B = rng.standard_normal((K, N)).astype(np.float32)
        exact, tol = bound(A, B)
        ref = _core.bf16_gemm("scalar", A, B)
        assert np.all(np.abs(ref - exact) <= tol), (N, K)
        for trans in (False, True):
            got = _core.bf16_gemm(isa, A, B.T.copy() if trans else B, trans)
            assert got.shape == (M, N)
            assert np.all(np.abs(got - ref) <= 2 * tol), (isa, M, N, K, trans, np.abs(got - ref).max())


def test_gemm_is_not_fp32():
    """The inputs really are rounded: a product whose fp32 value differs from its bf16 one."""
    B = np.ones((1, 1), np.float32)
    for isa in ISAS:  # bf16 steps of 2^-7 at 1: a tie goes to even (1), past it up
        assert _core.bf16_gemm(isa, np.full((1, 1), 1 + 2 ** -8, np.float32), B)[0, 0] == 1.0
        assert _core.bf16_gemm(isa, np.full((1, 1), 1 + 2 ** -8 + 2 ** -12, np.float32), B)[0, 0] == 1 + 2 ** -7


def test_bad_operands():
    with pytest.raises(ValueError, match="does not match"):
        _core.bf16_gemm("scalar", np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="kind must be"):
        _core.bf16_pack("scalar", np.ones((2, 3), np.float32), "c")


@pytest.mark.parametrize("isa", ISAS)
def test_row_scale(isa):
    """row_scale multiplies each row's sums once: C[m] = sums[m] * s[m], on whole and edge tiles."""
    rng = np.random.default_rng(5)
    for M, K, N in [(1, 5, 3), (16, 32, 16), (37, 70, 40), (128, 128, 32)]:
        A = rng.standard_normal((M, K)).astype(np.float32)
        B = rng.standard_normal((K, N)).astype(np.float32)
        s = rng.uniform(0.01, 3, M).astype(np.float32)
        plain = _core.bf16_gemm(isa, A, B)
        np.testing.assert_array_equal(_core.bf16_gemm(isa, A, B, row_scale=s), plain * s[:, None])


def codes_to_float(p):
    return (np.asarray(p, np.uint16).astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("isa", ISAS)
def test_softmax_matches_reference(isa):
    """Each row: p = bf16_round(exp(pre(x) - max)), zeros up to a multiple of 32, and 1 / the fp32
    sum of exp: within a few ulp of the reference (exp and the sums' order are the ISA's), and
    the product normalized after the fact is the softmax within bf16 rounding. Row counts
    around the kernel's groups of 4, masks per row, one for all, or one value."""
    rng = np.random.default_rng(7)
    for rows in [1, 3, 4, 5, 9]:
        for n in [1, 5, 16, 31, 32, 33, 100, 128, 257]:
            x = (rng.standard_normal((rows, n)) * 4).astype(np.float32)
            masks = [None, np.where(rng.random(n) < 0.3, -10000.0, 0.0).astype(np.float32),
                     np.where(rng.random((rows, n)) < 0.3, -10000.0, 0.0).astype(np.float32),
                     np.array([1.5], np.float32), rng.standard_normal((rows, 1)).astype(np.float32)]
            for scale_op, scale, add in [(0, 1.0, masks[0]), (1, 0.125, masks[3]), (2, 5.656854, masks[1]),
                                         (2, 8.0, masks[2]), (1, 0.5, masks[4])]:
                p, inv = _core.bf16_softmax(isa, x, scale_op, scale, add)
                pr, invr = _core.bf16_softmax("scalar", x, scale_op, scale, add)
                assert p.shape == (rows, (n + 31) // 32 * 32) and not p[:, n:].any()
                # a code may differ by one where exp's last bits cross a rounding boundary
                assert np.abs(p[:, :n].astype(np.int32) - pr[:, :n].astype(np.int32)).max() <= 1, (rows, n, scale_op)
                np.testing.assert_allclose(inv, invr, rtol=1e-6)
                t = x.astype(np.float64)
                t = t * scale if scale_op == 1 else t / scale if scale_op == 2 else t
                if add is not None:
                    t = t + add
                want = np.exp(t - t.max(axis=1, keepdims=True))
                np.testing.assert_allclose(codes_to_float(p[:, :n]) * inv[:, None], want / want.sum(axis=1, keepdims=True),
                                           rtol=2 ** -8, atol=1e-30)


def test_softmax_specials():
    """A NaN row: NaN codes and NaN inv; an all -inf row: zero codes, inv inf (NaN after the
    product, as softmax's 0 / 0); the other rows of the call are unaffected."""
    for isa in ISAS:
        x = np.array([[1.0, 2.0, 3.0], [1.0, np.nan, 2.0], [-np.inf] * 3, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
        p, inv = _core.bf16_softmax(isa, x)
        assert np.isnan(inv[1]) and np.isnan(codes_to_float(p[1, :3])).all() and not p[1, 3:].any()
        assert inv[2] == np.inf and not p[2].any()
        assert inv[3] == np.float32(1 / 3) and inv[4] == np.float32(1 / 3)
        np.testing.assert_allclose(codes_to_float(p[0, :3]) * inv[0], np.exp([-2, -1, 0]) / np.exp([-2, -1, 0]).sum(),
                                   rtol=2 ** -8)
        p, inv = _core.bf16_softmax(isa, np.zeros((1, 2), np.float32), 0, 1.0, np.array([-np.inf, 0.0], np.float32))
        assert inv[0] == 1 and list(codes_to_float(p[0, :2])) == [0.0, 1.0]
