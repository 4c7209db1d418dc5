"""The .qbin format: round trip, and a FormatError naming the file and the
problem for every malformed input listed in docs/format.md."""

import json
import os
import struct

import numpy as np
import pytest

import lowbit
from lowbit import FormatError, _core
from lowbit.format import MAX_HEADER_BYTES, PREAMBLE_SIZE

import models
import qbin_tools


@pytest.fixture(scope="module")
def onnx_model():
    return models.mlp4(sizes=(16, 32, 24, 20, 5))


@pytest.fixture
def good(tmp_path, onnx_model):
    p = str(tmp_path / "good.qbin")
    lowbit.convert(onnx_model, p)
    return p


def _expect(path, *fragments, verify=True):
    with pytest.raises(FormatError) as ei:
        lowbit.load(path, verify=verify)
    msg = str(ei.value)
    assert os.fspath(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_round_trip_matches_and_is_deterministic(tmp_path, onnx_model, good):
    x = np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32)
    m = lowbit.load(good)
    ref = models.ort_run(onnx_model, {"x": x})[0]
    np.testing.assert_allclose(m.run(x), ref, rtol=1e-5, atol=1e-6)
    p2 = str(tmp_path / "again.qbin")
    lowbit.convert(onnx_model, p2)
    assert open(good, "rb").read() == open(p2, "rb").read()


def test_layout_alignment_and_checksums(good):
    blob = open(good, "rb").read()
    header, data, pre = qbin_tools.read(good)
    assert blob[:8] == b"\x89QBIN\r\n\x1a" and pre["version"] == 1
    hlen, doff, dlen = struct.unpack_from("<QQQ", blob, 16)
    assert doff % 64 == 0 and doff + dlen == len(blob)
    for t in header["tensors"]:
        assert t["offset"] % 64 == 0
        assert (doff + t["offset"]) % 64 == 0
    hcrc, dcrc = struct.unpack_from("<II", blob, 40)
    assert hcrc == _core.crc32c(blob[64:64 + hlen])
    assert dcrc == _core.crc32c(blob[doff:])


def test_weights_are_used_in_place_from_the_mmap(good):
    m = lowbit.load(good)
    for t in m.graph.tensors.values():
        assert not t.data.flags.owndata  # a view, not a copy
        assert t.data.ctypes.data % 64 == 0


def test_truncated_file(tmp_path, good):
    blob = open(good, "rb").read()
    for cut in (0, 10, 63, 64, 200, len(blob) - 1):
        p = tmp_path / f"cut{cut}.qbin"
        p.write_bytes(blob[:cut])
        _expect(p, "truncated")


def test_flipped_byte_in_data(tmp_path, good):
    blob = bytearray(open(good, "rb").read())
    blob[-10] ^= 0x01
    p = tmp_path / "flip.qbin"
    p.write_bytes(bytes(blob))
    _expect(p, "data checksum mismatch")
    # verify=False trusts the data region (it is an mmap) but still checks the structure
    lowbit.load(p, verify=False)


def test_flipped_byte_in_header(tmp_path, good):
    blob = bytearray(open(good, "rb").read())
    blob[PREAMBLE_SIZE + 20] ^= 0x04
    p = tmp_path / "hflip.qbin"
    p.write_bytes(bytes(blob))
    _expect(p, "header checksum mismatch", verify=False)


def test_flipped_byte_in_preamble(tmp_path, good):
    blob = bytearray(open(good, "rb").read())
    blob[33] ^= 0x01  # inside data_len
    p = tmp_path / "pflip.qbin"
    p.write_bytes(bytes(blob))
    _expect(p, "preamble checksum mismatch")


def test_wrong_magic(tmp_path, good):
    blob = bytearray(open(good, "rb").read())
    blob[:8] = b"GGUF\x03\x00\x00\x00"
    p = tmp_path / "magic.qbin"
    p.write_bytes(bytes(blob))
    _expect(p, "not a .qbin file", "magic")


def test_onnx_file_is_not_a_qbin(tmp_path, onnx_model):
    p = tmp_path / "model.onnx"
    p.write_bytes(onnx_model.SerializeToString())
    _expect(p, "not a .qbin file")


def test_newer_version(tmp_path, good):
    header, data, _ = qbin_tools.read(good)
    p = tmp_path / "v2.qbin"
    qbin_tools.write(p, header, data, version=2)
    _expect(p, "version 2 is newer", "version 1")


def test_header_length_beyond_file(tmp_path, good):
    header, data, _ = qbin_tools.read(good)
    p = tmp_path / "hlen.qbin"
    qbin_tools.write(p, header, data, header_len=10_000_000)
    _expect(p, "header length 10000000 extends beyond the end of the file")


def test_header_length_over_cap(tmp_path, good):
    header, data, _ = qbin_tools.read(good)
    p = tmp_path / "hcap.qbin"
    qbin_tools.write(p, header, data, header_len=MAX_HEADER_BYTES + 1)
    _expect(p, "exceeds the cap")


def test_trailing_bytes(tmp_path, good):
    p = tmp_path / "trail.qbin"
    p.write_bytes(open(good, "rb").read() + b"junk")
    _expect(p, "trailing bytes")


def _mutate(tmp_path, good, fn, name="bad.qbin"):
    header, data, _ = qbin_tools.read(good)
    fn(header)
    p = tmp_path / name
    qbin_tools.write(p, header, data)
    return p


def _first_tensor(h, enc=None):
    return next(t for t in h["tensors"] if enc is None or t["encoding"] == enc)


def test_tensor_offset_outside_file(tmp_path, good):
    p = _mutate(tmp_path, good, lambda h: _first_tensor(h).update(offset=1 << 40))
    _expect(p, "outside the data region")


def test_tensor_offset_misaligned(tmp_path, good):
    p = _mutate(tmp_path, good, lambda h: _first_tensor(h).update(offset=_first_tensor(h)["offset"] + 4))
    _expect(p, "not 64-byte aligned")


def test_overlapping_tensors(tmp_path, good):
    def f(h):
        ts = sorted(h["tensors"], key=lambda t: t["offset"])
        ts[1]["offset"] = ts[0]["offset"]
    _expect(_mutate(tmp_path, good, f), "overlap")


def test_shape_product_overflow(tmp_path, good):
    p = _mutate(tmp_path, good, lambda h: _first_tensor(h).update(shape=[1 << 40, 1 << 40, 1 << 40]))
    _expect(p, "overflows")


def test_negative_or_non_integer_dims(tmp_path, good):
    _expect(_mutate(tmp_path, good, lambda h: _first_tensor(h).update(shape=[-1, 4])), "must be an integer")
    _expect(_mutate(tmp_path, good, lambda h: _first_tensor(h).update(shape=[2.5, 4]), "f.qbin"), "must be an integer")


def test_nbytes_mismatch(tmp_path, good):
    p = _mutate(tmp_path, good, lambda h: _first_tensor(h).update(nbytes=_first_tensor(h)["nbytes"] - 4))
    _expect(p, "does not match encoding")


def test_unknown_dtype(tmp_path, good):
    _expect(_mutate(tmp_path, good, lambda h: _first_tensor(h).update(dtype="complex128")), "unknown dtype 'complex128'")


def test_unknown_encoding(tmp_path, good):
    _expect(_mutate(tmp_path, good, lambda h: _first_tensor(h).update(encoding="q3_k")), "unknown encoding 'q3_k'")


def test_no_external_paths(tmp_path, good):
    p = _mutate(tmp_path, good, lambda h: _first_tensor(h).update(location="../../etc/passwd"))
    _expect(p, "unknown field", "location")


def test_unknown_op(tmp_path, good):
    p = _mutate(tmp_path, good, lambda h: h["graph"]["nodes"][0].update(op="SystemCall"))
    _expect(p, "unknown op 'SystemCall'")


def test_graph_out_of_order_or_cyclic(tmp_path, good):
    def f(h):
        h["graph"]["nodes"].reverse()
    _expect(_mutate(tmp_path, good, f), "no input, tensor or earlier node defines")

    def cyc(h):
        n0 = h["graph"]["nodes"][0]
        n0["inputs"][0] = h["graph"]["nodes"][1]["outputs"][0]
    _expect(_mutate(tmp_path, good, cyc, "cyc.qbin"), "no input, tensor or earlier node defines")


def test_undefined_output(tmp_path, good):
    _expect(_mutate(tmp_path, good, lambda h: h["graph"]["outputs"][0].update(name="nowhere")), "never produced")


def test_overlong_names_and_lists(tmp_path, good):
    _expect(_mutate(tmp_path, good, lambda h: h["graph"]["nodes"][0].update(name="n" * 5000)), "characters long")
    _expect(_mutate(tmp_path, good, lambda h: _first_tensor(h).update(shape=[1] * 9), "rank.qbin"), "cap 8")


def test_not_json_and_duplicate_keys(tmp_path, good):
    header, data, _ = qbin_tools.read(good)
    p = tmp_path / "nojson.qbin"
    qbin_tools.write(p, None, data, header_bytes=b"\xff\xfe not json")
    _expect(p, "not valid UTF-8 JSON")
    txt = json.dumps(header)
    dup = txt[:-1] + ', "format": "lowbit.qbin"}'
    qbin_tools.write(p, None, data, header_bytes=dup.encode())
    _expect(p, "duplicate key")
    deep = ("[" * 100000) + ("]" * 100000)
    qbin_tools.write(p, None, data, header_bytes=deep.encode())
    _expect(p, "not valid UTF-8 JSON")


def test_wrong_structure_types(tmp_path, good):
    _expect(_mutate(tmp_path, good, lambda h: h.update(tensors={"a": 1})), "tensors must be a list")
    _expect(_mutate(tmp_path, good, lambda h: h["graph"].update(nodes="x"), "b.qbin"), "must be a list")
    _expect(_mutate(tmp_path, good, lambda h: h.update(format="gguf"), "c.qbin"), "expected 'lowbit.qbin'")


def test_engine_rejects_inconsistent_weight(tmp_path, good):
    # A Dense whose packed weight has the wrong logical shape for its bias: the
    # executor's own checks turn it into a FormatError, never a crash.
    def f(h):
        dense = next(n for n in h["graph"]["nodes"] if n["op"] == "Dense" and len(n["inputs"]) == 3)
        ln = next(n for n in h["graph"]["nodes"] if n["op"] == "LayerNormalization")
        dense["inputs"][2] = ln["inputs"][1]  # a raw float32 vector of the wrong length
    _expect(_mutate(tmp_path, good, f), "bias")


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.qbin", "cannot open")


def test_format_error_is_value_error():
    assert issubclass(FormatError, ValueError)
    assert issubclass(lowbit.UnsupportedOpError, ValueError)


def test_constant_dtype_a_kernel_cannot_read(tmp_path, good):
    # a uint8 tensor where a float32 kernel reads: rejected before any kernel runs
    def f(h):
        ln = next(n for n in h["graph"]["nodes"] if n["op"] == "LayerNormalization")
        t = next(t for t in h["tensors"] if t["name"] == ln["inputs"][1])
        t.update(dtype="uint8", nbytes=t["nbytes"] // 4)
    _expect(_mutate(tmp_path, good, f), "is uint8, expected float32")


def test_packed_tensor_where_raw_is_read(tmp_path, good):
    def f(h):
        ln = next(n for n in h["graph"]["nodes"] if n["op"] == "LayerNormalization")
        dense = next(n for n in h["graph"]["nodes"] if n["op"] == "Dense")
        ln["inputs"][1] = dense["inputs"][1]
    _expect(_mutate(tmp_path, good, f), "has encoding f32-n16, expected raw")


def test_graph_io_dtype(tmp_path, good):
    _expect(_mutate(tmp_path, good, lambda h: h["graph"]["outputs"][0].update(dtype="int8")), "expected float32")
    _expect(_mutate(tmp_path, good, lambda h: h["graph"]["inputs"][0].update(dtype="int64"), "i.qbin"),
            "expected float32")


def test_static_shapes_that_disagree_fail_at_load(tmp_path, good):
    # with every input dim known the plan is made at load, so a wrong width is caught there
    _expect(_mutate(tmp_path, good, lambda h: h["graph"]["inputs"][0].update(shape=[2, 17])), "do not agree")


def test_non_string_dtype_and_encoding(tmp_path, good):
    # found by a structural fuzz of the header: lists/objects where names belong
    _expect(_mutate(tmp_path, good, lambda h: _first_tensor(h).update(dtype=["float32"])), "unknown dtype")
    _expect(_mutate(tmp_path, good, lambda h: _first_tensor(h).update(encoding={"raw": 1}), "e.qbin"),
            "unknown encoding")
    _expect(_mutate(tmp_path, good, lambda h: h["graph"]["inputs"][0].update(dtype=[1]), "g.qbin"), "unknown dtype")


def _set_attr(h, key, value):
    h["graph"]["nodes"][0].setdefault("attrs", {})[key] = value


@pytest.mark.parametrize("mutation, fragment", [
    (lambda h: h["tensors"][0].update(name=7), "tensors[0].name must be a string, got int"),
    (lambda h: h["tensors"][1].update(dtype=True), "tensor '{t1}': unknown dtype True"),
    (lambda h: h["tensors"][0].update(shape=[3, -1]), "tensor '{t0}' shape[1] must be an integer in [0, "),
    (lambda h: h["tensors"][0].update(shape=[3, True]), "tensor '{t0}' shape[1] must be an integer in [0, "),
    (lambda h: h["tensors"][0].update(offset="64"), "tensor '{t0}' offset must be an integer in [0, "),
    (lambda h: h["tensors"][0].update(nbytes=False), "tensor '{t0}' nbytes must be an integer in [0, "),
    (lambda h: h["tensors"][2].update(extra=1), "tensors[2] has unknown field(s) ['extra']"),
    (lambda h: h["tensors"][2].pop("offset"), "tensors[2] lacks field(s) ['offset']"),
    (lambda h: h["graph"]["nodes"][1].update(inputs=[h["graph"]["nodes"][1]["inputs"][0], 5]),
     "graph.nodes[1].inputs must be a string, got int"),
    (lambda h: h["graph"]["nodes"][1].update(outputs=[""]), "graph.nodes[1].outputs is empty"),
    (lambda h: h["graph"]["nodes"][0].update(inputs="x"), "graph.nodes[0].inputs must be a list, got str"),
    (lambda h: h["graph"]["nodes"][0].update(op=None), "graph.nodes[0].op must be a string, got NoneType"),
    (lambda h: _set_attr(h, "k" * 2000, 1), "graph.nodes[0].attrs key is 2000 characters long"),
    (lambda h: _set_attr(h, "s", "v" * 2000), "graph.nodes[0].attrs.s is 2000 characters long"),
    (lambda h: _set_attr(h, "l", [1, 2.5]), "graph.nodes[0].attrs.l must hold 64-bit integers only"),
    (lambda h: _set_attr(h, "l", {"a": 1}), "graph.nodes[0].attrs.l has unsupported type dict"),
    (lambda h: _set_attr(h, "big", 1 << 70), "graph.nodes[0].attrs.big does not fit in 64 bits"),
    (lambda h: h["graph"]["inputs"][0].update(shape=[1.5]), "graph.inputs 'x' shape[0] must be an integer in [0, "),
    (lambda h: h["graph"]["inputs"][0].update(shape=[""]), "graph.inputs 'x' shape[0] is empty"),
    (lambda h: h["graph"]["outputs"][0].update(dtype="complex"), "unknown dtype 'complex'"),
])
def test_errors_name_the_place(tmp_path, good, mutation, fragment):
    """Each check names where in the header it failed (the location strings are
    built only on the error path, so each form is pinned here)."""
    header, _, _ = qbin_tools.read(good)
    fragment = fragment.format(t0=header["tensors"][0]["name"], t1=header["tensors"][1]["name"])
    _expect(_mutate(tmp_path, good, mutation), fragment)
