"""Every ISA's max-pool kernel gives the scalar reference's bits (a max picks one of its
inputs, so there is nothing to round) and numpy's values: channel counts around the
vector widths, strides, dilations, padding, windows wider than one pass of taps, windows
with no tap inside the image, NaN and inf inputs, and row ranges as threads split them."""

import numpy as np
import pytest

import lowbit
from lowbit import _core

from conftest import ISAS

CASES = [  # C, H, W, kh, kw, s, d, pt, pl, pb, pr
    (64, 12, 12, 3, 3, 2, 1, 1, 1, 1, 1),  # the ResNet stem's pool
    (1, 5, 6, 2, 2, 2, 1, 0, 0, 0, 0),
    (7, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1),
    (16, 9, 10, 3, 2, 1, 2, 2, 1, 2, 1),
    (33, 8, 8, 5, 5, 1, 1, 2, 2, 2, 2),
    (65, 6, 7, 3, 3, 2, 1, 0, 1, 2, 1),
    (130, 5, 5, 2, 3, 1, 1, 0, 0, 1, 1),
    (20, 10, 11, 9, 9, 1, 1, 4, 4, 4, 4),  # 81 taps: two passes of 64
    (24, 3, 3, 2, 2, 1, 1, 3, 3, 3, 3),  # windows entirely in the padding: -inf
]


def numpy_maxpool(x, kh, kw, s, d, pt, pl, OH, OW):
    N, H, W, C = x.shape
    y = np.full((N, OH, OW, C), -np.inf, np.float32)
    for oy in range(OH):
        for ox in range(OW):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * s - pt + ky * d, ox * s - pl + kx * d
                    if 0 <= iy < H and 0 <= ix < W:
                        v = x[:, iy, ix]
                        y[:, oy, ox] = np.where(v > y[:, oy, ox], v, y[:, oy, ox])
    return y


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES)
def test_maxpool_matches_reference(isa, case):
    C, H, W, kh, kw, s, d, pt, pl, pb, pr = case
    N = 2
    OH = (H + pt + pb - d * (kh - 1) - 1) // s + 1
    OW = (W + pl + pr - d * (kw - 1) - 1) // s + 1
    rng = np.random.default_rng(C * 7 + H)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    x.reshape(-1)[rng.integers(0, x.size, 5)] = np.nan  # skipped, as x > m is false
    x.reshape(-1)[rng.integers(0, x.size, 3)] = np.inf
    x.reshape(-1)[rng.integers(0, x.size, 3)] = -np.inf
    want = np.full((N, OH, OW, C), 7.0, np.float32)
    _core.f32_maxpool("scalar", x, want, [kh, kw], [s, s], [d, d], [pt, pl], 0, N * OH)
    np.testing.assert_array_equal(want, numpy_maxpool(x, kh, kw, s, d, pt, pl, OH, OW))
    got = np.full((N, OH, OW, C), 7.0, np.float32)
    for r0, r1 in [(0, 1), (1, N * OH - 1), (N * OH - 1, N * OH)]:  # row ranges as the thread pool splits them
        _core.f32_maxpool(isa, x, got, [kh, kw], [s, s], [d, d], [pt, pl], r0, r1)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), isa


def test_tables_name_their_maxpool():
    for isa in ISAS:
        name = _core.kernel_names(isa)["f32-maxpool"]
        tag = "scalar" if isa in ("scalar", "neondot") else "avx512" if isa == "amx" else isa.replace("vnni", "")
        assert name == f"f32_maxpool_nhwc__{tag}", (isa, name)
    assert "f32-maxpool" in lowbit.cpu_info()["kernels"]
