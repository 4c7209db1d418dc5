"""Fused attention (passes.fuse_attention + the Attention op): hand-built ONNX
attention blocks in the forms exporters write, converted with and without the
fusion. The fused graph must be used, match onnxruntime, give the unfused
graph's exact bits (same operations in the same order), and the same bits at
1 and 2 threads, at several batch / sequence lengths of one converted file."""

import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

import lowbit
from lowbit.passes import fuse_attention

import models

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def attention_model(H=4, D=8, Dv=None, scale="mul", mask="b11t", k_two_transposes=False, const_shapes=False,
                    cross=False, merge="const"):
    """x [B, S, E] -> q, k, v projections -> attention -> [B, S, H*Dv]. Reshape targets are
    computed from Shape (dynamic B, S) unless const_shapes; `cross`: k and v come from
    a second input of its own length T; `mask`: None, "b11t" ([B,1,1,T]), "b1st", "1hst";
    `merge`: the heads merged by a Reshape to a constant [0, 0, -1], to [B, S, H*Dv]
    computed from Shape(x) ("dynamic"), or left [B, S, H, Dv] ("none")."""
    Dv = Dv or D
    E = 24
    rng = np.random.default_rng(H * 10 + D)
    inits = {"wq": rng.standard_normal((E, H * D)).astype(np.float32) / 4,
             "wk": rng.standard_normal((E, H * D)).astype(np.float32) / 4,
             "wv": rng.standard_normal((E, H * Dv)).astype(np.float32) / 4,
             "c": np.array(1 / np.sqrt(D) if scale == "mul" else np.sqrt(D), np.float32),
             "hd": np.array([H, D], np.int64), "hdv": np.array([H, Dv], np.int64), "i0": np.array([0], np.int64),
             "i1": np.array([1], np.int64), "m1": np.array([-1], np.int64)}
    src_kv = "z" if cross else "x"
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", [src_kv, "wk"], ["k"]),
             helper.make_node("MatMul", [src_kv, "wv"], ["v"])]

    def split(name, src, hd, perm, out):
        if const_shapes:
            inits[f"{name}_shape"] = np.array([0, 0, inits[hd][0], inits[hd][1]], np.int64)
            shape = f"{name}_shape"
        else:
            nodes.extend([helper.make_node("Shape", [src], [f"{name}_s"]),
                          helper.make_node("Gather", [f"{name}_s", "i0"], [f"{name}_b"], axis=0),
                          helper.make_node("Gather", [f"{name}_s", "i1"], [f"{name}_t"], axis=0),
                          helper.make_node("Concat", [f"{name}_b", f"{name}_t", hd], [f"{name}_shape"], axis=0)])
            shape = f"{name}_shape"
        nodes.append(helper.make_node("Reshape", [name, shape], [f"{name}4"]))
        nodes.append(helper.make_node("Transpose", [f"{name}4"], [out], perm=perm))

    split("q", "x", "hd", [0, 2, 1, 3], "qt")
    if k_two_transposes:
        split("k", src_kv, "hd", [0, 2, 1, 3], "kh")
        nodes.append(helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]))
    else:
        split("k", src_kv, "hd", [0, 2, 3, 1], "kt")
    split("v", src_kv, "hdv", [0, 2, 1, 3], "vt")
    nodes.append(helper.make_node("MatMul", ["qt", "kt"], ["s0"]))
    s = "s0"
    if scale:
        nodes.append(helper.make_node("Mul" if scale == "mul" else "Div", ["s0", "c"], ["s1"]))
        s = "s1"
    inputs = [helper.make_tensor_value_info("x", F, ["b", "s", E])]
    if cross:
        inputs.append(helper.make_tensor_value_info("z", F, ["b", "t", E]))
    if mask:
        mshape = {"b11t": ["b", 1, 1, "t"], "b1st": ["b", 1, "s", "t"], "1hst": [1, H, "s", "t"]}[mask]
        inputs.append(helper.make_tensor_value_info("mask", F, mshape))
        nodes.append(helper.make_node("Add", [s, "mask"], ["s2"]))
        s = "s2"
    nodes += [helper.make_node("Softmax", [s], ["p"], axis=-1), helper.make_node("MatMul", ["p", "vt"], ["o"])]
    if merge == "none":
        nodes.append(helper.make_node("Transpose", ["o"], ["y"], perm=[0, 2, 1, 3]))
        return models.make_model(nodes, inputs, [helper.make_tensor_value_info("y", F, ["b", "s", H, Dv])], inits)
    nodes.append(helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]))
    if merge == "dynamic":
        inits["hdv_flat"] = np.array([H * Dv], np.int64)
        nodes += [helper.make_node("Shape", ["x"], ["x_s"]),
                  helper.make_node("Gather", ["x_s", "i0"], ["x_b"], axis=0),
                  helper.make_node("Gather", ["x_s", "i1"], ["x_t"], axis=0),
                  helper.make_node("Concat", ["x_b", "x_t", "hdv_flat"], ["flat"], axis=0)]
    else:
        inits["flat"] = np.array([0, 0, -1], np.int64)
    nodes.append(helper.make_node("Reshape", ["ot", "flat"], ["y"]))
    return models.make_model(nodes, inputs, [helper.make_tensor_value_info("y", F, ["b", "s", H * Dv])], inits)


def feeds_for(model, B, S, T, seed):
    rng = np.random.default_rng(seed)
    names = [i.name for i in model.graph.input]
    f = {"x": rng.standard_normal((B, S, 24)).astype(np.float32)}
    if "z" in names:
        f["z"] = rng.standard_normal((B, T, 24)).astype(np.float32)
    if "mask" in names:
        dims = [d.dim_param or d.dim_value for d in model.graph.input[names.index("mask")].type.tensor_type.shape.dim]
        shape = [{"b": B, "s": S, "t": T}.get(d, d) for d in dims]
        m = np.where(rng.random(shape) < 0.2, np.float32(-10000.0), np.float32(0.0)).astype(np.float32)
        f["mask"] = m
    return f


def convert_both(model, tmp_path, monkeypatch):
    return models.convert_with_and_without(model, tmp_path, monkeypatch, fuse_attention)


VARIANTS = {
    "mul-mask": {}, "div-mask": dict(scale="div"), "no-scale-no-mask": dict(scale=None, mask=None),
    "k-two-transposes": dict(k_two_transposes=True), "const-shapes": dict(const_shapes=True),
    "mask-b1st": dict(mask="b1st"), "mask-1hst": dict(mask="1hst"), "dv-differs": dict(D=8, Dv=16),
    "cross": dict(cross=True), "one-head": dict(H=1, D=24),
    "merge-dynamic": dict(merge="dynamic"), "no-merge": dict(merge="none"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_matches_unfused_bits_and_onnxruntime(variant, tmp_path, monkeypatch, threads):
    kw = VARIANTS[variant]
    model = attention_model(**kw)
    fused, plain = convert_both(model, tmp_path, monkeypatch)
    ops = [l["op"] for l in fused.layers()]
    assert ops.count("Attention") == 1 and "Softmax" not in ops and "Transpose" not in ops, ops
    assert "Reshape" not in ops, ops  # the heads' split and merge are views inside the node
    assert "Attention" not in [l["op"] for l in plain.layers()]
    # sequences below, at and above the 128-row block; cross attention with its own key length
    for B, S, T in [(1, 5, 5), (2, 37, 37), (1, 130, 130), (2, 129, 23)]:
        if not kw.get("cross") and S != T:
            continue
        f = feeds_for(model, B, S, T, seed=S)
        ref = models.ort_run(model, f)[0]
        outs = []
        for t in (1, 2):
            lowbit.set_num_threads(t)
            outs += [fused.run(f), plain.run(f)]
        np.testing.assert_allclose(outs[0], ref, rtol=1e-5, atol=1e-5)
        for o in outs[1:]:
            assert np.array_equal(o, outs[0]), (variant, B, S, T)


def test_not_fused_when_an_intermediate_is_read_elsewhere(tmp_path):
    model = attention_model()
    # also expose the attention probabilities: the fusion must leave the graph alone
    model.graph.output.append(helper.make_tensor_value_info("p", F, ["b", 4, "s", "s"]))
    path = str(tmp_path / "m.qbin")
    lowbit.convert(model, path)
    m = lowbit.load(path)
    assert "Attention" not in [l["op"] for l in m.layers()]
    f = feeds_for(model, 2, 9, 9, seed=1)
    ref = models.ort_run(model, f)
    got = m.run(f)
    np.testing.assert_allclose(got["y"], ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["p"], ref[1], rtol=1e-5, atol=1e-6)


def test_mask_that_does_not_broadcast_is_a_value_error(tmp_path, monkeypatch):
    model = attention_model(mask="b1st")
    fused, _ = convert_both(model, tmp_path, monkeypatch)
    f = feeds_for(model, 1, 6, 6, seed=2)
    f["mask"] = np.zeros((1, 1, 6, 5), np.float32)
    with pytest.raises(ValueError, match="broadcast"):
        fused.run(f)


def bf16_close(got, ref):
    """Within what rounding Q, K, P and V to bfloat16 (8 significant bits) leaves."""
    err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert err < 2e-2, err


@pytest.mark.parametrize("variant", ["mul-mask", "div-mask", "no-scale-no-mask", "dv-differs", "cross", "one-head",
                                     "mask-1hst"])
def test_bf16_precision(variant, tmp_path):
    """attention="bf16": on a table with a fast bf16 GEMM (amx) the node runs on it, close to
    onnxruntime's fp32 but not equal to the fp32 node, with the same bits at 1 and 2 threads;
    elsewhere it is the fp32 node, bit for bit."""
    kw = VARIANTS[variant]
    model = attention_model(**kw)
    lowbit.convert(model, str(tmp_path / "b.qbin"), attention="bf16")
    lowbit.convert(model, str(tmp_path / "f.qbin"))
    b, f32 = lowbit.load(str(tmp_path / "b.qbin")), lowbit.load(str(tmp_path / "f.qbin"))
    kern = [l["kernel"] for l in b.layers() if l["op"] == "Attention"]
    fast = lowbit._core.kernel_names()["bf16-gemm"] == "bf16_gemm_32x32__amx"
    assert len(kern) == 1 and kern[0].startswith("bf16_gemm_32x32__amx+" if fast else "f32_gemm"), kern
    for B, S, T in [(1, 5, 5), (2, 37, 37), (1, 130, 130), (2, 129, 23)]:
        if not kw.get("cross") and S != T:
            continue
        feeds = feeds_for(model, B, S, T, seed=S)
        ref = models.ort_run(model, feeds)[0]
        outs = []
        for t in (1, 2):
            lowbit.set_num_threads(t)
            outs.append(b.run(feeds))
        assert np.array_equal(outs[0], outs[1])
        plain = f32.run(feeds)
        if fast:
            bf16_close(outs[0], ref)
            assert not np.array_equal(outs[0], plain)
        else:
            assert np.array_equal(outs[0], plain)


def test_bf16_precision_elsewhere_is_fp32(tmp_path):
    """Tables without a fast bf16 GEMM run a bf16-marked node on the fp32 path: the bits of
    the fp32 node (forced tables, in a fresh process each)."""
    model = attention_model()
    lowbit.convert(model, str(tmp_path / "b.qbin"), attention="bf16")
    lowbit.convert(model, str(tmp_path / "f.qbin"), attention="f32")
    np.savez(tmp_path / "feeds.npz", **feeds_for(model, 2, 37, 37, seed=3))
    code = ("import sys, numpy as np, lowbit; d = sys.argv[1]; f = dict(np.load(d + '/feeds.npz'));"
            "a = lowbit.load(d + '/b.qbin'); b = lowbit.load(d + '/f.qbin');"
            "k = [l['kernel'] for l in a.layers() if l['op'] == 'Attention'][0];"
            "assert k.startswith('f32_gemm'), k; assert np.array_equal(a.run(f), b.run(f)); print('ok')")
    for isa in [i for i in lowbit.cpu_info()["supported_isas"] if i != "amx"]:
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                           env={**os.environ, "LOWBIT_ISA": isa})
        assert r.returncode == 0 and r.stdout.strip() == "ok", (isa, r.stderr[-2000:])


def test_attention_option_is_checked(tmp_path):
    with pytest.raises(ValueError, match="expected 'f32' or 'bf16'"):
        lowbit.convert(attention_model(), str(tmp_path / "x.qbin"), attention="fp16")
