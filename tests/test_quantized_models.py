"""convert(quant=...) end to end: int8 / int4 / nf4 files load, report each
layer's encoding and kernel, stay accurate, and every ISA (forced with
LOWBIT_ISA, one process each) agrees, any thread count giving the same bytes; the 4-bit weight error is
below onnxruntime's round-to-nearest int4 on the same weights."""

import json
import os
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

import lowbit
import lowbit.format
from lowbit.passes.quantize import QuantSpec, dequantize, kmeans_table, nf4_table, quantize_int4

import models
from conftest import ISAS

MODES = [dict(quant="int8"), dict(quant="int8", reduce_range=True), dict(quant="int4"), dict(quant="int4", symmetric=True), dict(quant="int4", group_size=128),
         dict(quant="nf4"), dict(quant="nf4", codebook="kmeans", group_size=64)]
ENCODINGS = ["qs8-n16k4", "qs7-n16k4", "q4-g32-asym-n16k8", "q4-g32-sym-n16k8", "q4-g128-asym-n16k8", "q4t-g32-n16k8",
             "q4t-g64-n16k8"]


def _digits():
    data = resources.files("lowbit") / "data"
    with resources.as_file(data / "digits_mlp.onnx") as p:
        onnx_path = str(p)
    with resources.as_file(data / "digits_test.npz") as p:
        d = np.load(str(p))
        return onnx_path, d["pixels"].astype(np.float32), d["labels"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    src, x, y = _digits()
    d = tmp_path_factory.mktemp("digits")
    fp32 = str(d / "fp32.qbin")
    lowbit.convert(src, fp32)
    acc32 = float((lowbit.load(fp32).run(x).argmax(1) == y).mean())
    return src, x, y, acc32, d


@pytest.mark.parametrize("kw,enc", list(zip(MODES, ENCODINGS)), ids=ENCODINGS)
def test_digits_accuracy_and_layers(digits, kw, enc):
    src, x, y, acc32, d = digits
    path = str(d / f"{enc}.qbin")
    rep = lowbit.convert(src, path, **kw)
    m = lowbit.load(path)
    dense = [l for l in m.layers() if l["op"] == "Dense"]
    assert dense and all(l["encoding"] == enc for l in dense)
    kern = lowbit.cpu_info()["kernels"]["q4-gemm" if enc.startswith("q4") else enc[:3] + "-gemm"]
    assert all(kern in l["kernel"] for l in dense), dense
    assert [l["encoding"] for l in rep.layers if l["op"] == "Dense"] == [enc] * len(dense)
    acc = float((m.run(x).argmax(1) == y).mean())
    drop = (acc32 - acc) * 100
    limit = 0.3 if kw["quant"] == "int8" else 1.0
    assert drop <= limit, f"{enc}: accuracy {acc:.4f} vs fp32 {acc32:.4f}"
    # smaller file: int8 ~ 1/4 of the weights, 4-bit ~ 1/7
    fp32_size = os.path.getsize(str(d / "fp32.qbin"))
    assert os.path.getsize(path) < fp32_size * (0.4 if kw["quant"] == "int8" else 0.3)


def test_converting_twice_gives_identical_bytes(digits):
    src, _, _, _, d = digits
    a, b = str(d / "a.qbin"), str(d / "b.qbin")
    lowbit.convert(src, a, quant="nf4", codebook="kmeans")
    lowbit.convert(src, b, quant="nf4", codebook="kmeans")
    assert open(a, "rb").read() == open(b, "rb").read()


SCRIPT = """
import sys, numpy as np, lowbit, json
m = lowbit.load(sys.argv[1]); x = np.load(sys.argv[2])
lowbit.set_num_threads(int(sys.argv[3]))
np.save(sys.argv[2] + "." + sys.argv[4] + ".npy", m.run(x))
print(json.dumps([l["kernel"] for l in m.layers()]))
"""


@pytest.mark.parametrize("quant", ["int8", "int8-7bit", "int4", "nf4"])
def test_every_isa_and_thread_count_gives_the_same_bytes(tmp_path, quant):
    model = models.mlp4(seed=5, sizes=(200, 300, 130, 70, 10))
    path = str(tmp_path / "m.qbin")
    lowbit.convert(model, path, quant=quant[:4], group_size=64, reduce_range=quant.endswith("7bit"))
    x = np.random.default_rng(1).standard_normal((37, 200)).astype(np.float32)
    xp = str(tmp_path / "x.npy")
    np.save(xp, x)
    outs, lattice = {}, {}
    for isa in ISAS:
        for threads in (1, 2):
            tag = f"{isa}-{threads}"
            r = subprocess.run([sys.executable, "-c", SCRIPT, path, xp, str(threads), tag], capture_output=True, text=True,
                               env=dict(os.environ, LOWBIT_ISA=isa), timeout=120)
            assert r.returncode == 0, r.stderr
            # amx: the avx512vnni level with AMX tiles for its int8 GEMM (the 4-bit one stays avx512)
            tags = ("amx", "avx512") if isa == "amx" else (isa.replace("vnni", ""),)
            assert all(any(t in k for t in tags) for k in json.loads(r.stdout) if "gemm" in k and "Dense" != k) or isa == "scalar"
            if isa == "amx" and quant.startswith("int8"):
                assert all("amx" in k for k in json.loads(r.stdout) if "gemm" in k and "Dense" != k), r.stdout
            outs[tag] = np.load(xp + f".{tag}.npy")
            lattice[tag] = any("lattice" in k for k in json.loads(r.stdout))
    first = next(iter(outs.values()))
    for tag, o in outs.items():
        # the same bytes for any thread count; across ISAs the integer layers agree exactly
        # and the fp32 elementwise kernels (softmax, erf/GELU) within a few ulp (int4 on amx
        # from 16 rows: the lattice form, which rounds once where the others round per group)
        np.testing.assert_array_equal(o, outs[tag.rsplit("-", 1)[0] + "-1"], err_msg=tag)
        if quant == "nf4":
            # table codes' lattice form requantizes the weights per column to int8 (q4_gemm.h):
            # the ISAs that run it agree among themselves, and with the group-wise ones to
            # about that rounding (37 rows: the lattice form on amx and avx512vnni)
            same = next(outs[t] for t in outs if lattice[t] == lattice[tag])
            np.testing.assert_allclose(o, same, rtol=2e-6, atol=1e-7, err_msg=tag)
            assert np.linalg.norm(o - first) <= 0.02 * np.linalg.norm(first), tag
        else:
            np.testing.assert_allclose(o, first, rtol=2e-6, atol=1e-7, err_msg=tag)
    if quant == "nf4" and any(i in ISAS for i in ("amx", "avx512vnni")):
        assert any(lattice.values()) and not all(lattice.values()), lattice
    # and close to fp32 (int8 ~1%, 4-bit ~10% of the output norm on random weights)
    ref = models.ort_run(model, {"x": x})[0]
    rel = np.linalg.norm(first - ref) / np.linalg.norm(ref)
    assert rel < (0.03 if quant.startswith("int8") else 0.15), rel


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_int4_error_below_onnxruntime_rtn(tmp_path):
    """Relative Frobenius error of W.x (random x) for int4 g32: lowbit's clipped
    int4 (activations quantized to int8 too) vs onnxruntime's MatMulNBits
    round-to-nearest (block 32, symmetric, fp32 activations) on the same W."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx_ir")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    K, N = 768, 512
    # weights with heavy-ish tails, like trained layers (Student-t, 5 dof)
    W = (rng.standard_t(5, size=(K, N)) * 0.02).astype(np.float32)
    x = rng.standard_normal((64, K)).astype(np.float32)
    ref = x.astype(np.float64) @ W.astype(np.float64)
    mm = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", N])], [numpy_helper.from_array(W, "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    mm.ir_version = 8
    import onnx
    fp32_model = onnx.load_from_string(mm.SerializeToString())  # the quantizer edits its model in place
    q = MatMulNBitsQuantizer(mm, block_size=32, is_symmetric=True)
    q.process()
    sess = ort.InferenceSession(q.model.model.SerializeToString(), providers=["CPUExecutionProvider"])
    err_ort = _rel(sess.run(None, {"x": x})[0], ref)
    errs = {}
    for kw in (dict(symmetric=True), dict(symmetric=False)):
        p = str(tmp_path / f"{kw['symmetric']}.qbin")
        lowbit.convert(fp32_model, p, quant="int4", group_size=32, **kw)
        errs[kw["symmetric"]] = _rel(lowbit.load(p).run(x), ref)
    print(f"\nint4 g32 rel. error: onnxruntime RTN {err_ort:.4f}, lowbit sym {errs[True]:.4f}, asym {errs[False]:.4f}")
    assert errs[True] < err_ort and errs[False] < err_ort


def test_clipping_search_beats_min_max():
    """The clip search (ratio 1.0, min-max, is on its grid; the scales then move onto the
    int8 lattice, which costs a little) does better than plain min-max on tailed weights."""
    rng = np.random.default_rng(2)
    W = (rng.standard_t(4, size=(256, 64)) * 0.05).astype(np.float32)
    codes, s, z = quantize_int4(W, 32, True)
    err = np.linalg.norm(dequantize(W, QuantSpec("int4", 32, True)) - W)
    g = W.reshape(8, 32, 64)
    sm = (np.abs(g).max(axis=1) / 7).astype(np.float16).astype(np.float32)
    q = np.clip(np.rint(g / sm[:, None, :]), -8, 7)
    err_mm = np.linalg.norm((q * sm[:, None, :]).reshape(256, 64) - W)
    assert err < 0.9 * err_mm


def test_tables():
    t = nf4_table()
    # peak 64: the AVX2 shifted-table path (docs/kernels.md)
    assert t.dtype == np.int8 and t.min() == -64 and t.max() == 64 and 0 in t and len(set(t.tolist())) == 16
    rng = np.random.default_rng(0)
    W = rng.laplace(size=(512, 64)).astype(np.float32)  # not normal: k-means should move the levels
    k = kmeans_table(W, 64)
    assert k.min() >= -64 and k.max() <= 64 and np.abs(k).max() == 64 and np.all(np.diff(k.astype(int)) > 0)
    e_nf4 = np.linalg.norm(dequantize(W, QuantSpec("nf4", 64)) - W)
    e_km = np.linalg.norm(dequantize(W, QuantSpec("nf4", 64, codebook="kmeans")) - W)
    assert e_km < e_nf4


@pytest.mark.parametrize("kw,msg", [(dict(quant="int3"), "int8, int4, nf4"), (dict(quant="int4", group_size=48), "32, 64, 128"),
                                    (dict(quant="nf4", codebook="lloyd"), "kmeans"),
                                    (dict(quant="int4", reduce_range=True), "needs quant='int8'"),
                                    (dict(quant="int8", reduce_range=1), "True or False")])
def test_bad_quant_arguments(tmp_path, kw, msg):
    src, _, _ = _digits()
    with pytest.raises(ValueError, match=msg):
        lowbit.convert(src, str(tmp_path / "m.qbin"), **kw)


def test_corrupt_int8_weight_is_rejected_at_load(tmp_path):
    """A weight byte of -128 (outside the symmetric range; CRCs recomputed, so only the
    executor's check can catch it) fails the load with a clear error."""
    from lowbit.format import load_file, save
    src, _, _ = _digits()
    p = str(tmp_path / "m.qbin")
    lowbit.convert(src, p, quant="int8")
    f = load_file(p)
    g = f.graph
    name = next(n.inputs[1] for n in g.nodes if n.op == "Dense")
    data = np.array(g.tensors[name].data, copy=True).view(np.uint8)
    data[5] = 0x80
    g.tensors[name].data = data
    bad = str(tmp_path / "bad.qbin")
    save(g, bad)
    with pytest.raises(lowbit.FormatError, match=r"-128"):
        lowbit.load(bad)


def test_out_of_range_int4_zero_point_is_rejected_at_load(tmp_path):
    """An asymmetric int4 zero point of 200 (4-bit zero points are in [0, 15]; CRCs recomputed,
    so only the executor's check can catch it: the AVX2 tiled kernel decodes u + 15 - z into a
    byte) fails the load and names the byte."""
    from lowbit.format import load_file, save
    src, _, _ = _digits()
    p = str(tmp_path / "m.qbin")
    lowbit.convert(src, p, quant="int4")
    g = load_file(p).graph
    node = next(n for n in g.nodes if n.op == "Dense")
    t = g.tensors[node.inputs[1]]
    assert t.encoding == "q4-g32-asym-n16k8", t.encoding
    K, N = t.shape
    zbytes = (N + 15) // 16 * ((K + 31) // 32) * 16  # the zero points close the packed weight
    data = np.array(t.data, copy=True).view(np.uint8)
    assert data[-zbytes:].max() <= 15
    data[-zbytes + 3] = 200
    t.data = data
    bad = str(tmp_path / "bad.qbin")
    save(g, bad)
    with pytest.raises(lowbit.FormatError, match=r"q4 zero point holds 200 at byte 3 of the zero points, expected values in \[0, 15\]"):
        lowbit.load(bad)


def test_reduce_range_codes_and_error(tmp_path):
    """reduce_range: every code in [-64, 64], the clipping search on 129 levels, the
    weight error about twice int8's (one bit less), and a note in the report."""
    from lowbit.passes.encode import decode_weight
    from lowbit.passes.quantize import quantize_int8
    src, x, _ = _digits()
    p = str(tmp_path / "m.qbin")
    rep = lowbit.convert(src, p, quant="int8", reduce_range=True)
    assert any("reduce_range" in n and "qs7-n16k4" in n for n in rep.notes), rep.notes
    g = lowbit.format.load_file(p).graph
    for n in g.nodes:
        if n.op == "Dense":
            t = g.tensors[n.inputs[1]]
            assert t.encoding == "qs7-n16k4" and t.meta["bits"] == 7
            k, n_ = t.shape
            kp = (k + 3) // 4 * 4
            codes = np.asarray(t.data).view(np.int8)[:(n_ + 15) // 16 * 16 * kp]
            assert codes.min() >= -64 and codes.max() <= 64 and (np.abs(codes) == 64).any()
            w = decode_weight(t.encoding, t.shape, t.data)
            assert np.isfinite(w).all()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 64)).astype(np.float32)
    q8, s8 = quantize_int8(w)
    q7, s7 = quantize_int8(w, 64)
    assert np.abs(q7).max() == 64
    e8 = np.linalg.norm(q8 * s8 - w) / np.linalg.norm(w)
    e7 = np.linalg.norm(q7 * s7 - w) / np.linalg.norm(w)
    assert 1.6 * e8 < e7 < 2.4 * e8, (e7, e8)
    with pytest.raises(ValueError, match="qmax"):
        quantize_int8(w, 100)


def test_out_of_range_7bit_weight_is_rejected_at_load(tmp_path):
    """A qs7-n16k4 weight holding 65 (CRCs recomputed, so only the executor's check can
    catch it: the AVX2 kernel would saturate) fails the load and names the code."""
    from lowbit.format import load_file, save
    src, _, _ = _digits()
    p = str(tmp_path / "m.qbin")
    lowbit.convert(src, p, quant="int8", reduce_range=True)
    f = load_file(p)
    g = f.graph
    name = next(n.inputs[1] for n in g.nodes if n.op == "Dense")
    data = np.array(g.tensors[name].data, copy=True).view(np.uint8)
    data[7] = 65
    g.tensors[name].data = data
    bad = str(tmp_path / "bad.qbin")
    save(g, bad)
    with pytest.raises(lowbit.FormatError, match=r"holds 65 at byte 7, expected values in \[-64, 64\]"):
        lowbit.load(bad)


def test_7bit_codes_from_elsewhere_use_the_7bit_kernel(tmp_path):
    """onnxruntime's quantize_dynamic(reduce_range=True) writes 7-bit weights: they import as
    qs7-n16k4 (same codes, same results as qs8-n16k4 on the scalar reference) without asking."""
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = models.mlp4(seed=5, sizes=(200, 300, 130, 70, 10))
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    src.write_bytes(model.SerializeToString())
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    rep = lowbit.convert(str(dst), str(tmp_path / "m.qbin"))
    encs = [l["encoding"] for l in rep.layers if l["op"] == "Dense"]
    assert encs and all(e == "qs7-n16k4" for e in encs), encs
    kern = lowbit.cpu_info()["kernels"]["qs7-gemm"]
    assert all(kern in l["kernel"] for l in rep.layers if l["op"] == "Dense")


def test_embedding_tables_become_int8_rows(tmp_path):
    """quant= stores a large gathered table as int8 rows + a scale per row: every looked-up
    value within half a step of its row's grid, a quarter of the bytes, bad ids still rejected."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    V, D = 1000, 48
    table = (rng.standard_normal((V, D)) * rng.uniform(0.1, 3, (V, 1))).astype(np.float32)
    table[7] = 0  # an all-zero row: scale 0
    W = rng.standard_normal((D, 8)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gather", ["E", "ids"], ["e"], name="emb"),
                           helper.make_node("MatMul", ["e", "W"], ["y"], name="fc")], "emb",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 8])],
                          [numpy_helper.from_array(table, "E"), numpy_helper.from_array(W, "W")])
    src = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    lowbit.convert(src, str(tmp_path / "f.qbin"))
    rep = lowbit.convert(src, str(tmp_path / "q.qbin"), quant="int8")
    assert rep.file_bytes < os.path.getsize(tmp_path / "f.qbin") * 0.4
    m = lowbit.load(str(tmp_path / "q.qbin"))
    assert "E" not in m.graph.tensors and m.graph.tensors["E.int8"].dtype == "int8"
    ids = np.array([[0, 7, 999, 3, 3]], np.int64)
    step = np.abs(table).max(axis=1) / 127
    # the embedding values, read back through the model's own ops (the Dense sees them)
    e = (m.graph.tensors["E.int8"].data.reshape(V, D).astype(np.float32) * m.graph.tensors["E.row_scale"].data.reshape(V, 1))
    assert np.all(np.abs(e - table) <= step[:, None] / 2 * 1.0001)
    y32 = lowbit.load(str(tmp_path / "f.qbin")).run({"ids": ids})
    np.testing.assert_allclose(m.run({"ids": ids}), y32, atol=0.05 * np.abs(y32).max())
    with pytest.raises(IndexError):
        m.run({"ids": np.array([[V]], np.int64)})


def test_embedding_rows_come_back_as_one_op_with_the_bits_of_cast_times_scale(tmp_path):
    """The int8 table is read by one GatherDequantize node: float(codes[id]) * scale[id],
    bit for bit (negative ids count from the end, as Gather's), on a batch of id rows."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    V, D = 600, 40
    table = (rng.standard_normal((V, D)) * rng.uniform(0.01, 5, (V, 1))).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gather", ["E", "ids"], ["e"], name="emb")], "emb",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                          [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["b", "s", D])],
                          [numpy_helper.from_array(table, "E")])
    p = str(tmp_path / "q.qbin")
    lowbit.convert(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p, quant="int8")
    m = lowbit.load(p)
    assert [l["op"] for l in m.layers()] == ["GatherDequantize"]
    codes = m.graph.tensors["E.int8"].data.reshape(V, D)
    scales = m.graph.tensors["E.row_scale"].data.reshape(V, 1).astype(np.float32)
    ids = np.array([[0, 5, -1, 599, 5], [-600, 17, 3, 3, 250]], np.int64)
    want = codes[ids].astype(np.float32) * scales[ids]
    got = m.run({"ids": ids})
    assert got.dtype == np.float32 and got.shape == (2, 5, D)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    for bad in (600, -601):
        with pytest.raises(IndexError, match="out of range"):
            m.run({"ids": np.array([[1, bad]], np.int64)})


def _shared_input_model(weights, N_out=None):
    from onnx import TensorProto, helper
    K = weights[0].shape[0]
    nodes, inits, outs = [], [], []
    for i, w in enumerate(weights):
        nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]))
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, w.shape, w.ravel()))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["m", w.shape[1]]))
    g = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", K])], outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("quant,outliers", [("int8", 1), ("int8", 0), ("int4", 1)])
@pytest.mark.parametrize("threads", [1, 2])
def test_dense_layers_on_one_input_share_its_quantization(tmp_path, quant, outliers, threads):
    # Q, K and V read the same activations: the engine quantizes them once (one scratch for the
    # three nodes, Op::shared_scratch_key) and the results are the bits of each layer run alone
    rng = np.random.default_rng(3)
    ws = [(rng.standard_normal((96, n)) * 0.1).astype(np.float32) for n in (64, 48, 80)]
    lowbit.convert(_shared_input_model(ws), str(tmp_path / "all.qbin"), quant=quant, outliers=outliers)
    lowbit.set_num_threads(threads)
    try:
        m = lowbit.load(str(tmp_path / "all.qbin"))
        for M in (1, 7, 40):  # several plans: the shared region is placed per input shape
            x = rng.standard_normal((M, 96)).astype(np.float32)
            x[:, 5] *= 30.0  # an outlier channel
            got = m.run({"x": x})
            for i, w in enumerate(ws):
                lowbit.convert(_shared_input_model([w]), str(tmp_path / f"one{i}.qbin"), quant=quant, outliers=outliers)
                alone = lowbit.load(str(tmp_path / f"one{i}.qbin")).run({"x": x})
                alone = alone["y0"] if isinstance(alone, dict) else alone
                np.testing.assert_array_equal(got[f"y{i}"], alone, err_msg=f"{quant} layer {i} M={M}")
    finally:
        lowbit.set_num_threads(os.cpu_count() or 1)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_scales_on_the_int8_lattice(symmetric, monkeypatch, tmp_path):
    """convert's int4 group scales are integer multiples of one step per output channel
    (q4_lattice finds them; every multiple within 16 and m * (u - z) within s8), at a small
    cost in weight error against the free scales of the clipping search; Model.layers()
    names the lattice kernel where the table has one."""
    from lowbit import _core
    from lowbit.passes import quantize as Q

    rng = np.random.default_rng(5)
    K, N = 300, 70
    W = (rng.standard_t(5, size=(K, N)) * 0.02).astype(np.float32)
    kind = "sym" if symmetric else "asym"
    codes, s, z = quantize_int4(W, 32, symmetric)
    enc = f"q4-g32-{kind}-n16k8"
    got = _core.q4_lattice(_core.pack_q4(codes, s.view(np.uint16), z, None, kind, 32), enc, K, N)
    assert got is not None
    step, mul, shift = got
    assert shift == 0  # the exact lattice form
    ng = (K + 31) // 32
    m = mul.reshape(-1, ng, 16).transpose(1, 0, 2).reshape(ng, -1)[:, :N].astype(np.int64)
    np.testing.assert_array_equal(m * step[None, :N], s.astype(np.float32))
    zz = np.full((ng, N), 8) if symmetric else z.astype(np.int64)
    assert (m * (0 - zz)).min() >= -128 and (m * (15 - zz)).max() <= 127 and (m * (0 - zz)).max() <= 127
    err = np.linalg.norm(dequantize(W, QuantSpec("int4", 32, symmetric)) - W)
    monkeypatch.setattr(Q, "_on_lattice", lambda wg, s0, z0, sym: (s0, z0))
    err_free = np.linalg.norm(dequantize(W, QuantSpec("int4", 32, symmetric)) - W)
    assert err < 1.06 * err_free, (err, err_free)
    monkeypatch.undo()
    model = models.mlp4(seed=3, sizes=(64, 96, 10, 10, 10))
    path = str(tmp_path / "m.qbin")
    lowbit.convert(model, path, quant="int4", symmetric=symmetric)
    kern = [l["kernel"] for l in lowbit.load(path).layers() if l["op"] == "Dense"]
    lat = lowbit.cpu_info()["kernels"].get("q4-gemm-lattice")
    assert all((lat in k) if lat else ("lattice" not in k) for k in kern), kern


def test_requantize_attribute_gates_the_rounded_lattice_form(tmp_path):
    """convert marks the 4-bit layers it quantizes itself with requantize=1, which lets batches
    run them in the rounded lattice form (q4_gemm.h; nf4 has no exact one); without the mark
    (imported or lowbit.compress weights) the same weights run group-wise, as stored. A mark
    out of range, or on int8 weights, is a FormatError naming the node."""
    import qbin_tools

    model = models.mlp4(seed=2, sizes=(96, 128, 64, 32, 10))
    x = np.random.default_rng(3).standard_normal((40, 96)).astype(np.float32)
    path = str(tmp_path / "nf4.qbin")
    lowbit.convert(model, path, quant="nf4")
    header, data, _ = qbin_tools.read(path)
    dense = [n for n in header["graph"]["nodes"] if n["op"] == "Dense"]
    assert dense and all(n["attrs"].get("requantize") == 1 for n in dense)
    lat = lowbit.cpu_info()["kernels"].get("q4-gemm-lattice")
    marked = lowbit.load(path)
    kern = [l["kernel"] for l in marked.layers() if l["op"] == "Dense"]
    assert all((lat in k) if lat else ("lattice" not in k) for k in kern), kern
    for n in dense:
        del n["attrs"]["requantize"]
    plain_path = str(tmp_path / "plain.qbin")
    qbin_tools.write(plain_path, header, data)
    plain = lowbit.load(plain_path)
    assert all("lattice" not in l["kernel"] for l in plain.layers() if l["op"] == "Dense")
    a, b = marked.run(x), plain.run(x)
    if lat:  # the two forms: close, not equal
        assert 0 < np.linalg.norm(a - b) <= 0.02 * np.linalg.norm(b)
    else:
        np.testing.assert_array_equal(a, b)
    # below the lattice kernel's row count both run group-wise: the same bits
    np.testing.assert_array_equal(marked.run(x[:3]), plain.run(x[:3]))
    lowbit.convert(model, str(tmp_path / "int8.qbin"), quant="int8")
    h8, d8, _ = qbin_tools.read(str(tmp_path / "int8.qbin"))
    assert not any("requantize" in n["attrs"] for n in h8["graph"]["nodes"])
    for hdr, dat, value, msg in ((header, data, 2, "requantize must be 0 or 1, got 2"),
                                 (h8, d8, 1, "requantize applies to 4-bit weights")):
        node = next(n for n in hdr["graph"]["nodes"] if n["op"] == "Dense")
        node["attrs"]["requantize"] = value
        bad = str(tmp_path / "bad.qbin")
        qbin_tools.write(bad, hdr, dat)
        with pytest.raises(lowbit.FormatError, match=f"Dense '{node['name']}': {msg}"):
            lowbit.load(bad)
