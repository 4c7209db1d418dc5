"""The fp32 GEMM over an implicit A (a convolution read in place, see f32_gemm.h)
gives the same bits as the same GEMM over the im2col'd A, for every ISA whose
table supports it: segments shorter and longer than the K block, strides,
dilations, row ranges that take the small-M path, rows that cross output rows."""

import numpy as np
import pytest

import lowbit
from lowbit import _core

from conftest import ISAS
from .test_f32_gemm import packed

IMPLICIT_ISAS = [i for i in ISAS if _core.kernel_names(i)["f32-conv"] == "implicit-gemm"]

CASES = [  # Hp, Wp, C, kh, kw, sh, sw, dh, N
    (6, 7, 3, 3, 3, 1, 1, 1, 5),
    (9, 9, 16, 3, 3, 1, 1, 1, 17),
    (11, 10, 40, 3, 3, 2, 2, 1, 33),
    (8, 12, 8, 3, 2, 1, 2, 2, 16),
    (5, 5, 300, 3, 3, 1, 1, 1, 20),  # kw * C = 900: a segment longer than the 768 K block
    (7, 9, 64, 1, 1, 2, 2, 1, 31),  # 1x1 stride 2: one segment
    (4, 30, 24, 1, 7, 1, 1, 1, 9),
    (4, 5, 1024, 3, 1, 1, 1, 1, 20),  # rows 4 KB apart (copied to a stack buffer), K blocks across segments
    (12, 12, 3, 7, 7, 2, 2, 1, 64),  # a 3-channel stem: segments of 21 inside one K block
]


def im2col(img, kh, kw, sh, sw, dh, OH, OW):
    rows = []
    for oy in range(OH):
        for ox in range(OW):
            rows.append(np.concatenate([img[oy * sh + ky * dh, ox * sw: ox * sw + kw].reshape(-1) for ky in range(kh)]))
    return np.ascontiguousarray(np.stack(rows))


@pytest.mark.parametrize("isa", IMPLICIT_ISAS)
@pytest.mark.parametrize("case", CASES)
def test_implicit_a_matches_im2col_bit_for_bit(isa, case):
    Hp, Wp, C, kh, kw, sh, sw, dh, N = case
    OH, OW = (Hp - (kh - 1) * dh - 1) // sh + 1, (Wp - kw) // sw + 1
    rng = np.random.default_rng(Hp * 100 + C)
    img = rng.standard_normal((Hp, Wp, C)).astype(np.float32)
    K = kh * kw * C
    B = rng.standard_normal((K, N)).astype(np.float32)
    Bp = packed(B)
    A = im2col(img, kh, kw, sh, sw, dh, OH, OW)
    M = OH * OW
    want = np.empty((M, N), np.float32)
    _core.f32_gemm(isa, A, Bp, None, 0, N, want, 0, M, 0, N)
    np.testing.assert_allclose(want, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-3)
    flat = img.reshape(-1)
    for m0, m1 in [(0, M), (0, min(M, 3)), (1, min(M, 5)), (M // 2, M)]:  # small-M and tiled paths
        got = np.full((M, N), np.nan, np.float32)
        _core.f32_gemm_implicit(isa, flat, sw * C, kw * C, dh * Wp * C, OW, sh * Wp * C, M, K, Bp, N, got, m0, m1)
        assert np.array_equal(got[m0:m1], want[m0:m1]), (m0, m1)
        assert np.isnan(got[:m0]).all() and np.isnan(got[m1:]).all()


def test_implicit_hook_rejects_reads_past_the_buffer():
    isa = IMPLICIT_ISAS[0] if IMPLICIT_ISAS else pytest.skip("no table reads an implicit A")
    Bp = packed(np.ones((18, 4), np.float32))
    with pytest.raises(ValueError, match="past the buffer"):
        _core.f32_gemm_implicit(isa, np.zeros(50, np.float32), 2, 6, 20, 4, 20, 8, 18, Bp, 4,
                                np.zeros((8, 4), np.float32), 0, 8)


def test_tables_state_their_conv_path():
    for isa in ["scalar"] + [i for i in ("avx2", "avx512vnni", "amx") if i in lowbit.cpu_info()["supported_isas"]]:
        assert _core.kernel_names(isa)["f32-conv"] == "implicit-gemm", isa
