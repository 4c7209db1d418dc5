"""The benches' probes (memread.h, qs8_dotpeak.h): every ISA's plain read returns numpy's sum of
the buffer's 64-bit words, and every ISA's int8 MAC probe returns rounds * 1024 * a * b."""

import numpy as np
import pytest

from lowbit import _core

from conftest import ISAS


def _words_sum(b: np.ndarray) -> int:
    n = b.nbytes // 8 * 8
    return int(np.frombuffer(b.tobytes()[:n], dtype="<u8").sum(dtype=np.uint64))


@pytest.mark.parametrize("isa", ISAS)
def test_memread_sum_is_the_sum_of_words(isa):
    rng = np.random.default_rng(3)
    buf = rng.integers(0, 256, 70_000, dtype=np.uint8)
    for start in (0, 1, 5, 8):
        for n in (0, 7, 8, 9, 63, 64, 127, 128, 255, 256, 257, 1000, 65_536):
            view = buf[start:start + n]
            assert _core.memread_sum(view, isa) == _words_sum(view), (start, n)
    # the sum wraps mod 2^64 (every word all ones: n words sum to -n)
    ones = np.full(1000, 0xFF, np.uint8)
    assert _core.memread_sum(ones, isa) == (2**64 - 125) % 2**64


@pytest.mark.parametrize("isa", ISAS)
def test_memread_sum_reads_float_arrays_and_refuses_strided_views(isa):
    x = np.arange(4096, dtype=np.float64).reshape(64, 64)
    assert _core.memread_sum(x, isa) == _words_sum(x)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.memread_sum(x[:, ::2], isa)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("a,b", [(1, 1), (0, 7), (127, 127), (127, -127), (3, -2), (100, 1)])
def test_qs8_dotpeak_sums_its_products(isa, a, b):
    for rounds in (0, 1, 2, 33):
        assert _core.qs8_dotpeak(isa, rounds, a, b) == rounds * 1024 * a * b


def test_qs8_dotpeak_refuses_operands_it_cannot_sum_exactly():
    with pytest.raises(ValueError, match="0 <= a <= 127, got 128"):
        _core.qs8_dotpeak("scalar", 1, 128, 1)
    with pytest.raises(ValueError, match="-127 <= b <= 127, got -128"):
        _core.qs8_dotpeak("scalar", 1, 1, -128)
    with pytest.raises(ValueError, match="rounds >= 0"):
        _core.qs8_dotpeak("scalar", -1)
    # the largest round count whose lanes cannot wrap is taken, one more is refused
    limit = (2**31 - 1) // (32 * 127 * 127)
    assert _core.qs8_dotpeak("scalar", limit, 127, 127) == limit * 1024 * 127 * 127
    with pytest.raises(ValueError, match="2\\^31 - 1"):
        _core.qs8_dotpeak("scalar", limit + 1, 127, 127)
