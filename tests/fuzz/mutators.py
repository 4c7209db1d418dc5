"""Mutators for the two fuzz targets: .qbin bytes and ONNX models.

All randomness comes from the ``random.Random`` passed in, so a case is
reproduced from (seed, iteration). The .qbin mutators mostly repair the
checksums afterwards: a flipped byte that only trips the CRC check tests one
line of the loader; with the CRCs fixed, the same flip reaches the JSON
validation, the engine's plan and the kernels.
"""

from __future__ import annotations

import copy
import json
import random
import struct
from typing import Any

from lowbit import _core
from lowbit.format import ENCODINGS, PREAMBLE_SIZE
from lowbit.ir import DTYPES

_HEAD = struct.Struct("<8sIIQQQII12s")
MAX_CASE_BYTES = 1 << 22  # like libFuzzer's -max_len: larger cases are cut back

INTERESTING_INTS = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 1023, 1024, 1025,
                    65535, 65536, 65537, (1 << 20), (1 << 20) + 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
                    1 << 40, (1 << 40) + 1, 1 << 47, 1 << 48, (1 << 48) + 1, 1 << 62, (1 << 63) - 1, 1 << 63,
                    1 << 64, -1, -2, -3, -(1 << 31), -(1 << 63), -(1 << 64)]
INTERESTING_U64 = [0, 1, 63, 64, 65, 127, 128, 4096, (1 << 26), (1 << 26) + 1, (1 << 31), (1 << 32) - 1, 1 << 32,
                   (1 << 63) - 1, 1 << 63, (1 << 64) - 64, (1 << 64) - 1]
INTERESTING_F32 = [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff", b"\xff\xff\x7f\x7f",
                   b"\x01\x00\x00\x00", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff"]


def _other_values(rng: random.Random, hdr: dict[str, Any]) -> Any:
    """A value that may be meaningful somewhere else in the header."""
    names = _names(hdr)
    choice = rng.randrange(12)
    if choice < 3:
        return rng.choice(INTERESTING_INTS)
    if choice == 3:
        return rng.choice([0.0, -0.0, 1.5, -1.0, 1e308, 1e-320, 3.4e38, 2.0 ** 70])
    if choice == 4:
        return rng.choice(["", "x", "x" * 1024, "x" * 1025, "\u00ff\u4e2d", "../etc/passwd",
                           "float32", "int64", "int8", "uint8", "int32", "float16", "Dense", "MatMul"])
    if choice == 5:
        return rng.choice([None, True, False, [], {}, [[]], {"a": 1}, [1, 2, 3], [-1], [0]])
    if choice == 6 and names:
        return rng.choice(names)
    if choice == 7:
        return rng.choice(sorted(ENCODINGS) + sorted(DTYPES))
    if choice == 8:
        return rng.choice(_core.known_ops())
    if choice == 9:
        return [rng.choice(INTERESTING_INTS[:30]) for _ in range(rng.randrange(0, 9))]
    if choice == 10 and names:
        return [rng.choice(names) for _ in range(rng.randrange(0, 4))]
    return rng.choice([1, 2, 4, 16, 64])


def _names(hdr: Any) -> list[str]:
    out: list[str] = []
    try:
        g = hdr["graph"]
        out += [v["name"] for v in g["inputs"] + g["outputs"]]
        out += [t["name"] for t in hdr["tensors"]]
        for n in g["nodes"]:
            out += list(n["outputs"])
    except (KeyError, TypeError, IndexError):
        pass
    return [o for o in out if isinstance(o, str)]


def _paths(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indices) in a JSON tree, containers included."""
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, path + (i,))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def mutate_header(rng: random.Random, hdr: dict[str, Any], other: dict[str, Any] | None) -> dict[str, Any]:
    """One structural edit of the JSON tree: delete, replace, tweak a number,
    duplicate/swap/splice list entries, add an unknown key, retarget a name."""
    hdr = copy.deepcopy(hdr)
    paths = _paths(hdr)
    path = rng.choice(paths[1:]) if len(paths) > 1 else ()
    if not path:
        return hdr
    parent = _get(hdr, path[:-1])
    key = path[-1]
    cur = parent[key]
    op = rng.randrange(10)
    if op == 0:  # delete
        del parent[key]
    elif op in (1, 2):  # replace by an interesting or borrowed value
        parent[key] = _other_values(rng, hdr)
    elif op == 3 and isinstance(cur, int) and not isinstance(cur, bool):  # tweak a number
        parent[key] = rng.choice([cur + 1, cur - 1, cur * 2, cur // 2, -cur, cur + 64, cur - 64, cur << 20])
    elif op == 4 and isinstance(cur, list) and cur:  # duplicate / swap / drop list entries
        i, j = rng.randrange(len(cur)), rng.randrange(len(cur))
        r = rng.randrange(3)
        if r == 0:
            cur.insert(j, copy.deepcopy(cur[i]))
        elif r == 1:
            cur[i], cur[j] = cur[j], cur[i]
        else:
            cur.reverse()
    elif op == 5 and isinstance(cur, dict):  # unknown or borrowed key
        cur[rng.choice(["extra", "path", "external", "meta", "attrs", "name", "shape"])] = _other_values(rng, hdr)
    elif op == 6 and other is not None:  # splice a subtree from another seed at a similar path
        cands = [p for p in _paths(other) if len(p) == len(path) and (p and type(p[-1]) is type(key))]
        if cands:
            parent[key] = copy.deepcopy(_get(other, rng.choice(cands)))
    elif op == 7 and isinstance(cur, str):  # retarget a name: cycles, redefinitions, aliasing
        names = _names(hdr)
        if names:
            parent[key] = rng.choice(names)
    elif op == 8:  # shape/attr edits where they matter most
        shapes = [p for p in paths if p and p[-1] in ("shape", "perm", "axis", "activation", "epsilon", "allowzero",
                                                      "legacy")]
        if shapes:
            p = rng.choice(shapes)
            v = _get(hdr, p)
            if isinstance(v, list) and v and rng.random() < 0.7:
                i = rng.randrange(len(v))
                v[i] = rng.choice([0, 1, 2, 3, 5, 16, 17, 64, -1, -2, 1 << 20, 1 << 40, "n", None])
            else:
                _get(hdr, p[:-1])[p[-1]] = _other_values(rng, hdr)
    elif op == 9 and rng.random() < 0.5:  # a new node: any op, inputs from existing values, 0-3 outputs
        g = hdr.get("graph") if isinstance(hdr, dict) else None
        if isinstance(g, dict) and isinstance(g.get("nodes"), list):
            names = _names(hdr) or ["x"]
            node = {"name": f"new{rng.randrange(100)}", "op": rng.choice(_core.known_ops()),
                    "inputs": [rng.choice(names + [""]) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))],
                    "outputs": [f"new_out{k}" for k in range(rng.choice([0, 1, 1, 1, 2, 3]))]}
            if rng.random() < 0.5:
                node["attrs"] = {rng.choice(["axis", "perm", "shape", "activation", "epsilon", "legacy", "allowzero"]):
                                 _other_values(rng, hdr)}
            g["nodes"].insert(rng.randrange(len(g["nodes"]) + 1), node)
            if rng.random() < 0.5 and isinstance(g.get("outputs"), list) and node["outputs"]:
                g["outputs"].append({"name": rng.choice(node["outputs"]), "dtype": "float32", "shape": []})
    else:  # change a tensor's encoding or dtype to another known one
        ts = hdr.get("tensors") if isinstance(hdr, dict) else None
        if isinstance(ts, list) and ts and isinstance(ts[0], dict):
            t = rng.choice(ts)
            if isinstance(t, dict):
                if rng.random() < 0.5:
                    t["encoding"] = rng.choice(sorted(ENCODINGS))
                else:
                    t["dtype"] = rng.choice(sorted(DTYPES))
    return hdr


def split(blob: bytes) -> tuple[dict[str, Any], bytes] | None:
    """(header, data region) of a well-formed file, or None."""
    if len(blob) < PREAMBLE_SIZE:
        return None
    _, _, _, hlen, doff, dlen, _, _, _ = _HEAD.unpack_from(blob)
    if PREAMBLE_SIZE + hlen > len(blob) or doff > len(blob):
        return None
    try:
        return json.loads(blob[PREAMBLE_SIZE:PREAMBLE_SIZE + hlen]), blob[doff:doff + dlen]
    except ValueError:
        return None


def relayout(rng: random.Random, hdr: Any, data: bytes) -> bytes:
    """Makes offsets/nbytes consistent again after a shape/encoding/dtype edit, so
    the case passes the loader's byte checks and reaches the engine. Returns the
    new data region (old tensor bytes, cut or extended with random bytes)."""
    try:
        tensors = hdr["tensors"]
        out = bytearray()
        for t in tensors:
            enc, dt, shape = t["encoding"], t["dtype"], tuple(t["shape"])
            # only well-typed entries: _numel(["ab", 1 << 40]) would build a 2 TiB string
            if not all(type(d) is int and 0 <= d <= (1 << 40) for d in shape) or len(shape) > 8:
                return data
            want = ENCODINGS[enc](dt, shape)
            if want > MAX_CASE_BYTES:
                return data
            old = data[t["offset"]:t["offset"] + t["nbytes"]] if isinstance(t.get("offset"), int) else b""
            body = bytes(old[:want]) + rng.randbytes(max(0, want - len(old)))
            t["offset"], t["nbytes"] = len(out), want
            out += body + bytes((-len(body)) % 64)
        return bytes(out)
    except Exception:  # the header is too broken to lay out: leave it to the loader
        return data


def build(hdr: Any, data: bytes, *, header_bytes: bytes | None = None) -> bytes:
    """A file with correct lengths and checksums around any header and data."""
    hb = header_bytes if header_bytes is not None else json.dumps(hdr, separators=(",", ":")).encode("utf-8", "surrogatepass")
    doff = (PREAMBLE_SIZE + len(hb) + 63) // 64 * 64
    head = _HEAD.pack(b"\x89QBIN\r\n\x1a", 1, 0, len(hb), doff, len(data), _core.crc32c(hb), _core.crc32c(data),
                      bytes(12))
    return head + struct.pack("<I", _core.crc32c(head)) + hb + bytes(doff - PREAMBLE_SIZE - len(hb)) + data


def fix_crcs(blob: bytearray) -> bytearray:
    """Recomputes the three checksums from the (possibly mutated) length fields."""
    if len(blob) < PREAMBLE_SIZE:
        return blob
    _, _, _, hlen, doff, dlen, _, _, _ = _HEAD.unpack_from(blob)
    if PREAMBLE_SIZE + hlen <= len(blob):
        struct.pack_into("<I", blob, 40, _core.crc32c(bytes(blob[PREAMBLE_SIZE:PREAMBLE_SIZE + hlen])))
    if doff <= len(blob):
        struct.pack_into("<I", blob, 44, _core.crc32c(bytes(blob[doff:])))
    struct.pack_into("<I", blob, 60, _core.crc32c(bytes(blob[:60])))
    return blob


def mutate_bytes(rng: random.Random, blob: bytes, other: bytes) -> bytearray:
    """libFuzzer-style byte edits: flips, interesting bytes, insert/erase, copy,
    truncate, splice with another seed."""
    b = bytearray(blob)
    for _ in range(rng.choice([1, 1, 1, 2, 4, 8])):
        if not b:
            b += rng.randbytes(8)
        op = rng.randrange(8)
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, ord('"'), ord("{"), ord("]"), ord("-"), ord("9")])
        elif op == 2:
            b[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3:
            del b[i:i + rng.randrange(1, 65)]
        elif op == 4:
            j, n = rng.randrange(len(b)), rng.randrange(1, 65)
            b[i:i + n] = b[j:j + n]
        elif op == 5:
            del b[rng.randrange(len(b) + 1):]
        elif op == 6 and other:
            j = rng.randrange(len(other))
            b = b[:i] + bytearray(other[j:j + rng.randrange(1, 512)]) + b[i:]
        else:
            v = rng.choice(INTERESTING_F32)
            b[i:i + 4] = v
    return b[:MAX_CASE_BYTES]


def mutate_qbin(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    """One fuzz case derived from a valid .qbin ``blob`` (``other``: a second seed to splice from)."""
    r = rng.random()
    if r < 0.08:  # raw bytes, checksums left as they fall
        return bytes(mutate_bytes(rng, blob, other))
    if r < 0.25:  # raw bytes, checksums repaired
        return bytes(fix_crcs(mutate_bytes(rng, blob, other)))
    if r < 0.35:  # preamble length/offset/version fields
        b = bytearray(blob)
        field = rng.choice([(8, "<I"), (12, "<I"), (16, "<Q"), (24, "<Q"), (32, "<Q"), (48, "<I")])
        val = rng.choice(INTERESTING_U64 + [len(blob), len(blob) - 64, len(blob) + 64,
                                            struct.unpack_from(field[1], b, field[0])[0] + rng.choice([-64, -1, 1, 64])])
        struct.pack_into(field[1], b, field[0], val % (1 << (8 * struct.calcsize(field[1]))))
        if rng.random() < 0.5 and field[0] == 16:  # keep data_offset consistent with the new header length
            struct.pack_into("<Q", b, 24, ((64 + val + 63) // 64 * 64) % (1 << 64))
        return bytes(fix_crcs(b) if rng.random() < 0.9 else b)
    parts = split(blob)
    if parts is None:
        return bytes(fix_crcs(mutate_bytes(rng, blob, other)))
    hdr, data = parts
    if r < 0.45:  # data region values (NaN, Inf, huge, denormal), checksums repaired
        d = bytearray(data)
        for _ in range(rng.randrange(1, 16)):
            if len(d) >= 4:
                i = rng.randrange(len(d) // 4) * 4
                d[i:i + 4] = rng.choice(INTERESTING_F32)
        return build(hdr, bytes(d))
    oth = split(other)
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        hdr = mutate_header(rng, hdr, oth[0] if oth else None)
    if rng.random() < 0.5:
        data = relayout(rng, hdr, data)
    if rng.random() < 0.1:  # header text edits after serialization (syntax, encoding)
        hb = bytearray(json.dumps(hdr, separators=(",", ":")).encode("utf-8", "surrogatepass"))
        return build(None, data, header_bytes=bytes(mutate_bytes(rng, bytes(hb), b"")))
    return build(hdr, data)


# -- ONNX ---------------------------------------------------------------------

ONNX_OPS = ["MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Relu", "Sigmoid", "Tanh", "Erf", "Sqrt",
            "Reciprocal", "Exp", "Neg", "Abs", "Identity", "Gelu", "Softmax", "LayerNormalization", "Reshape",
            "Flatten", "Transpose", "Constant", "Conv", "If", "Loop", "Scan"]


def mutate_onnx_model(rng: random.Random, m: Any, other: Any) -> Any:
    """One structural edit of an onnx.ModelProto (in place; returns it)."""
    from onnx import TensorProto, helper

    g = m.graph
    names = [v.name for v in list(g.input) + list(g.output) + list(g.initializer)]
    names += [o for n in g.node for o in n.output] + [""]
    op = rng.randrange(16)
    if op == 0 and len(g.node):  # delete a node
        del g.node[rng.randrange(len(g.node))]
    elif op == 1 and len(g.node) > 1:  # reorder nodes (out of topological order)
        i, j = rng.randrange(len(g.node)), rng.randrange(len(g.node))
        a, b = copy.deepcopy(g.node[i]), copy.deepcopy(g.node[j])
        g.node[i].CopyFrom(b)
        g.node[j].CopyFrom(a)
    elif op == 2 and len(g.node):  # retarget an input: cycles, missing values, self loops
        n = rng.choice(g.node)
        if len(n.input):
            n.input[rng.randrange(len(n.input))] = rng.choice(names + ["missing"])
        else:
            n.input.append(rng.choice(names))
    elif op == 3 and len(g.node):  # change arity
        n = rng.choice(g.node)
        r = rng.randrange(4)
        if r == 0 and len(n.input):
            del n.input[-1]
        elif r == 1:
            n.input.append(rng.choice(names))
        elif r == 2 and len(n.output):
            del n.output[-1]
        else:
            n.output.append(rng.choice(names + ["new_out"]))
    elif op == 4 and len(g.node):  # change the op type
        rng.choice(g.node).op_type = rng.choice(ONNX_OPS)
    elif op == 5 and len(g.node):  # attribute edits
        n = rng.choice(g.node)
        r = rng.randrange(4)
        if r == 0 and len(n.attribute):
            del n.attribute[rng.randrange(len(n.attribute))]
        else:
            name = rng.choice(["axis", "perm", "transA", "transB", "alpha", "beta", "epsilon", "allowzero",
                               "approximate", "value", "value_float", "value_ints", "shape"])
            val = rng.choice([rng.choice(INTERESTING_INTS[:-1]), [rng.choice([0, 1, 2, -1, 5]) for _ in range(rng.randrange(4))],
                              1.5, float("nan"), "tanh", b"none", [1.0, 2.0],
                              helper.make_tensor("t", TensorProto.FLOAT, [2], [1.0, 2.0])])
            try:
                a = helper.make_attribute(name, val)
            except Exception:
                return m
            for k in range(len(n.attribute) - 1, -1, -1):
                if n.attribute[k].name == name:
                    del n.attribute[k]
            n.attribute.append(a)
    elif op == 6 and len(g.initializer):  # delete an initializer (missing initializer)
        del g.initializer[rng.randrange(len(g.initializer))]
    elif op == 7 and len(g.initializer):  # initializer dims/dtype/data disagree
        t = rng.choice(g.initializer)
        r = rng.randrange(5)
        if r == 0 and len(t.dims):
            t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 2, 3, 1 << 20, 1 << 40, -1])
        elif r == 1:
            t.data_type = rng.choice([0, 2, 3, 6, 7, 9, 10, 11, 16, 8, 999])
        elif r == 2 and t.raw_data:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data))]
        elif r == 3:
            t.dims.append(rng.choice([1, 2, 5]))
        else:
            del t.external_data[:]
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", rng.choice(["../../etc/passwd", "/etc/passwd", "w.bin", "a/../../x"])),
                         ("offset", "0"), ("length", str(rng.choice([4, 1 << 40])))):
                e = t.external_data.add()
                e.key, e.value = k, v
    elif op == 8:  # graph input/output types and shapes
        vis = list(g.input) + list(g.output)
        if vis:
            vi = rng.choice(vis)
            tt = vi.type.tensor_type
            r = rng.randrange(4)
            if r == 0:
                tt.elem_type = rng.choice([0, 1, 7, 10, 11])
            elif r == 1 and len(tt.shape.dim):
                d = tt.shape.dim[rng.randrange(len(tt.shape.dim))]
                if rng.random() < 0.5:
                    d.dim_value = rng.choice([0, 1, 3, 1 << 20, 1 << 40, (1 << 63) - 1])
                else:
                    d.dim_param = rng.choice(["batch", "n", ""])
            elif r == 2:
                tt.ClearField("shape")
            else:
                tt.shape.dim.add().dim_value = rng.choice([1, 2, 7])
    elif op == 9:  # opset edits
        if len(m.opset_import):
            m.opset_import[0].version = rng.choice([1, 10, 11, 12, 13, 17, 23, 24, 1 << 40])
            if rng.random() < 0.2:
                m.opset_import[0].domain = rng.choice(["", "ai.onnx", "com.microsoft", "x"])
    elif op == 10 and len(g.node):  # duplicate a node (values defined twice)
        g.node.insert(rng.randrange(len(g.node) + 1), copy.deepcopy(rng.choice(g.node)))
    elif op == 11:  # graph outputs naming missing values, inputs, initializers
        if len(g.output):
            g.output[rng.randrange(len(g.output))].name = rng.choice(names + ["nowhere"])
    elif op == 12 and other is not None and len(other.graph.node):  # splice a node from another model
        g.node.insert(rng.randrange(len(g.node) + 1), copy.deepcopy(rng.choice(other.graph.node)))
    elif op == 13 and len(g.node):  # rename an output (dangling consumers, duplicates)
        n = rng.choice(g.node)
        if len(n.output):
            n.output[0] = rng.choice(names + ["renamed"])
    elif op == 14 and len(g.node):  # node domain
        rng.choice(g.node).domain = rng.choice(["", "ai.onnx", "com.microsoft"])
    else:  # input that is also an initializer, or an input removed
        if len(g.input) and rng.random() < 0.5:
            del g.input[rng.randrange(len(g.input))]
        elif len(g.initializer):
            init = rng.choice(g.initializer)
            g.input.append(helper.make_tensor_value_info(init.name, TensorProto.FLOAT, list(init.dims)))
    return m


def mutate_onnx(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    """One fuzz case from a valid serialized ONNX model."""
    import onnx

    if rng.random() < 0.15:  # protobuf bytes
        return bytes(mutate_bytes(rng, blob, other))
    m = onnx.ModelProto()
    m.ParseFromString(blob)
    o = onnx.ModelProto()
    o.ParseFromString(other)
    for _ in range(rng.choice([1, 1, 2, 3])):
        m = mutate_onnx_model(rng, m, o)
    return m.SerializeToString()
