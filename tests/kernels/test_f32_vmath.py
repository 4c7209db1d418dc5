"""f32-vmath row kernels (softmax, GELU): every ISA this CPU runs agrees with the
exact value within the bounds stated in docs/kernels.md, measured in ulps.

- GELU: the reference (ref.cc) is 0.5 x erfc(-x/sqrt 2) in double, rounded once
  (<= 1 ulp). The vector kernels (AVX2, AVX-512: the same polynomial erfc and exp)
  are within 8 ulp for x >= 0; for x < 0 the rounding of the exponent argument
  -u^2 (u = |x|/sqrt 2) adds ~u^2 * 2^-24 relative error: 16 + 2 x^2 ulp.
- Softmax: exact means the softmax of the float32 differences x - max(x)
  (every implementation rounds those first). Vector kernels sum in 16 lanes and
  stay within 8 ulp up to n = 1024; the scalar reference sums sequentially,
  within 4 + n/32 ulp.
"""

import numpy as np
import pytest
import scipy.special

from lowbit import _core

from conftest import ISAS

VECTOR_ISAS = [i for i in ISAS if i != "scalar"]


def ordered(a):
    """float32 -> integers in the same order, one step per representable float."""
    i = np.ascontiguousarray(a, np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def ulps(a, b):
    return np.abs(ordered(a) - ordered(b))


def gelu_exact(x):
    xd = x.astype(np.float64)
    return (0.5 * xd * scipy.special.erfc(-xd / np.sqrt(2.0))).astype(np.float32)


def gelu_bound(isa, x):
    if isa == "scalar":
        return np.ones_like(x, dtype=np.float64)
    return np.where(x >= 0, 8.0, 16.0 + 2.0 * x.astype(np.float64) ** 2)


def sampled_floats(step):
    """Every `step`-th float32 bit pattern, finite values only (both signs, subnormals included)."""
    x = np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return x[np.isfinite(x)]


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_within_bound_over_sampled_floats(isa):
    x = sampled_floats(1021)  # ~4.2 M values spread over all exponents
    y = _core.f32_row(isa, "gelu", x)
    u = ulps(y, gelu_exact(x))
    bad = u > gelu_bound(isa, x)
    assert not bad.any(), f"{isa}: {bad.sum()} values beyond the bound, e.g. x={x[bad][:3]} ulps={u[bad][:3]}"


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_dense_core_range(isa):
    # every float in [-4, 4] spaced 2^-16 apart: where transformer activations live
    x = np.arange(-4.0, 4.0, 2.0**-16, dtype=np.float64).astype(np.float32)
    u = ulps(_core.f32_row(isa, "gelu", x), gelu_exact(x))
    assert (u <= gelu_bound(isa, x)).all(), (isa, u.max())


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_special_values_and_tails(isa):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, -3.4e38, 20.0, -20.0, -200.0],
                 np.float32)
    y = _core.f32_row(isa, "gelu", x)
    assert y[0] == 0 and y[1] == 0
    assert np.isnan(y[4])
    assert y[7] == np.float32(3.4e38) and y[9] == np.float32(20.0)
    assert -1e-30 < y[10] <= 0 and -1e-30 < y[11] <= 0 and -1e-30 < y[8] <= 0
    assert y[2] == np.inf and np.isnan(y[3])  # -inf * erfc(inf) = -inf * 0


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", list(range(1, 34)) + [63, 64, 65, 127, 128, 129, 384, 1000])
def test_gelu_lengths_and_in_place(isa, n):
    # every tail length, and x == y (the ops run it in place)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 3
    y = _core.f32_row(isa, "gelu", x)
    assert np.array_equal(y, _core.f32_row(isa, "gelu", x, inplace=True))
    assert (ulps(y, gelu_exact(x)) <= gelu_bound(isa, x)).all()


def softmax_exact(x):
    d = (x - x.max()).astype(np.float64)  # the float32 differences, as every implementation rounds them
    e = np.exp(d)
    return (e / e.sum()).astype(np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", list(range(1, 40)) + [63, 64, 65, 127, 128, 129, 255, 256, 384, 1000, 1024])
def test_softmax_within_bound(isa, n):
    rng = np.random.default_rng(1000 + n)
    bound = 8 if isa != "scalar" else 4 + n / 32
    for scale in (0.01, 1.0, 8.0, 40.0):
        x = (rng.standard_normal(n) * scale).astype(np.float32)
        y = _core.f32_row(isa, "softmax", x)
        want = softmax_exact(x)
        normal = want >= np.finfo(np.float32).tiny
        assert ulps(y[normal], want[normal]).max(initial=0) <= bound, (isa, n, scale)
        # outputs that underflow into the subnormals: within a couple of subnormal steps
        assert np.abs(y[~normal] - want[~normal]).max(initial=0) <= 3e-45, (isa, n, scale)
        assert np.array_equal(y, _core.f32_row(isa, "softmax", x, inplace=True))


@pytest.mark.parametrize("isa", ISAS)
def test_softmax_special_rows(isa):
    f = lambda v: _core.f32_row(isa, "softmax", np.array(v, np.float32))  # noqa: E731
    assert np.array_equal(f([1.0, np.nan, 2.0]), np.full(3, np.nan, np.float32), equal_nan=True)
    assert np.isnan(f([-np.inf] * 3)).all()  # all -inf: 0/0, as onnxruntime gives
    np.testing.assert_array_equal(f([-np.inf, 0.0, -np.inf]), [0, 1, 0])
    assert np.isnan(f([np.inf, 0.0])).all()  # inf - inf is NaN, so is the sum
    y = f([-20.0, -200.0, 88.0, 88.0])  # exp arguments below -104 (0) and at the top of the range
    assert y[1] == 0 and y[0] == 0 and y[2] == y[3] == np.float32(0.5)
    y = f(np.full(37, 3.0))
    assert (ulps(y, np.full(37, 1 / 37, np.float32)) <= 2).all()


@pytest.mark.parametrize("isa", VECTOR_ISAS)
def test_vector_softmax_exp_across_the_range(isa):
    # softmax([0, d]) = [1, e^d] / (1 + e^d): exp's accuracy for every d down to the underflow
    d = np.linspace(-104, 0, 20001).astype(np.float32)
    x = np.stack([np.zeros_like(d), d], 1)
    y = np.stack([_core.f32_row(isa, "softmax", r) for r in x])[:, 1]
    dd = d.astype(np.float64)
    want = (np.exp(dd) / (1 + np.exp(dd))).astype(np.float32)
    normal = want >= np.finfo(np.float32).tiny
    assert ulps(y[normal], want[normal]).max() <= 4
    assert np.abs(y[~normal] - want[~normal]).max() <= 2e-45


@pytest.mark.parametrize("isa", VECTOR_ISAS)
@pytest.mark.parametrize("n", [2, 15, 16, 17, 128, 129])
def test_softmax_fast_exp_rows_match_the_full_range_path(isa, n):
    # A row whose exp arguments x - max all lie in [-87, 0] may take the AVX2 kernel's
    # unclamped exp (one multiply by 2^n); an extra -1000 (exp 0: every lane's sum is
    # unchanged) sends the same row through the clamped, two-step one. Same bits either way,
    # down to arguments at the edge of the range (and rows just past it).
    rng = np.random.default_rng(n)
    for lo in (-1.0, -40.0, -86.9, -87.0, -87.1, -95.0):
        x = rng.uniform(lo, 0.0, n).astype(np.float32)
        x[0] = 0.0
        x[-1] = np.float32(lo)
        y = _core.f32_row(isa, "softmax", x)
        y_full = _core.f32_row(isa, "softmax", np.append(x, np.float32(-1000.0)))
        assert y_full[-1] == 0
        assert np.array_equal(y.view(np.int32), y_full[:-1].view(np.int32)), (isa, n, lo)


@pytest.mark.parametrize("isa", VECTOR_ISAS)
def test_gelu_fast_exp_blocks_match_the_full_range_path(isa):
    # GELU's exp arguments stay >= -87 for |x| <= 12 (AVX2: blocks of 64 values then take the
    # unclamped exp); x = -14 (argument ~ -98) in a block sends it through the clamped one.
    # Every other value keeps its bits.
    x = np.random.default_rng(3).uniform(-12.5, 12.5, 64 * 40 + 17).astype(np.float32)
    y = _core.f32_row(isa, "gelu", x)
    x2 = x.copy()
    x2[5::64] = -14.0
    y2 = _core.f32_row(isa, "gelu", x2)
    keep = x2 == x
    assert np.array_equal(y[keep].view(np.int32), y2[keep].view(np.int32))
    assert (ulps(y2, gelu_exact(x2)) <= gelu_bound(isa, x2)).all()


def _pre_numpy(x, scale_op, scale, add):
    """The unfused graph's Mul/Div and Add in float32 (each one rounded, as the kernels do)."""
    t = x.copy()
    if scale_op == 1:
        t = t * np.float32(scale)
    elif scale_op == 2:
        t = t / np.float32(scale)
    if add is not None:
        t = t + add
    return t.astype(np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 127, 128, 129, 384])
@pytest.mark.parametrize("scale_op", [0, 1, 2])
@pytest.mark.parametrize("add_kind", ["none", "row", "bcast"])
def test_softmax_pre_is_softmax_of_the_preprocessed_row_bit_for_bit(isa, n, scale_op, add_kind):
    # the Attention op's fused scale + mask + softmax: the same bits as the three steps
    # run one after the other (numpy for the first two, the ISA's softmax_row for the last)
    rng = np.random.default_rng(7 * n + scale_op)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    scale = np.float32(0.1767767) if scale_op == 1 else np.float32(5.656854)
    add = {"none": None,
           "row": np.where(rng.random(n) < 0.3, np.float32(-10000.0), np.float32(0.0)).astype(np.float32),
           "bcast": np.array([-3.5], np.float32)}[add_kind]
    want = _core.f32_row(isa, "softmax", _pre_numpy(x, scale_op, scale, add))
    got = _core.f32_softmax_pre(isa, x, scale_op, float(scale), add)
    assert np.array_equal(got.view(np.int32), want.view(np.int32)), (isa, n, scale_op, add_kind)
    assert np.array_equal(_core.f32_softmax_pre(isa, x, scale_op, float(scale), add, inplace=True).view(np.int32),
                          want.view(np.int32))
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_softmax_pre_division_is_the_correctly_rounded_quotient(isa):
    """scale_op 2 divides by the scale; the AVX-512 kernel does it as x * (1/c) plus one fma
    correction (Markstein) where the operands allow and divides elsewhere. Rows whose quotients
    land in [-8, 8] make the softmax sensitive to every quotient's last bit; divisors with
    all-ones significands, powers of two, tiny and huge ones; rows with lanes outside the fast
    range (0, subnormal, 2^-41, 2^41, inf) next to ordinary ones, in whole and partial vectors."""
    rng = np.random.default_rng(5)
    ones = [np.float32(v) for v in (1.99999988, 3.99999976, 0.999999940, 15.9999990, 1.00000012)]
    scales = ones + [np.float32(v) for v in (5.656854, 8.0, 3.0, 0.1, 11.3137085, 1e-6, 2e6, 2.0 ** -20, 2.0 ** 20, 3e-7, 5e6)]
    scales += [np.float32(v) for v in np.exp(rng.uniform(-10, 10, 12))]
    for c in scales:
        for n in (16, 48, 128, 37):
            q = rng.uniform(-8, 8, n)
            x = (q * np.float64(c)).astype(np.float32)
            x = np.nextafter(x, np.where(rng.random(n) < 0.5, np.inf, -np.inf).astype(np.float32)) if rng.random() < 0.5 else x
            rows = [x]
            y = x.copy()
            y[rng.integers(0, n)] = rng.choice(np.array([0.0, 1e-40, 2.0 ** -41, 2.0 ** 41, -2.0 ** 41], np.float32))
            rows.append(y)
            for row in rows:
                want = _core.f32_row(isa, "softmax", _pre_numpy(row, 2, c, None))
                got = _core.f32_softmax_pre(isa, row, 2, float(c), None)
                assert np.array_equal(got.view(np.int32), want.view(np.int32)), (isa, float(c), n)


@pytest.mark.parametrize("isa", ISAS)
def test_softmax_pre_special_rows(isa):
    # infinities and NaN from the scale or the mask behave as in the unfused steps: a fully
    # masked row is NaN (0/0, as onnxruntime gives), any NaN poisons the row, x/0 is inf
    cases = [([1.0, 2.0, 3.0], 0, 1.0, np.full(3, -np.inf, np.float32)),
             ([1.0, 2.0, 3.0], 1, 1.0, np.array([0.0, np.nan, 0.0], np.float32)),
             ([5.0, 1.0, 7.0], 2, 0.0, np.array([0.0, -np.inf, -np.inf], np.float32)),  # 1/0 - inf = NaN
             ([5.0, -1.0, 7.0], 2, 0.0, np.array([0.0, 0.0, -np.inf], np.float32)),  # [inf, -inf, NaN]
             ([0.0] * 9, 2, 0.0, None),  # 0/0 in every lane, the partial vector's included
             ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 1, 0.0,
              np.array([0.0, -1.0, -np.inf, 0.0, 0.0, 0, 0, 0, -np.inf], np.float32))]
    for x, op, s, a in cases:
        x = np.array(x, np.float32)
        got = _core.f32_softmax_pre(isa, x, op, s, a)
        want = _core.f32_row(isa, "softmax", _pre_numpy(x, op, s, a))
        assert np.array_equal(got, want, equal_nan=True), (isa, x, op, s, a, got, want)
    assert np.isnan(_core.f32_softmax_pre(isa, np.array([1.0, 2.0], np.float32), 0, 1.0,
                                          np.full(2, -np.inf, np.float32))).all()
    y = _core.f32_softmax_pre(isa, np.arange(9, dtype=np.float32), 1, 0.0,
                              np.array([0, -1, -np.inf, 0, 0, 0, 0, 0, -np.inf], np.float32))
    assert y[2] == 0 and y[8] == 0 and abs(y[0] - 1 / (6 + np.exp(-1.0))) < 1e-6


def _layernorm_spec(x, skip, g, b, eps):
    """The reference's float32 operations in numpy (f32_vmath.h): 32 lane sums folded
    (j, j + 16), then (j, j + 8), then 8 values and the tail in order."""
    s = x if skip is None else (x + skip).astype(np.float32)
    n = s.shape[0]
    full = n - n % 32

    def fold(vals):
        lane = np.zeros(32, np.float32)
        for k in range(0, full, 32):
            lane = (lane + vals[k:k + 32]).astype(np.float32)
        u = (lane[:16] + lane[16:]).astype(np.float32)
        t = (u[:8] + u[8:]).astype(np.float32)
        acc = np.float32(0)
        for v in list(t) + list(vals[full:]):
            acc = np.float32(acc + v)
        return acc

    mean = np.float32(fold(s) / np.float32(n))
    d = (s - mean).astype(np.float32)
    var = fold((d * d).astype(np.float32))
    istd = np.float32(np.float32(1) / np.sqrt(np.float32(var / np.float32(n) + np.float32(eps))))
    y = (((s - mean).astype(np.float32) * istd).astype(np.float32) * g).astype(np.float32)
    if b is not None:
        y = (y + b).astype(np.float32)
    return y, mean, istd


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 384, 1000, 1536])
def test_layernorm_every_isa_has_the_reference_bits(isa, n):
    # every ISA computes the float operations f32_vmath.h specifies: the same bits as the
    # numpy model of them, with and without skip / beta, in place or not; mean and istd too
    rng = np.random.default_rng(n)
    rows = 3
    x = (rng.standard_normal((rows, n)) * 3 + 0.5).astype(np.float32)
    skip = rng.standard_normal((rows, n)).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    for sk in (None, skip):
        for bb in (None, b):
            y, mean, istd = _core.f32_layernorm(isa, x, sk, g, bb, 1e-5)
            for r in range(rows):
                wy, wm, wi = _layernorm_spec(x[r], None if sk is None else sk[r], g, bb, 1e-5)
                assert np.array_equal(y[r].view(np.int32), wy.view(np.int32)), (isa, n, sk is None, bb is None, r)
                assert mean[r] == wm and istd[r] == wi
            y2, _, _ = _core.f32_layernorm(isa, x, sk, g, bb, 1e-5, inplace=True)
            assert np.array_equal(y2.view(np.int32), y.view(np.int32))
    # and the math: the float64 normalization of x + skip, within float32 rounding
    s = (x + skip).astype(np.float64)
    mu = s.mean(1, keepdims=True)
    want = (s - mu) / np.sqrt(((s - mu) ** 2).mean(1, keepdims=True) + 1e-5) * g + b
    y, _, _ = _core.f32_layernorm(isa, x, skip, g, b, 1e-5)
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("isa", ISAS)
def test_layernorm_special_rows(isa):
    # a constant row is 0 * istd (istd = 1/sqrt(eps)) + beta; an inf or NaN poisons its row
    # only; the other rows are unaffected
    n = 40
    g = np.full(n, 2.0, np.float32)
    b = np.full(n, 0.25, np.float32)
    x = np.ones((4, n), np.float32)
    x[1, 5] = np.inf
    x[2, 39] = np.nan  # in the tail
    x[3] = np.arange(n, dtype=np.float32)
    y, mean, istd = _core.f32_layernorm(isa, x, None, g, b, 1e-5)
    assert np.all(y[0] == 0.25) and mean[0] == 1 and istd[0] == np.float32(1 / np.sqrt(np.float32(1e-5)))
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    want = _core.f32_layernorm("scalar", x[3:], None, g, b, 1e-5)[0]
    assert np.array_equal(y[3:], want)
