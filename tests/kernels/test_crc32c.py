import zlib

import numpy as np
import pytest

from lowbit import _core

from conftest import ISAS

KNOWN = [(b"", 0x00000000), (b"123456789", 0xE3069283), (b"a", 0xC1D04330), (bytes(32), 0x8A9136AA),
         (b"\xff" * 32, 0x62A8AB43)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("data,crc", KNOWN)
def test_known_vectors(isa, data, crc):
    assert _core.crc32c_isa(isa, data) == crc


def _table_crc(data: bytes) -> int:
    # independent bitwise implementation in Python (reflected 0x82F63B78)
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return c ^ 0xFFFFFFFF


@pytest.mark.parametrize("isa", ISAS)
def test_agrees_with_python_bitwise(isa):
    rng = np.random.default_rng(0)
    for n in [1, 7, 8, 9, 63, 64, 65, 1000]:
        data = rng.bytes(n)
        assert _core.crc32c_isa(isa, data) == _table_crc(data)


@pytest.mark.parametrize("isa", ISAS)
def test_isas_agree_on_lengths_and_alignments(isa):
    rng = np.random.default_rng(1)
    buf = rng.bytes(3 * 8192 * 4 + 200)
    mv = memoryview(buf)
    # around the 3-stream block boundary (3 x 8192 bytes) and unaligned starts
    for start in [0, 1, 3, 7, 8]:
        for n in [0, 1, 24575, 24576, 24577, 3 * 24576 + 5, 2 * 24576 - 1]:
            chunk = mv[start:start + n]
            assert _core.crc32c_isa(isa, chunk) == _core.crc32c_isa("scalar", chunk), (start, n)


def test_incremental_equals_whole():
    rng = np.random.default_rng(2)
    data = rng.bytes(100_000)
    c = 0
    for i in range(0, len(data), 7777):
        c = _core.crc32c(data[i:i + 7777], c)
    assert c == _core.crc32c(data)


def test_detects_single_bit_flips():
    data = bytearray(np.random.default_rng(3).bytes(50_000))
    base = _core.crc32c(bytes(data))
    for pos in [0, 1, 24575, 24576, 49999]:
        data[pos] ^= 0x10
        assert _core.crc32c(bytes(data)) != base
        data[pos] ^= 0x10


def test_differs_from_plain_crc32():
    # CRC32C (Castagnoli) is not zlib's CRC32 (IEEE): make sure we compute the former
    assert _core.crc32c(b"123456789") != zlib.crc32(b"123456789")
