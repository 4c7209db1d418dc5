"""The .qbin file: writer and validating reader (docs/format.md is the spec).

Layout: a 64-byte little-endian preamble, a UTF-8 JSON header, then the data
region; every tensor's bytes start on a 64-byte boundary. Loading maps the file
and hands the kernels views into the map: no copy, no repack.
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _core
from .errors import FormatError
from .ir import DTYPES, Graph, Node, Tensor, ValueInfo

MAGIC = b"\x89QBIN\r\n\x1a"  # PNG-style: catches text-mode mangling and 7-bit transfers
VERSION = 1
PREAMBLE_SIZE = 64
ALIGN = 64
# Preamble: magic, version, flags, header_len, data_offset, data_len,
# header_crc32c, data_crc32c, 12 reserved bytes, preamble_crc32c (of bytes 0..59).
_PREAMBLE = struct.Struct("<8sIIQQQII12sI")
assert _PREAMBLE.size == PREAMBLE_SIZE

MAX_HEADER_BYTES = 64 << 20
MAX_NAME_LEN = 1024
MAX_RANK = 8
MAX_DIM = 1 << 40
MAX_NUMEL = 1 << 48
MAX_TENSORS = 1 << 20
MAX_NODES = 1 << 20
MAX_LIST = 1 << 16  # entries in any attribute list or node input/output list

_TOP_KEYS = {"format", "version", "producer", "graph", "tensors", "metadata"}
_GRAPH_KEYS = {"inputs", "outputs", "nodes"}
_VALUE_KEYS = {"name", "dtype", "shape"}
_NODE_KEYS = {"name", "op", "inputs", "outputs", "attrs"}
_TENSOR_KEYS = {"name", "dtype", "shape", "encoding", "offset", "nbytes", "meta"}
_TENSOR_REQUIRED = _TENSOR_KEYS - {"meta"}
_NODE_REQUIRED = _NODE_KEYS - {"attrs"}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _nbytes_raw(dtype: str, shape: tuple[int, ...]) -> int:
    return _numel(shape) * DTYPES[dtype].itemsize


def _nbytes_f32_n16(dtype: str, shape: tuple[int, ...]) -> int:
    # rank 2: one matrix [K, N]; rank 3: G matrices [G, K, N] back to back (grouped convolutions)
    if dtype != "float32" or len(shape) not in (2, 3):
        raise ValueError("f32-n16 needs a float32 tensor [K, N] or [G, K, N]")
    g = shape[0] if len(shape) == 3 else 1
    k, n = shape[-2:]
    return g * ((n + 15) // 16 * 16 * k * 4)


#: Largest K of a quantized weight (keeps the int32 accumulators exact; see docs/format.md).
QUANT_MAX_K = 131072


def _weight_kn(enc: str, dtype: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if dtype != "float32" or len(shape) != 2:
        raise ValueError(f"{enc} needs a float32 tensor of rank 2 [K, N]")
    k, n = shape
    if k > QUANT_MAX_K:
        raise ValueError(f"{enc}: K = {k} is above the limit {QUANT_MAX_K}")
    return k, n


def _nbytes_qs8(dtype: str, shape: tuple[int, ...]) -> int:
    k, n = _weight_kn("qs8-n16k4", dtype, shape)  # qs7-n16k4: the same bytes, codes in [-63, 63]
    return (n + 15) // 16 * 16 * ((k + 3) // 4 * 4 + 8)


def _nbytes_q4(group: int, table: bool, asym: bool):
    name = f"q4t-g{group}-n16k8" if table else f"q4-g{group}-{'asym' if asym else 'sym'}-n16k8"

    def size(dtype: str, shape: tuple[int, ...]) -> int:
        k, n = _weight_kn(name, dtype, shape)
        p = (n + 15) // 16
        kg = (k + group - 1) // group * group
        ng = kg // group
        return (64 if table else 0) + p * kg * 8 + p * ng * 32 + (p * ng * 16 if asym else 0)

    return name, size


#: Known encodings: name -> bytes needed for (dtype, logical shape).
ENCODINGS = {"raw": _nbytes_raw, "f32-n16": _nbytes_f32_n16, "qs8-n16k4": _nbytes_qs8, "qs7-n16k4": _nbytes_qs8}
for _g in (32, 64, 128):
    for _table, _asym in ((False, False), (False, True), (True, False)):
        _name, _fn = _nbytes_q4(_g, _table, _asym)
        ENCODINGS[_name] = _fn


def _align(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


# ---- sparse encodings: the size depends on the entry count stored in the blob's header ----

def _sell_bytes(k: int, n: int, steps: int, bk: int, vbytes: int, has_scale: bool) -> int:
    s = (n + 7) // 8
    pos = 64
    pos = _align(pos + (s + 1) * 4)             # slice pointers
    pos = _align(pos + s * 8 * 4)               # lane -> column
    pos = _align(pos + (s * 8 * 4 if has_scale else 0))
    pos = _align(pos + steps * 8 * 2)           # u16 indices
    return _align(pos + steps * 8 * bk * vbytes)


def _k16_bytes(k: int, n: int, cells: int) -> int:
    g = (n + 7) // 8
    pos = _align(64 + (g + 1) * 4)
    pos = _align(pos + g * 8 * 4)
    pos = _align(pos + cells * 2)
    pos = _align(pos + cells * 32)
    return _align(pos + cells * 32)


def _sparse_range(enc: str, dtype: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if dtype != "float32" or len(shape) != 2:
        raise ValueError(f"{enc} needs a float32 tensor of rank 2 [K, N]")
    k, n = shape
    if enc == "f32-csr-s8":
        if k > 65536:
            raise ValueError(f"{enc}: K = {k} is above the 16-bit index limit 65536")
        return _sell_bytes(k, n, 0, 1, 4, False), _sell_bytes(k, n, (n + 7) // 8 * k, 1, 4, False)
    if k > QUANT_MAX_K:
        raise ValueError(f"{enc}: K = {k} is above the limit {QUANT_MAX_K}")
    if enc == "qs8-bsr1x4-s8":
        return _sell_bytes(k, n, 0, 4, 1, True), _sell_bytes(k, n, (n + 7) // 8 * ((k + 3) // 4), 4, 1, True)
    return _k16_bytes(k, n, 0), _k16_bytes(k, n, (n + 7) // 8 * ((k + 15) // 16) * 4)


#: Encodings whose byte count depends on the data (sparse): name -> (least, most) bytes for a
#: shape. The exact count follows from the entry count in the blob's own header, which the
#: executor checks (with every index and pointer) before it reads anything.
VARIABLE_SIZE: dict[str, Callable[[str, tuple[int, ...]], tuple[int, int]]] = {
    e: functools.partial(_sparse_range, e) for e in ("f32-csr-s8", "qs8-csr-k16", "qs8-bsr1x4-s8")}


def _least_bytes(enc: str, dtype: str, shape: tuple[int, ...]) -> int:
    return VARIABLE_SIZE[enc](dtype, shape)[0]


for _e in VARIABLE_SIZE:  # ENCODINGS lists every name; for these its size is the least one
    ENCODINGS[_e] = functools.partial(_least_bytes, _e)


def nbytes_ok(enc: str, dtype: str, shape: tuple[int, ...], nbytes: int) -> tuple[bool, str]:
    """Whether ``nbytes`` fits ``enc`` for ``shape`` (exactly, or within the sparse
    encodings' range); the second item is the expected size in words. Raises
    ValueError for a shape or dtype the encoding cannot hold."""
    if enc in VARIABLE_SIZE:
        lo, hi = VARIABLE_SIZE[enc](dtype, shape)
        return lo <= nbytes <= hi and nbytes % ALIGN == 0, f"between {lo} and {hi} bytes, a multiple of {ALIGN}"
    want = ENCODINGS[enc](dtype, shape)
    return nbytes == want, f"{want} bytes"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (tuple, np.ndarray)):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in a .qbin header")


def header_dict(graph: Graph, offsets: dict[str, int], producer: dict[str, Any]) -> dict[str, Any]:
    def vi(v: ValueInfo) -> dict[str, Any]:
        return {"name": v.name, "dtype": v.dtype, "shape": list(v.shape)}

    tensors = []
    for name, t in graph.tensors.items():
        entry = {"name": name, "dtype": t.dtype, "shape": list(t.shape), "encoding": t.encoding,
                 "offset": offsets[name], "nbytes": t.nbytes}
        if t.meta:
            entry["meta"] = t.meta
        tensors.append(entry)
    return {
        "format": "lowbit.qbin",
        "version": VERSION,
        "producer": producer,
        "graph": {
            "inputs": [vi(v) for v in graph.inputs],
            "outputs": [vi(v) for v in graph.outputs],
            "nodes": [{"name": n.name, "op": n.op, "inputs": n.inputs, "outputs": n.outputs, "attrs": n.attrs}
                      for n in graph.nodes],
        },
        "tensors": tensors,
        "metadata": graph.metadata,
    }


def save(graph: Graph, path: str | os.PathLike, producer: dict[str, Any] | None = None) -> int:
    """Writes ``graph`` to ``path`` (atomically: a temp file renamed into place).
    The bytes depend only on the graph and producer. Returns the file size."""
    from . import __version__

    for name, t in graph.tensors.items():
        if t.encoding not in ENCODINGS:
            raise ValueError(f"tensor '{name}': unknown encoding '{t.encoding}'")
        ok, want = nbytes_ok(t.encoding, t.dtype, t.shape, t.nbytes)
        if not ok:
            raise ValueError(f"tensor '{name}': {t.nbytes} bytes, encoding {t.encoding} of {t.shape} needs {want}")
    offsets: dict[str, int] = {}
    pos = 0
    for name, t in graph.tensors.items():
        offsets[name] = pos
        pos = _align(pos + t.nbytes)
    data_len = pos
    prod = {"name": "lowbit", "version": __version__}
    prod.update(producer or {})
    header = json.dumps(header_dict(graph, offsets, prod), separators=(",", ":"), default=_json_default,
                        allow_nan=False).encode("utf-8")
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(header)} bytes, above the {MAX_HEADER_BYTES}-byte cap")
    data_offset = _align(PREAMBLE_SIZE + len(header))

    data_crc = 0
    chunks: list[tuple[int, np.ndarray]] = []
    for name, t in graph.tensors.items():
        chunks.append((offsets[name], np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)))
    # CRC over the data region including the zero padding between tensors.
    pos = 0
    zeros = bytes(ALIGN)
    for off, buf in chunks:
        if off > pos:
            data_crc = _core.crc32c(zeros[: off - pos], data_crc)
        data_crc = _core.crc32c(buf, data_crc)
        pos = off + buf.nbytes
    if data_len > pos:
        data_crc = _core.crc32c(zeros[: data_len - pos], data_crc)

    head = struct.pack("<8sIIQQQII12s", MAGIC, VERSION, 0, len(header), data_offset, data_len,
                       _core.crc32c(header), data_crc, bytes(12))
    preamble = head + struct.pack("<I", _core.crc32c(head))

    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".qbin-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(preamble)
            f.write(header)
            f.write(bytes(data_offset - PREAMBLE_SIZE - len(header)))
            pos = 0
            for off, buf in chunks:
                if off > pos:
                    f.write(bytes(off - pos))
                f.write(memoryview(buf))  # type: ignore[arg-type]  # ndarray is a buffer
                pos = off + buf.nbytes
            if data_len > pos:
                f.write(bytes(data_len - pos))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return data_offset + data_len


@dataclass
class LoadedFile:
    path: str
    graph: Graph
    header: dict[str, Any]
    mm: mmap.mmap | None
    file_size: int


def _where(where: Any) -> str:
    """A location in the header: a string, or (format, *args) formatted only when an
    error is raised (the accept path builds no strings)."""
    if isinstance(where, str):
        return where
    return where[0].format(*(_where(a) if isinstance(a, tuple) else a for a in where[1:]))


class _Validator:
    """Checks a parsed header against the rules of docs/format.md. Each check returns at
    once when the value is valid; a ``where`` tuple is formatted only for the error."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, msg: str) -> FormatError:
        return FormatError(f"{self.path}: {msg}")

    def obj(self, v: Any, keys: set[str], required: set[str], where: Any) -> dict[str, Any]:
        if type(v) is dict and v.keys() <= keys and required <= v.keys():
            return v
        if not isinstance(v, dict):
            raise self.fail(f"{_where(where)} must be an object, got {type(v).__name__}")
        extra = set(v) - keys
        if extra:
            raise self.fail(f"{_where(where)} has unknown field(s) {sorted(extra)}")
        missing = required - set(v)
        if missing:
            raise self.fail(f"{_where(where)} lacks field(s) {sorted(missing)}")
        return v

    def name(self, v: Any, where: Any, allow_empty: bool = False) -> str:
        if type(v) is str and (0 if allow_empty else 1) <= len(v) <= MAX_NAME_LEN:
            return v
        if not isinstance(v, str):
            raise self.fail(f"{_where(where)} must be a string, got {type(v).__name__}")
        if len(v) > MAX_NAME_LEN:
            raise self.fail(f"{_where(where)} is {len(v)} characters long (cap {MAX_NAME_LEN})")
        if not v and not allow_empty:
            raise self.fail(f"{_where(where)} is empty")
        return v

    def names(self, v: Any, where: Any, allow_empty: bool) -> list[str]:
        """A list of names (node inputs or outputs)."""
        lst = self.lst(v, where)
        lo = 0 if allow_empty else 1
        for x in lst:
            if type(x) is not str or not lo <= len(x) <= MAX_NAME_LEN:
                self.name(x, where, allow_empty)
        return lst

    def lst(self, v: Any, where: Any, cap: int = MAX_LIST) -> list[Any]:
        if type(v) is list and len(v) <= cap:
            return v
        if not isinstance(v, list):
            raise self.fail(f"{_where(where)} must be a list, got {type(v).__name__}")
        if len(v) > cap:
            raise self.fail(f"{_where(where)} has {len(v)} entries (cap {cap})")
        return v

    def dtype(self, v: Any, where: Any) -> str:
        if not isinstance(v, str) or v not in DTYPES:
            raise self.fail(f"{_where(where)}: unknown dtype {v!r}; expected one of {sorted(DTYPES)}")
        return v

    def int_(self, v: Any, where: Any, lo: int, hi: int) -> int:
        if type(v) is not int or not (lo <= v <= hi):  # type(True) is bool: booleans fail here
            raise self.fail(f"{_where(where)} must be an integer in [{lo}, {hi}], got {v!r}")
        return v

    def shape(self, v: Any, where: Any, symbolic: bool) -> tuple[Any, ...]:
        dims = self.lst(v, where, MAX_RANK)
        out: list[Any] = []
        for i, d in enumerate(dims):
            if type(d) is int and 0 <= d <= MAX_DIM:
                out.append(d)
            elif symbolic and (d is None or isinstance(d, str)):
                out.append(self.name(d, ("{}[{}]", where, i)) if d is not None else None)
            else:
                out.append(self.int_(d, ("{}[{}]", where, i), 0, MAX_DIM))
        if not symbolic and _numel(tuple(out)) > MAX_NUMEL:
            raise self.fail(f"{_where(where)} {tuple(out)}: shape product overflows the {MAX_NUMEL}-element cap")
        return tuple(out)

    def attrs(self, v: Any, where: Any) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(f"{_where(where)} must be an object")
        if len(v) > 64:
            raise self.fail(f"{_where(where)} has {len(v)} attributes (cap 64)")
        for k, a in v.items():
            self.name(k, ("{} key", where))
            t = type(a)
            if t is int:
                if not (-(1 << 63) <= a < (1 << 63)):
                    raise self.fail(f"{_where(where)}.{k} does not fit in 64 bits")
            elif t is bool or t is float:
                pass
            elif t is str:
                self.name(a, ("{}.{}", where, k), allow_empty=True)
            elif t is list:
                for e in self.lst(a, ("{}.{}", where, k)):
                    if type(e) is not int or not (-(1 << 63) <= e < (1 << 63)):
                        raise self.fail(f"{_where(where)}.{k} must hold 64-bit integers only")
            else:
                raise self.fail(f"{_where(where)}.{k} has unsupported type {type(a).__name__}")
        return v


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return d


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in header")


def read_preamble(path: str, buf: bytes | memoryview | mmap.mmap, file_size: int) -> tuple[int, int, int, int, int]:
    """Validates the preamble; returns (header_len, data_offset, data_len, header_crc, data_crc)."""
    if file_size < PREAMBLE_SIZE:
        raise FormatError(f"{path}: truncated: the file is {file_size} bytes, a .qbin preamble alone is {PREAMBLE_SIZE}")
    magic, version, flags, header_len, data_offset, data_len, hcrc, dcrc, reserved, pcrc = _PREAMBLE.unpack(
        bytes(buf[:PREAMBLE_SIZE]))
    if magic != MAGIC:
        raise FormatError(f"{path}: not a .qbin file: magic bytes are {magic!r}, expected {MAGIC!r}")
    if version > VERSION:
        raise FormatError(f"{path}: file format version {version} is newer than this lowbit supports "
                          f"(version {VERSION}); upgrade lowbit to read it")
    # A newer version may lay out the rest of the preamble differently: say so before the checksum.
    if _core.crc32c(bytes(buf[:PREAMBLE_SIZE - 4])) != pcrc:
        raise FormatError(f"{path}: preamble checksum mismatch: the file is corrupted")
    if version < 1:
        raise FormatError(f"{path}: file format version {version} is not valid (expected {VERSION})")
    if flags != 0 or any(reserved):
        raise FormatError(f"{path}: unknown preamble flags {flags:#x} or non-zero reserved bytes")
    if header_len > MAX_HEADER_BYTES:
        raise FormatError(f"{path}: header length {header_len} exceeds the cap of {MAX_HEADER_BYTES} bytes")
    if PREAMBLE_SIZE + header_len > file_size:
        raise FormatError(f"{path}: header length {header_len} extends beyond the end of the file "
                          f"({file_size} bytes): truncated or corrupted")
    if data_offset != _align(PREAMBLE_SIZE + header_len):
        raise FormatError(f"{path}: data offset {data_offset} is not the 64-byte aligned end of the header "
                          f"({_align(PREAMBLE_SIZE + header_len)})")
    if data_offset + data_len != file_size:
        if data_offset + data_len > file_size:
            raise FormatError(f"{path}: truncated: the preamble declares {data_offset + data_len} bytes, "
                              f"the file has {file_size}")
        raise FormatError(f"{path}: {file_size - data_offset - data_len} unexpected trailing bytes after the data region")
    return header_len, data_offset, data_len, hcrc, dcrc


def parse_header(path: str, raw: bytes, data_len: int) -> tuple[Graph, dict[str, Any], dict[str, tuple[int, int]]]:
    """Parses and validates the JSON header. Returns the graph (tensors without
    data), the header, and name -> (offset, nbytes) inside the data region."""
    v = _Validator(path)
    try:
        text = raw.decode("utf-8")
        hdr = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"{path}: header is not valid UTF-8 JSON: {e}") from None
    v.obj(hdr, _TOP_KEYS, {"format", "version", "graph", "tensors"}, "header")
    if hdr["format"] != "lowbit.qbin":
        raise v.fail(f"header format is {hdr['format']!r}, expected 'lowbit.qbin'")
    if hdr["version"] != VERSION:
        raise v.fail(f"header version {hdr['version']!r} differs from the preamble's ({VERSION})")
    g = v.obj(hdr["graph"], _GRAPH_KEYS, _GRAPH_KEYS, "graph")

    tensors: dict[str, Tensor] = {}
    spans: dict[str, tuple[int, int]] = {}
    for i, t in enumerate(v.lst(hdr["tensors"], "tensors", MAX_TENSORS)):
        v.obj(t, _TENSOR_KEYS, _TENSOR_REQUIRED, ("tensors[{}]", i))
        name = v.name(t["name"], ("tensors[{}].name", i))
        if name in tensors:
            raise v.fail(f"tensor name '{name}' appears twice")
        dtype = v.dtype(t["dtype"], ("tensor '{}'", name))
        shape = v.shape(t["shape"], ("tensor '{}' shape", name), symbolic=False)
        enc = t["encoding"]
        if not isinstance(enc, str) or enc not in ENCODINGS:
            raise v.fail(f"tensor '{name}': unknown encoding {enc!r}; expected one of {sorted(ENCODINGS)}")
        off = v.int_(t["offset"], ("tensor '{}' offset", name), 0, 1 << 62)
        nbytes = v.int_(t["nbytes"], ("tensor '{}' nbytes", name), 0, 1 << 62)
        try:
            ok, want = nbytes_ok(enc, dtype, shape, nbytes)
        except ValueError as e:
            raise v.fail(f"tensor '{name}': {e}") from None
        if not ok:
            raise v.fail(f"tensor '{name}': nbytes {nbytes} does not match encoding {enc} of shape {shape} "
                         f"({want})")
        if off % ALIGN:
            raise v.fail(f"tensor '{name}': offset {off} is not {ALIGN}-byte aligned")
        if off + nbytes > data_len:
            raise v.fail(f"tensor '{name}': bytes [{off}, {off + nbytes}) lie outside the data region "
                         f"({data_len} bytes)")
        meta = t.get("meta", {})
        if not isinstance(meta, dict):
            raise v.fail(f"tensor '{name}': meta must be an object")
        spans[name] = (off, nbytes)
        tensors[name] = Tensor(name, np.empty(0, np.uint8), dtype, shape, enc, meta)
    ordered = sorted((o, n, name) for name, (o, n) in spans.items() if n > 0)
    for (o1, n1, a), (o2, _, b) in zip(ordered, ordered[1:]):
        if o1 + n1 > o2:
            raise v.fail(f"tensors '{a}' and '{b}' overlap in the data region")

    def value_infos(lst: Any, where: str) -> list[ValueInfo]:
        out = []
        for i, e in enumerate(v.lst(lst, where)):
            v.obj(e, _VALUE_KEYS, _VALUE_KEYS, ("{}[{}]", where, i))
            nm = v.name(e["name"], ("{}[{}].name", where, i))
            out.append(ValueInfo(nm, v.dtype(e["dtype"], ("{} '{}'", where, nm)),
                                 v.shape(e["shape"], ("{} '{}' shape", where, nm), symbolic=True)))
        return out

    inputs = value_infos(g["inputs"], "graph.inputs")
    outputs = value_infos(g["outputs"], "graph.outputs")
    known = set(_core.known_ops())
    nodes: list[Node] = []
    defined = {i.name for i in inputs} | set(tensors)
    if len(defined) != len(inputs) + len(tensors):
        raise v.fail("a graph input has the same name as another input or a tensor")
    for i, n in enumerate(v.lst(g["nodes"], "graph.nodes", MAX_NODES)):
        v.obj(n, _NODE_KEYS, _NODE_REQUIRED, ("graph.nodes[{}]", i))
        nm = v.name(n["name"], ("graph.nodes[{}].name", i), allow_empty=True)
        op = v.name(n["op"], ("graph.nodes[{}].op", i))
        if op not in known:
            raise v.fail(f"node '{nm}': unknown op {op!r} (written by a newer lowbit?)")
        ins = list(v.names(n["inputs"], ("graph.nodes[{}].inputs", i), allow_empty=True))
        outs = list(v.names(n["outputs"], ("graph.nodes[{}].outputs", i), allow_empty=False))
        for x in ins:
            if x and x not in defined:
                raise v.fail(f"node '{nm}' ({op}) reads '{x}', which no input, tensor or earlier node defines")
        for x in outs:
            if x in defined:
                raise v.fail(f"node '{nm}' ({op}) redefines '{x}'")
            defined.add(x)
        nodes.append(Node(op, ins, outs, v.attrs(n.get("attrs", {}), ("graph.nodes[{}].attrs", i)), nm))
    for o in outputs:
        if o.name not in defined:
            raise v.fail(f"graph output '{o.name}' is never produced")
    producer = hdr.get("producer", {})
    if not isinstance(producer, dict):
        raise v.fail("producer must be an object")
    meta = hdr.get("metadata", {})
    if not isinstance(meta, dict):
        raise v.fail("metadata must be an object")
    return Graph(inputs, outputs, nodes, tensors, meta), hdr, spans


def load_file(path: str | os.PathLike, verify: bool = True) -> LoadedFile:
    """Maps ``path`` and validates it; tensors become views into the map."""
    spath = os.fspath(path)
    try:
        f = open(spath, "rb")
    except OSError as e:
        raise FormatError(f"{spath}: cannot open: {e.strerror}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < PREAMBLE_SIZE:
            raise FormatError(f"{spath}: truncated: the file is {size} bytes, a .qbin preamble alone is {PREAMBLE_SIZE}")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        header_len, data_offset, data_len, hcrc, dcrc = read_preamble(spath, mm, size)
        raw = mm[PREAMBLE_SIZE:PREAMBLE_SIZE + header_len]
        if _core.crc32c(raw) != hcrc:
            raise FormatError(f"{spath}: header checksum mismatch: the file is corrupted")
        graph, hdr, spans = parse_header(spath, raw, data_len)
        if verify:
            if hasattr(mmap, "MADV_POPULATE_READ"):
                try:  # fault the pages in one call instead of one fault per 4 KiB
                    mm.madvise(mmap.MADV_POPULATE_READ, data_offset - data_offset % mmap.PAGESIZE)
                except OSError:
                    pass
            if _core.crc32c(memoryview(mm)[data_offset:]) != dcrc:
                raise FormatError(f"{spath}: data checksum mismatch: the file is corrupted")
        for name, t in graph.tensors.items():
            off, nbytes = spans[name]
            t.data = np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=data_offset + off)
            if t.encoding == "raw":
                t.data = t.data.view(DTYPES[t.dtype])
            elif t.encoding == "f32-n16":
                t.data = t.data.view(np.float32)
        return LoadedFile(spath, graph, hdr, mm, size)
    except BaseException:
        try:
            mm.close()
        except BufferError:
            pass
        raise
