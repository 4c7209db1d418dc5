"""The Winograd F(2x2, 3x3) tile transforms (csrc/kernels/f32-winograd): the scalar
reference computes B^T d B and A^T M A (+ bias, + residual, ReLU) with numpy's float32
operations in the same order, bit for bit, and every ISA gives the reference's bits, over
channel counts around the vector widths, NaN, inf, signed zeros, outputs outside the image
and the ReLU rule (x > 0 or NaN keeps x; the rest gives +0, as the Conv op's ReLU)."""

import numpy as np
import pytest

import lowbit
from lowbit import _core

from conftest import ISAS

CHANNELS = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 130]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def _special(rng, a):
    """Some NaN, +-inf, +-0 and huge values among a's entries (in place)."""
    f = a.reshape(-1)
    for v, k in ((np.nan, 3), (np.inf, 2), (-np.inf, 2), (0.0, 4), (-0.0, 4), (3e38, 2), (-3e38, 2)):
        f[rng.integers(0, f.size, k)] = v
    return a


def numpy_input(d):
    D = d.reshape(4, 4, -1)  # D[r, c] = pixel (r, c)
    t = np.stack([D[0] - D[2], D[1] + D[2], D[2] - D[1], D[1] - D[3]])  # t[i, j]
    v = np.empty_like(d)
    for i in range(4):
        v[4 * i + 0] = t[i, 0] - t[i, 2]
        v[4 * i + 1] = t[i, 1] + t[i, 2]
        v[4 * i + 2] = t[i, 2] - t[i, 1]
        v[4 * i + 3] = t[i, 1] - t[i, 3]
    return v


def numpy_output(m, y, bias, res, relu, outside):
    M = m.reshape(4, 4, -1)  # M[i, j] = m[4i + j]
    t = [M[0] + M[1] + M[2], M[1] - M[2] - M[3]]  # t[i][j]: rows of A^T M
    b = bias if bias is not None else np.zeros(m.shape[1], np.float32)
    y = y.copy()
    for i in range(2):
        o = [t[i][0] + t[i][1] + t[i][2] + b, t[i][1] - t[i][2] - t[i][3] + b]
        for j in range(2):
            p = 2 * i + j
            if (outside >> p) & 1:
                continue
            r = o[j] + res[p] if res is not None else o[j]
            if relu:
                with np.errstate(invalid="ignore"):
                    r = np.where((r > 0) | np.isnan(r), r, np.float32(0))
            y[p] = r
    return y


def test_input_transform_is_bt_d_b():
    """The definition itself: V = B^T d B per channel, against float64 matrices."""
    BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
    d = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)
    v = np.zeros_like(d)
    _core.f32_wino_input("scalar", d, v)
    for ch in range(5):
        want = BT @ d[:, ch].reshape(4, 4).astype(np.float64) @ BT.T
        np.testing.assert_allclose(v[:, ch].reshape(4, 4), want, rtol=1e-6, atol=1e-6)


def test_output_transform_is_at_m_a():
    AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
    m = np.random.default_rng(1).standard_normal((16, 5)).astype(np.float32)
    y = np.zeros((4, 5), np.float32)
    _core.f32_wino_output("scalar", m, y)
    for ch in range(5):
        want = AT @ m[:, ch].reshape(4, 4).astype(np.float64) @ AT.T
        np.testing.assert_allclose(y[:, ch].reshape(2, 2), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("C", CHANNELS)
def test_input_matches_reference(isa, C):
    rng = np.random.default_rng(C)
    d = _special(rng, rng.standard_normal((16, C)).astype(np.float32) * 10)
    want = np.full((16, C), 7.0, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        _core.f32_wino_input("scalar", d, want)
        assert np.array_equal(_bits(want), _bits(numpy_input(d)))
    got = np.full((16, C), 7.0, np.float32)
    _core.f32_wino_input(isa, d, got)
    assert np.array_equal(_bits(got), _bits(want)), isa


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("C", CHANNELS)
def test_output_matches_reference(isa, C):
    rng = np.random.default_rng(100 + C)
    m = _special(rng, rng.standard_normal((16, C)).astype(np.float32))
    m[:, rng.integers(0, C, 2)] = -0.0  # outputs of -0 before the bias (-0 + 0 = +0) and the ReLU
    bias = _special(rng, rng.standard_normal(C).astype(np.float32))
    res = _special(rng, rng.standard_normal((4, C)).astype(np.float32))
    for case, (b, r, relu, outside) in enumerate([(None, None, False, 0), (bias, None, False, 0), (bias, res, False, 0),
                                                  (bias, res, True, 0), (None, res, True, 0b1010),
                                                  (None, None, True, 0b0110), (bias, None, True, 0b1111)]):
        y0 = np.full((4, C), 7.0, np.float32)
        want = y0.copy()
        with np.errstate(invalid="ignore", over="ignore"):
            _core.f32_wino_output("scalar", m, want, b, r, relu, outside)
            assert np.array_equal(_bits(want), _bits(numpy_output(m, y0, b, r, relu, outside))), case
        got = y0.copy()
        _core.f32_wino_output(isa, m, got, b, r, relu, outside)
        assert np.array_equal(_bits(got), _bits(want)), (isa, case)


def test_relu_rule():
    """+0 for -0, 0 and negatives (and -inf); NaN and positives kept."""
    m = np.zeros((16, 6), np.float32)
    m[0] = [-0.0, 0.0, -1.0, np.nan, 2.5, -np.inf]  # y[0] = m[0] + m[1] + m[2] + ... (only m[0] nonzero)
    for isa in ISAS:
        y = np.full((4, 6), 7.0, np.float32)
        _core.f32_wino_output(isa, m, y, None, None, True, 0b1110)
        assert np.array_equal(_bits(y[0]), _bits(np.array([0.0, 0.0, 0.0, np.nan, 2.5, 0.0], np.float32))), isa
        assert (y[1:] == 7.0).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[16, C\]"):
        _core.f32_wino_input("scalar", np.zeros((15, 4), np.float32), np.zeros((16, 4), np.float32))
    with pytest.raises(ValueError, match="bias must be"):
        _core.f32_wino_output("scalar", np.zeros((16, 4), np.float32), np.zeros((4, 4), np.float32), np.zeros(3, np.float32))


def test_tables_name_their_winograd():
    for isa in ISAS:
        name = _core.kernel_names(isa)["f32-winograd"]
        tag = "scalar" if isa in ("scalar", "neondot") else "avx512" if isa == "amx" else isa.replace("vnni", "")
        assert name == f"f32_wino_f2k3__{tag}", (isa, name)
    assert "f32-winograd" in lowbit.cpu_info()["kernels"]
