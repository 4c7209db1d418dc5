"""Sparse weight encodings in .qbin files (docs/format.md "Sparse encodings"):
a round trip, and a FormatError — never a crash — for every malformed blob:
indices out of range, non-monotonic pointers, entry counts that overflow,
wrong header fields, duplicate columns, -128, values in empty slots."""

import struct

import numpy as np
import pytest

import lowbit
from lowbit import FormatError, _core
from lowbit.format import save
from lowbit.ir import Graph, Node, Tensor, ValueInfo


def _al(x):
    return (x + 63) // 64 * 64


def sell_offsets(K, N, T, bk, vb, has_scale):
    S = (N + 7) // 8
    sl = 64
    perm = _al(sl + (S + 1) * 4)
    scale = _al(perm + S * 8 * 4)
    idx = _al(scale + (S * 8 * 4 if has_scale else 0))
    val = _al(idx + T * 16)
    return {"slice": sl, "perm": perm, "scale": scale, "idx": idx, "val": val, "S": S}


def k16_offsets(K, N, C):
    G = (N + 7) // 8
    grp = 64
    scale = _al(grp + (G + 1) * 4)
    chunk = _al(scale + G * 32)
    shuf = _al(chunk + C * 2)
    val = _al(shuf + C * 32)
    return {"group": grp, "scale": scale, "chunk": chunk, "shuf": shuf, "val": val, "G": G}


def blob_for(enc, K=40, N=20, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((K, N)) < 0.3
    if enc == "f32-csr-s8":
        w = (rng.standard_normal((K, N)) * mask).astype(np.float32)
        return w, np.array(_core.pack_sell_f32(w))
    q = (rng.integers(-127, 128, (K, N)) * mask).astype(np.int8)
    q[rng.random((K, N)) < 0.05] = 0
    s = np.full(N, 0.01, np.float32)
    return q.astype(np.float32) * s, np.array(_core.pack_sell_s8(q, s, 4 if "bsr" in enc else 1))


def write_model(path, enc, blob, K, N):
    g = Graph([ValueInfo("x", "float32", ("batch", K))], [ValueInfo("y", "float32", ("batch", N))],
              [Node("Dense", ["x", "w"], ["y"], {"activation": 0}, "fc")],
              {"w": Tensor("w", blob, "float32", (K, N), enc, {})})
    save(g, path)


ENCS = ["f32-csr-s8", "qs8-csr-k16", "qs8-bsr1x4-s8"]


@pytest.mark.parametrize("enc", ENCS)
def test_round_trip(tmp_path, enc):
    w, blob = blob_for(enc)
    p = str(tmp_path / "m.qbin")
    write_model(p, enc, blob, 40, 20)
    m = lowbit.load(p)
    x = np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32)
    y = m.run(x)
    tol = 1e-5 if enc == "f32-csr-s8" else 0.02 * np.abs(x @ w).max()
    np.testing.assert_allclose(y, x @ w, atol=tol, rtol=1e-4)
    assert m.layers()[0]["encoding"] == enc


def corrupt(enc, blob, what):
    b = bytearray(blob.tobytes())

    def u32(off, v):
        b[off:off + 4] = struct.pack("<I", v)

    def u64(off, v):
        b[off:off + 8] = struct.pack("<Q", v)
    K, N, T = struct.unpack_from("<QQQ", b, 16 if enc != "qs8-csr-k16" else 8)
    if enc == "qs8-csr-k16":
        o = k16_offsets(K, N, T)
        if what == "index":
            c = next(i for i in range(32 * T) if b[o["shuf"] + i] != 0x80)
            b[o["shuf"] + c] = 16
        elif what == "beyond_k":  # K = 40: chunk 2 covers k 32..47, slot 15 is k = 47 >= K
            cell = next(c for c in range(T) if struct.unpack_from("<H", b, o["chunk"] + 2 * c)[0] == 2)
            b[o["shuf"] + 32 * cell] = 15
            b[o["val"] + 32 * cell] = 1
        elif what == "chunk":
            b[o["chunk"]:o["chunk"] + 2] = struct.pack("<H", 999)
        elif what == "monotonic":
            u32(o["group"] + 4, T)   # group 1 starts past group 2's start
            u32(o["group"] + 8, 0)
        elif what == "last_pointer":
            u32(o["group"] + 4 * o["G"], T - 1)
        elif what == "overflow":
            u64(24, 1 << 62)
        elif what == "nnz":
            u64(32, 32 * T + 1)
        elif what == "magic":
            u32(0, 0x12345678)
        elif what == "shape":
            u64(8, K + 1)
        elif what == "minus128":
            c = next(i for i in range(32 * T) if b[o["shuf"] + i] != 0x80)
            b[o["val"] + c] = 0x80
        elif what == "empty_value":
            c = next(i for i in range(32 * T) if b[o["shuf"] + i] == 0x80)
            b[o["val"] + c] = 5
        else:
            return None
        return np.frombuffer(bytes(b), np.uint8)
    bk = 4 if "bsr" in enc else 1
    vb = 4 if enc == "f32-csr-s8" else 1
    o = sell_offsets(K, N, T, bk, vb, vb == 1)
    if what == "index":
        b[o["idx"]:o["idx"] + 2] = struct.pack("<H", (K + bk - 1) // bk)
    elif what == "monotonic":
        u32(o["slice"] + 4, T)
        u32(o["slice"] + 8, 0)
    elif what == "last_pointer":
        u32(o["slice"] + 4 * o["S"], T - 1)
    elif what == "overflow":
        u64(32, 1 << 62)
    elif what == "nnz":
        u64(40, 8 * T + 1)
    elif what == "magic":
        u32(0, 0x12345678)
    elif what == "shape":
        u64(16, K + 1)
    elif what == "duplicate_column":
        b[o["perm"] + 4:o["perm"] + 8] = b[o["perm"]:o["perm"] + 4]
    elif what == "column_range":
        u32(o["perm"], N + 5)
    elif what == "minus128" and vb == 1:
        c = next(i for i in range(T * 8 * bk) if b[o["val"] + i] != 0)
        b[o["val"] + c] = 0x80
    elif what == "block":
        u32(4, 1 if bk == 4 else 4)  # a header whose block length does not match the encoding
    else:
        return None
    return np.frombuffer(bytes(b), np.uint8)


COMMON = ["index", "monotonic", "last_pointer", "overflow", "nnz", "magic", "shape"]
CASES = {"f32-csr-s8": COMMON + ["duplicate_column", "column_range", "block"],
         "qs8-bsr1x4-s8": COMMON + ["duplicate_column", "column_range", "minus128", "block"],
         "qs8-csr-k16": COMMON + ["beyond_k", "chunk", "minus128", "empty_value"]}


@pytest.mark.parametrize("enc,what", [(e, w) for e, ws in CASES.items() for w in ws])
def test_malformed_blob_is_a_format_error(tmp_path, enc, what):
    K, N = 40, 20
    _, blob = blob_for(enc, K, N)
    bad = corrupt(enc, blob, what)
    assert bad is not None
    p = str(tmp_path / "bad.qbin")
    write_model(p, enc, bad, K, N)
    with pytest.raises(FormatError) as ei:
        lowbit.load(p)
    assert p in str(ei.value) and "sparse weight" in str(ei.value) or "int8" in str(ei.value), str(ei.value)


@pytest.mark.parametrize("enc", ENCS)
def test_size_outside_the_encoding_range(tmp_path, enc):
    """The header's nbytes must lie within what the encoding can need for the shape."""
    _, blob = blob_for(enc)
    p = str(tmp_path / "m.qbin")
    write_model(p, enc, blob, 40, 20)
    import qbin_tools
    hdr, data, _ = qbin_tools.read(p)
    hdr["tensors"][0]["nbytes"] = 64 * 1024 * 1024
    qbin_tools.write(p, hdr, data + bytes(64 * 1024 * 1024 - len(data)))
    with pytest.raises(FormatError, match="does not match encoding"):
        lowbit.load(p)


def test_truncated_blob_is_a_format_error(tmp_path):
    _, blob = blob_for("qs8-csr-k16")
    p = str(tmp_path / "m.qbin")
    write_model(p, "qs8-csr-k16", blob[:len(blob) - 64], 40, 20)
    with pytest.raises(FormatError, match="needs .* bytes"):
        lowbit.load(p)


def test_k_above_index_limit_rejected(tmp_path):
    g = Graph([ValueInfo("x", "float32", (1, 70000))], [ValueInfo("y", "float32", (1, 8))],
              [Node("Dense", ["x", "w"], ["y"], {}, "fc")],
              {"w": Tensor("w", np.zeros(1024, np.uint8), "float32", (70000, 8), "f32-csr-s8", {})})
    with pytest.raises(ValueError, match="16-bit index limit"):
        save(g, str(tmp_path / "m.qbin"))
