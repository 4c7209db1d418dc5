"""f32-dwconv: every ISA's direct depthwise kernel gives the scalar reference's
bits (multiply and add kept separate, taps summed in the same order), for
channel counts around the vector widths, kernel sizes 1..7 (beyond the 25
cached taps too), strides, dilations, padding and partial row ranges."""

import numpy as np
import pytest

from lowbit import _core

from conftest import ISAS


def out_size(n, k, s, d, p0, p1):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def run(isa, x, w, b, stride, dil, pads, r0=None, r1=None, y=None):
    N, H, W, C = x.shape
    kh, kw, _ = w.shape
    OH = out_size(H, kh, stride[0], dil[0], pads[0], pads[2])
    OW = out_size(W, kw, stride[1], dil[1], pads[1], pads[3])
    if y is None:
        y = np.full((N, OH, OW, C), np.nan, np.float32)
    _core.f32_dwconv(isa, x, w, b, y, list(stride), list(dil), [pads[0], pads[1]], 0 if r0 is None else r0,
                     N * OH if r1 is None else r1)
    return y


def numpy_dwconv(x, w, b, stride, dil, pads):
    xd = np.pad(x.astype(np.float64), ((0, 0), (pads[0], pads[2]), (pads[1], pads[3]), (0, 0)))
    N, H, W, C = x.shape
    kh, kw, _ = w.shape
    OH = out_size(H, kh, stride[0], dil[0], pads[0], pads[2])
    OW = out_size(W, kw, stride[1], dil[1], pads[1], pads[3])
    y = np.zeros((N, OH, OW, C))
    for ky in range(kh):
        for kx in range(kw):
            y += w[ky, kx] * xd[:, ky * dil[0]: ky * dil[0] + (OH - 1) * stride[0] + 1: stride[0],
                                kx * dil[1]: kx * dil[1] + (OW - 1) * stride[1] + 1: stride[1]]
    return y + (0 if b is None else b)


CASES = [  # C, (H, W), (kh, kw), stride, dilation, pads (top, left, bottom, right)
    (1, (5, 6), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (7, (9, 10), (3, 3), (2, 1), (1, 1), (1, 0, 2, 1)),
    (8, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (9, (11, 13), (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),
    (15, (7, 12), (3, 3), (1, 2), (2, 2), (2, 2, 2, 2)),
    (16, (12, 12), (3, 3), (2, 2), (1, 1), (0, 0, 1, 1)),
    (17, (6, 17), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
    (24, (10, 9), (7, 7), (1, 1), (1, 1), (3, 3, 3, 3)),  # 49 taps: beyond the cached 25
    (31, (4, 20), (3, 5), (1, 3), (1, 1), (1, 2, 1, 2)),
    (33, (13, 13), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (40, (3, 3), (3, 3), (1, 1), (1, 1), (2, 2, 2, 2)),  # padding wider than the image
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES, ids=[f"C{c[0]}k{c[2][0]}x{c[2][1]}s{c[3][0]}{c[3][1]}" for c in CASES])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference_bit_for_bit(isa, case, bias):
    C, (H, W), (kh, kw), stride, dil, pads = case
    rng = np.random.default_rng(C * 100 + kh)
    x = rng.standard_normal((2, H, W, C)).astype(np.float32)
    w = rng.standard_normal((kh, kw, C)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32) if bias else None
    ref = run("scalar", x, w, b, stride, dil, pads)
    got = run(isa, x, w, b, stride, dil, pads)
    assert np.array_equal(got, ref)
    np.testing.assert_allclose(ref, numpy_dwconv(x, w, b, stride, dil, pads), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_row_ranges_write_only_their_rows(isa):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 11, 20)).astype(np.float32)
    w = rng.standard_normal((3, 3, 20)).astype(np.float32)
    full = run("scalar", x, w, None, (1, 1), (1, 1), (1, 1, 1, 1))
    y = np.full_like(full, np.nan)
    for r0, r1 in [(0, 3), (3, 4), (4, 11), (11, 18)]:  # rows = N * OH = 18, split unevenly
        run(isa, x, w, None, (1, 1), (1, 1), (1, 1, 1, 1), r0, r1, y)
        assert np.isnan(y.reshape(18, -1)[r1:]).all()
    assert np.array_equal(y, full)
