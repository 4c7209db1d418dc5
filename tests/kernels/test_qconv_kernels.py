"""The int8 CNN kernels: qs8-requant (float GEMM block -> int8 codes, with clamp and
residual) and qs8-dwconv (direct int8 depthwise convolution). Each scalar reference
is checked against a numpy version of its definition (qs8_requant.h, qs8_dwconv.h),
and every SIMD path this machine runs against the reference, bit for bit."""

import numpy as np
import pytest

from lowbit import _core
from conftest import ISAS

SIMD = [i for i in ISAS if i != "scalar"]
f32 = np.float32


def requant_def(y, mult, zp, lo, hi, r=None, r_zp=0, r_mult=0.0, two_step=False, mid_zp=0, mid_mult=1.0):
    v = y.astype(f32) * mult.astype(f32)
    if r is not None:
        if two_step:
            v = np.minimum(np.maximum(v, f32(-128 - mid_zp)), f32(127 - mid_zp))
            v = np.rint(v).astype(f32) * f32(mid_mult)
        v = v + (r.astype(np.int32) - r_zp).astype(f32) * f32(r_mult)
    v = np.minimum(np.maximum(v, f32(lo - zp)), f32(hi - zp))
    return (np.rint(v).astype(np.int32) + zp).astype(np.int8)


def _requant_cases():
    rng = np.random.default_rng(0)
    for M, N in [(1, 1), (3, 7), (5, 8), (4, 31), (2, 32), (7, 33), (9, 64), (3, 100), (96, 77)]:
        # integer-valued sums (what the GEMM produces), some exact halves after scaling, extremes
        y = rng.integers(-40000, 40000, (M, N)).astype(f32)
        y.flat[:: 7] = rng.choice([0.5, 1.5, 2.5, -0.5, -2.5, 1e9, -1e9], size=y.flat[:: 7].shape)
        mult = (rng.random(N) * 0.01 + 1e-4).astype(f32)
        mult[:: 5] = 1.0  # exact halves stay halves: round half to even is exercised
        r = rng.integers(-128, 128, (M, N)).astype(np.int8)
        yield M, N, y, mult, r


@pytest.mark.parametrize("mode", ["plain", "relu", "residual", "two_step"])
def test_requant_reference_and_isas(mode):
    for M, N, y, mult, r in _requant_cases():
        zp, lo, hi = (-3, -128, 127) if mode == "plain" else (-128, -128, 100) if mode == "relu" else (5, -100, 127)
        kw = {}
        if mode in ("residual", "two_step"):
            kw = dict(residual=r, r_zp=-7, r_mult=0.37, two_step=mode == "two_step", mid_zp=11, mid_mult=1.3)
        want = requant_def(y, mult, zp, lo, hi, kw.get("residual"), kw.get("r_zp", 0), kw.get("r_mult", 0.0),
                           kw.get("two_step", False), kw.get("mid_zp", 0), kw.get("mid_mult", 1.0))
        got = _core.qs8_requant("scalar", y, mult, zp, lo, hi, **kw)
        np.testing.assert_array_equal(got, want, err_msg=f"scalar {M}x{N} {mode}")
        assert got.min() >= lo and got.max() <= hi
        for isa in SIMD:
            np.testing.assert_array_equal(_core.qs8_requant(isa, y, mult, zp, lo, hi, **kw), want,
                                          err_msg=f"{isa} {M}x{N} {mode}")


def dwconv_def(x, w, bias, mult, strides, dil, pads, oh, ow, x_zp, zp, lo, hi):
    n, h, wd, c = x.shape
    kh, kw, _ = w.shape
    acc = np.zeros((n, oh, ow, c), np.int64) + (0 if bias is None else bias.astype(np.int64))
    xi = x.astype(np.int64) - x_zp
    for ky in range(kh):
        for kx in range(kw):
            for oy in range(oh):
                iy = oy * strides[0] - pads[0] + ky * dil[0]
                if not 0 <= iy < h:
                    continue
                for ox in range(ow):
                    ix = ox * strides[1] - pads[1] + kx * dil[1]
                    if 0 <= ix < wd:
                        acc[:, oy, ox] += xi[:, iy, ix] * w[ky, kx]
    assert np.abs(acc).max() < 2 ** 31
    v = acc.astype(np.int32).astype(f32) * mult.astype(f32)
    v = np.minimum(np.maximum(v, f32(lo - zp)), f32(hi - zp))
    return (np.rint(v).astype(np.int32) + zp).astype(np.int8)


DW_CASES = [  # C, H, W, kh, kw, stride, dilation, pads (top, left)
    (16, 5, 5, 3, 3, 1, 1, (1, 1)), (32, 8, 7, 3, 3, 2, 1, (1, 1)), (17, 4, 6, 3, 3, 1, 1, (1, 1)),
    (1, 3, 3, 3, 3, 1, 1, (0, 0)), (48, 9, 9, 5, 5, 2, 1, (2, 2)), (33, 6, 6, 3, 3, 1, 2, (2, 2)),
    (64, 3, 4, 2, 2, 1, 1, (0, 0)), (15, 7, 5, 1, 1, 1, 1, (0, 0)), (96, 5, 5, 3, 3, 2, 1, (0, 1)),
    (31, 6, 6, 7, 7, 1, 1, (3, 3)),
]


@pytest.mark.parametrize("case", DW_CASES, ids=[f"C{c[0]}_{c[3]}x{c[4]}s{c[5]}d{c[6]}" for c in DW_CASES])
def test_dwconv_reference_and_isas(case):
    C, H, W, kh, kw, s, d, pads = case
    rng = np.random.default_rng(C * 100 + H)
    for extreme in (False, True):
        x = rng.integers(-128, 128, (2, H, W, C)).astype(np.int8)
        w = rng.integers(-127, 128, (kh, kw, C)).astype(np.int8)
        if extreme:  # the largest products: x - zp = -255 (x = -128, zp = 127), w = +-127
            x[:] = -128
            w[:] = np.where(rng.random((kh, kw, C)) < 0.5, -127, 127)
        x_zp = 127 if extreme else int(rng.integers(-20, 20))
        bias = rng.integers(-50000, 50000, C).astype(np.int32)
        mult = (rng.random(C) * 0.002 + 1e-5).astype(f32)
        oh = (H + pads[0] * 2 - ((kh - 1) * d + 1)) // s + 1
        ow = (W + pads[1] * 2 - ((kw - 1) * d + 1)) // s + 1
        zp, lo, hi = (-128, -128, 127) if extreme else (3, -120, 120)
        want = dwconv_def(x, w, bias, mult, (s, s), (d, d), pads, oh, ow, x_zp, zp, lo, hi)
        for isa in ISAS:
            got = _core.qs8_dwconv(isa, x, w, bias, mult, [s, s], [d, d], list(pads), oh, ow, x_zp, zp, lo, hi)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} extreme={extreme}")
        got = _core.qs8_dwconv("scalar", x, w, None, mult, [s, s], [d, d], list(pads), oh, ow, x_zp, zp, lo, hi)
        np.testing.assert_array_equal(got, dwconv_def(x, w, None, mult, (s, s), (d, d), pads, oh, ow, x_zp, zp, lo, hi))
        for isa in SIMD:
            np.testing.assert_array_equal(
                _core.qs8_dwconv(isa, x, w, None, mult, [s, s], [d, d], list(pads), oh, ow, x_zp, zp, lo, hi), got)


def test_kernel_names_listed():
    for isa in ISAS:
        names = _core.kernel_names(isa)
        assert names["qs8-requant"].startswith("qs8_requant__") and names["qs8-dwconv"].startswith("qs8_dwconv_nhwc")
