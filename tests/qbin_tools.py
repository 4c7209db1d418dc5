"""Helpers to craft (in)valid .qbin files: rewrite the header and fix the checksums
so that a test reaches the validation rule it targets."""

from __future__ import annotations

import json
import struct

from lowbit import _core
from lowbit.format import PREAMBLE_SIZE

_HEAD = struct.Struct("<8sIIQQQII12s")


def read(path):
    blob = open(path, "rb").read()
    magic, ver, flags, hlen, doff, dlen, hcrc, dcrc, res = _HEAD.unpack(blob[:60])
    header = json.loads(blob[PREAMBLE_SIZE:PREAMBLE_SIZE + hlen])
    return header, blob[doff:doff + dlen], dict(magic=magic, version=ver, flags=flags)


def write(path, header, data, *, magic=b"\x89QBIN\r\n\x1a", version=1, flags=0, header_bytes=None,
          header_len=None, data_offset=None, data_len=None, fix_crc=True, data_crc=None):
    hb = header_bytes if header_bytes is not None else json.dumps(header, separators=(",", ":")).encode()
    hl = len(hb) if header_len is None else header_len
    doff = (PREAMBLE_SIZE + len(hb) + 63) // 64 * 64
    dl = len(data) if data_len is None else data_len
    dcrc = _core.crc32c(data) if data_crc is None else data_crc
    head = _HEAD.pack(magic, version, flags, hl, doff if data_offset is None else data_offset, dl,
                      _core.crc32c(hb), dcrc, bytes(12))
    pre = head + struct.pack("<I", _core.crc32c(head) if fix_crc else 0)
    blob = pre + hb + bytes(doff - PREAMBLE_SIZE - len(hb)) + data
    open(path, "wb").write(blob)
    return blob
