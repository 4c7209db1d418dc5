"""Every fp32 GEMM path agrees with the scalar reference (bit for bit: all paths
follow the same FMA chain per output, see f32_gemm.h) and with numpy."""

import numpy as np
import pytest

from lowbit import _core

from conftest import ISAS

MS = list(range(1, 11)) + [15, 16, 17, 31, 32, 33, 63, 64, 65, 128]
NKS = [(1, 1), (3, 5), (16, 16), (17, 15), (31, 33), (33, 64), (64, 100), (100, 257), (257, 31)]


def packed(B):
    p = _core.pack_f32_n16(B)
    # the kernels need 64-byte aligned panels, as the file loader provides
    buf = np.empty(p.size + 16, np.float32)
    off = (-buf.ctypes.data % 64) // 4
    out = buf[off:off + p.size]
    out[:] = p
    return out


def problem(seed, M, K, N):
    """Random A [M, K], B [K, N], bias [N] and B packed (aligned)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    return A, B, bias, packed(B)


def gemm(isa, A, Bp, bias, act, N, m0=0, m1=None, n0=0, n1=None, C=None):
    M = A.shape[0]
    C = np.full((M, N), np.nan, np.float32) if C is None else C
    _core.f32_gemm(isa, A, Bp, bias, act, N, C, m0, M if m1 is None else m1, n0, N if n1 is None else n1)
    return C


def test_pack_layout():
    K, N = 3, 20
    B = np.arange(K * N, dtype=np.float32).reshape(K, N)
    p = _core.pack_f32_n16(B)
    assert p.size == 2 * 16 * K
    panels = p.reshape(2, K, 16)
    np.testing.assert_array_equal(panels[0], B[:, :16])
    np.testing.assert_array_equal(panels[1, :, :4], B[:, 16:])
    assert not panels[1, :, 4:].any()  # zero padding


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("N,K", NKS)
def test_matches_reference(isa, N, K):
    rng = np.random.default_rng(N * 1000 + K)
    B = rng.standard_normal((K, N)).astype(np.float32)
    Bp = packed(B)
    bias = rng.standard_normal(N).astype(np.float32)
    for M in MS:
        A = rng.standard_normal((M, K)).astype(np.float32)
        for act in (0, 1):
            for b in (None, bias):
                want = gemm("scalar", A, Bp, b, act, N)
                got = gemm(isa, A, Bp, b, act, N)
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} M={M} N={N} K={K} act={act}")
        ref = A.astype(np.float64) @ B.astype(np.float64) + bias
        np.testing.assert_allclose(gemm(isa, A, Bp, bias, 0, N), ref, rtol=1e-4, atol=1e-4 * np.sqrt(K))


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_epilogue(isa):
    M, K, N = 17, 40, 35
    A, B, bias, Bp = problem(7, M, K, N)
    want = gemm("scalar", A, Bp, bias, 2, N)
    got = gemm(isa, A, Bp, bias, 2, N)
    np.testing.assert_array_max_ulp(got, want, maxulp=4)
    import math
    z = gemm("scalar", A, Bp, bias, 0, N).astype(np.float64)
    exact = 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    np.testing.assert_allclose(want, exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M,K,N", [(1, 9, 20), (5, 33, 47), (7, 64, 64), (13, 800, 40), (40, 147, 64)])
def test_residual_epilogue(isa, M, K, N):
    """y = act((acc + bias) + res): the same bits as adding the residual to the GEMM's output
    afterwards (what the Conv op did before the epilogue took it), on every path: small M,
    register tiles, ragged columns, several K blocks (K = 800), and a GELU after it."""
    A, B, bias, Bp = problem(M * 31 + K, M, K, N)
    res = np.random.default_rng(K).standard_normal((M, N)).astype(np.float32)
    for act in (0, 1, 2):
        plain = gemm("scalar", A, Bp, bias, 0, N)
        C = np.full((M, N), np.nan, np.float32)
        _core.f32_gemm(isa, A, Bp, bias, act, N, C, 0, M, 0, N, res=res)
        summed = plain + res
        if act == 0:
            np.testing.assert_array_equal(C, summed)
        elif act == 1:
            np.testing.assert_array_equal(C, np.where(0 > summed, np.float32(0), summed))
        else:  # GELU of the sum: the scalar GEMM with K = 0 and that sum as its bias row by row
            want = np.stack([gemm("scalar", np.zeros((1, 0), np.float32), _core.pack_f32_n16(np.zeros((0, N), np.float32)),
                                  summed[m], 2, N)[0] for m in range(M)])
            np.testing.assert_array_max_ulp(C, want, maxulp=4)
        ref = np.full((M, N), np.nan, np.float32)
        _core.f32_gemm("scalar", A, Bp, bias, act, N, ref, 0, M, 0, N, res=res)
        if act < 2:
            np.testing.assert_array_equal(C, ref)
    with pytest.raises(ValueError, match="res must be"):
        _core.f32_gemm(isa, A, Bp, bias, 0, N, np.zeros((M, N), np.float32), 0, M, 0, N, res=res[:, :-1])


@pytest.mark.parametrize("isa", ISAS)
def test_subrectangles_equal_whole_call(isa):
    """Thread splits call the kernel on sub-rectangles: results must not depend on them."""
    rng = np.random.default_rng(11)
    M, K, N = 70, 300, 90
    A, B, bias, Bp = problem(11, M, K, N)
    whole = gemm(isa, A, Bp, bias, 1, N)
    for _ in range(20):
        C = np.full((M, N), np.nan, np.float32)
        m_cuts = sorted(set([0, M] + list(rng.integers(0, M, 3))))
        n_cuts = sorted(set([0, N] + [16 * int(c) for c in rng.integers(0, N // 16 + 1, 2)]))
        n_cuts = [c for c in n_cuts if c <= N]
        for m0, m1 in zip(m_cuts, m_cuts[1:]):
            for n0, n1 in zip(n_cuts, n_cuts[1:]):
                gemm(isa, A, Bp, bias, 1, N, m0, m1, n0, n1, C)
        np.testing.assert_array_equal(C, whole)


@pytest.mark.parametrize("isa", ISAS)
def test_only_writes_its_rectangle(isa):
    rng = np.random.default_rng(12)
    M, K, N = 20, 33, 50
    A = rng.standard_normal((M, K)).astype(np.float32)
    Bp = packed(rng.standard_normal((K, N)).astype(np.float32))
    C = np.full((M, N), 123.0, np.float32)
    gemm(isa, A, Bp, None, 0, N, 3, 9, 16, 32, C)
    mask = np.ones((M, N), bool)
    mask[3:9, 16:32] = False
    assert (C[mask] == 123.0).all()
    assert (C[~mask] != 123.0).all()


@pytest.mark.parametrize("isa", ISAS)
def test_k_zero_gives_bias(isa):
    N = 20
    bias = np.arange(N, dtype=np.float32) - 5
    A = np.zeros((3, 0), np.float32)
    Bp = _core.pack_f32_n16(np.zeros((0, N), np.float32))
    assert Bp.size == 0
    got = gemm(isa, A, Bp, bias, 1, N)
    np.testing.assert_array_equal(got, np.maximum(np.broadcast_to(bias, (3, N)), 0))


@pytest.mark.parametrize("isa", ISAS)
def test_nan_inf_propagate(isa):
    K, N = 20, 18
    A = np.ones((4, K), np.float32)
    A[1, 3] = np.nan
    A[2, 5] = np.inf
    B = np.ones((K, N), np.float32)
    got = gemm(isa, A, packed(B), None, 0, N)
    assert np.isnan(got[1]).all() and np.isposinf(got[2]).all() and (got[0] == K).all()


@pytest.mark.slow
@pytest.mark.parametrize("isa", ISAS)
def test_large_shapes(isa):
    rng = np.random.default_rng(5)
    for M, K, N in [(128, 768, 3072), (1, 4096, 4096), (3, 1000, 1000), (200, 513, 129)]:
        A = rng.standard_normal((M, K)).astype(np.float32)
        B = rng.standard_normal((K, N)).astype(np.float32)
        Bp = packed(B)
        np.testing.assert_array_equal(gemm(isa, A, Bp, None, 0, N), gemm("scalar", A, Bp, None, 0, N))
