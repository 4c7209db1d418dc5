"""Sparse and low-rank layers end to end (issue 4): ONNX weights with many zeros
become sparse, two MatMul/Gemm in a row with a small inner dimension become one
LowRank layer, the per-layer choice is made by timing and shown in the report and
in Model.layers(), and a layer never gets a form slower than its dense one."""

import os

import numpy as np
import pytest

import lowbit
from lowbit import _core
from lowbit.passes import sparse as sp


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    return onnx, TensorProto, helper, numpy_helper


def save_model(path, nodes, inits, k, n):
    onnx, TP, helper, numpy_helper = _onnx()
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", k])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", n])],
                          [numpy_helper.from_array(v, name) for name, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def sparse_mlp(tmp_path, k=96, n=40, density=0.1, seed=0):
    _, _, helper, _ = _onnx()
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((k, k)).astype(np.float32) * (rng.random((k, k)) < density)
    b1 = rng.standard_normal(k).astype(np.float32)
    w2 = rng.standard_normal((k, n)).astype(np.float32) * np.repeat(rng.random((k // 4, n)) < 0.2, 4, axis=0)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    p = save_model(str(tmp_path / "sparse.onnx"), nodes, {"w1": w1, "b1": b1, "w2": w2}, k, n)
    ref = lambda x: np.maximum(x @ w1 + b1, 0) @ w2  # noqa: E731
    return p, ref


def lowrank_model(tmp_path, k=64, r=8, n=80, act_between=False, bias1=True, seed=1):
    _, _, helper, _ = _onnx()
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((k, r)).astype(np.float32)
    u = rng.standard_normal((r, n)).astype(np.float32)
    b1 = rng.standard_normal(r).astype(np.float32)
    b2 = rng.standard_normal(n).astype(np.float32)
    mk = helper.make_node
    nodes = [mk("Gemm", ["x", "v", "b1"] if bias1 else ["x", "v"], ["t"], name="lr_v")]
    mid = "t"
    if act_between:
        nodes.append(mk("Relu", ["t"], ["ta"]))
        mid = "ta"
    nodes += [mk("Gemm", [mid, "u", "b2"], ["h"], name="lr_u"), mk("Relu", ["h"], ["y"])]
    inits = {"v": v, "u": u, "b2": b2}
    if bias1:
        inits["b1"] = b1
    p = save_model(str(tmp_path / "lr.onnx"), nodes, inits, k, n)

    def ref(x):
        t = x @ v + (b1 if bias1 else 0)
        if act_between:
            t = np.maximum(t, 0)
        return np.maximum(t @ u + b2, 0)
    return p, ref


@pytest.mark.parametrize("quant,mode,encs", [(None, "csr", {"f32-csr-s8"}), ("int8", "csr", {"qs8-csr-k16"}),
                                             ("int8", "bsr", {"qs8-bsr1x4-s8"})])
def test_forced_sparse_encodings_run_correctly(tmp_path, quant, mode, encs):
    src, ref = sparse_mlp(tmp_path)
    dst = str(tmp_path / "m.qbin")
    rep = lowbit.convert(src, dst, quant=quant, sparse=mode)
    m = lowbit.load(dst)
    assert {l["encoding"] for l in m.layers() if l["op"] == "Dense"} == encs
    assert all(c["chosen"] in encs and "forced" in c["why"] for c in rep.choices)
    x = np.random.default_rng(5).standard_normal((7, 96)).astype(np.float32)
    want = ref(x)
    tol = 1e-4 if quant is None else 0.03
    np.testing.assert_allclose(m.run(x), want, atol=tol * np.abs(want).max(), rtol=0)


def test_sparse_model_is_bit_identical_across_threads_and_isas(tmp_path):
    src, _ = sparse_mlp(tmp_path, k=256, n=64)
    x = np.random.default_rng(2).standard_normal((33, 256)).astype(np.float32)
    for quant, mode in ((None, "csr"), ("int8", "csr"), ("int8", "bsr")):
        dst = str(tmp_path / f"m-{quant}-{mode}.qbin")
        lowbit.convert(src, dst, quant=quant, sparse=mode)
        m = lowbit.load(dst)
        old = _core.get_num_threads()
        try:
            outs = []
            for t in (1, 2, 4):
                _core.set_num_threads(t)
                outs.append(m.run(x))
        finally:
            _core.set_num_threads(old)
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])


def test_lowrank_pair_becomes_one_layer(tmp_path):
    src, ref = lowrank_model(tmp_path)
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    for quant in (None, "int8", "int4"):
        dst = str(tmp_path / f"lr-{quant}.qbin")
        lowbit.convert(src, dst, quant=quant, sparse="csr")  # forced: factored, no timing
        m = lowbit.load(dst)
        layers = m.layers()
        assert [l["op"] for l in layers] == ["LowRank"], layers
        assert layers[0]["rank"] == 8 and layers[0]["weight_shape"] == (64, 80)
        assert layers[0]["activation"] == "relu"
        want = ref(x)
        tol = {None: 1e-5, "int8": 0.03, "int4": 0.25}[quant]
        y = m.run(x)
        np.testing.assert_allclose(y, want, atol=tol * np.abs(want).max(), rtol=0)
        old = _core.get_num_threads()
        try:
            for t in (2, 3):
                _core.set_num_threads(t)
                np.testing.assert_array_equal(m.run(x), y)
        finally:
            _core.set_num_threads(old)


@pytest.mark.parametrize("kw", [dict(act_between=True), dict(r=60)])
def test_not_low_rank_stays_two_layers(tmp_path, kw):
    src, ref = lowrank_model(tmp_path, **kw)
    dst = str(tmp_path / "m.qbin")
    lowbit.convert(src, dst, sparse="csr")
    ops = [l["op"] for l in lowbit.load(dst).layers()]
    assert "LowRank" not in ops
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_allclose(lowbit.load(dst).run(x), ref(x), rtol=1e-4, atol=1e-4)


def test_sparse_off_keeps_everything_dense(tmp_path):
    src, _ = lowrank_model(tmp_path)
    dst = str(tmp_path / "m.qbin")
    rep = lowbit.convert(src, dst, sparse="off")
    assert [l["op"] for l in rep.layers] == ["Dense", "Dense"] and rep.choices == []


@pytest.mark.skipif(lowbit.cpu_info()["isa"] == "avx512vnni" and lowbit.cpu_info()["avx512_emulated"],
                    reason="the choice is timed: emulated AVX-512 (SIMDe, -O0) makes the dense GEMM slow, not its speed")
def test_half_sparse_layer_stays_dense_and_report_shows_why(tmp_path):
    """A 50%-sparse layer is too dense to gain: it keeps f32-n16, and the report
    and Model.layers() carry the measured times of both forms."""
    _, _, helper, _ = _onnx()
    rng = np.random.default_rng(4)
    k = 512
    w = rng.standard_normal((k, k)).astype(np.float32) * (rng.random((k, k)) < 0.5)
    src = save_model(str(tmp_path / "half.onnx"), [helper.make_node("MatMul", ["x", "w"], ["y"], name="half")],
                     {"w": w}, k, k)
    dst = str(tmp_path / "half.qbin")
    rep = lowbit.convert(src, dst)
    (c,) = rep.choices
    assert c["layer"] == "half" and c["chosen"] == "dense"
    assert set(c["times_us"]) == {"dense", "f32-csr-s8"}
    assert all(c["times_us"][e]["1"] > 0 and c["times_us"][e]["16"] > 0 for e in c["times_us"])
    assert "half: dense" in str(rep)
    (layer,) = lowbit.load(dst).layers()
    assert layer["encoding"] == "f32-n16" and layer["choice"]["times_us"] == c["times_us"]


def test_auto_choice_is_never_slower_than_dense(tmp_path):
    """Whatever auto picks, its measured time beats dense by the margin at every batch."""
    src, _ = sparse_mlp(tmp_path, k=512, n=256, density=0.05)
    for quant in (None, "int8"):
        rep = lowbit.convert(src, str(tmp_path / "a.qbin"), quant=quant, batch=(1, 8))
        assert len(rep.choices) == 2
        for c in rep.choices:
            t = c["times_us"]
            if c["chosen"] != "dense":
                # the recorded times are rounded to 0.1 us: allow that rounding on both sides
                assert all((t[c["chosen"]][m] - 0.05) * sp.MARGIN <= t["dense"][m] + 0.05 for m in ("1", "8")), c
            else:
                assert "no sparse" in c["why"]


def test_timing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path / "cache"))
    src, _ = sparse_mlp(tmp_path, k=128, n=64, seed=9)
    lowbit.convert(src, str(tmp_path / "a.qbin"), batch=(3,))
    path = tmp_path / "cache" / "layer-timings-v1.json"
    assert path.exists()
    import json
    cached = json.loads(path.read_text())
    assert any(k.endswith("|m3") for k in cached)
    # a second convert reuses the measurements: same choices, same times
    r1 = lowbit.convert(src, str(tmp_path / "b.qbin"), batch=(3,))
    r2 = lowbit.convert(src, str(tmp_path / "c.qbin"), batch=(3,))
    assert [c["times_us"] for c in r1.choices] == [c["times_us"] for c in r2.choices]


def test_bad_arguments():
    with pytest.raises(ValueError, match="sparse="):
        lowbit.convert("x.onnx", "y.qbin", sparse="maybe")
    with pytest.raises(ValueError, match="needs quant='int8'"):
        lowbit.convert("x.onnx", "y.qbin", sparse="bsr")


def test_torch_factored_linear_becomes_lowrank(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mod = torch.nn.Sequential(torch.nn.Linear(64, 6, bias=False), torch.nn.Linear(6, 48), torch.nn.ReLU())
    x = torch.randn(3, 64)
    dst = str(tmp_path / "t.qbin")
    lowbit.convert(mod, dst, example_inputs=(x,), sparse="csr")
    m = lowbit.load(dst)
    assert [l["op"] for l in m.layers()] == ["LowRank"]
    np.testing.assert_allclose(m.run(x.numpy()), mod(x).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_lowrank_bit_identical_across_threads(tmp_path):
    src, ref = lowrank_model(tmp_path, k=512, r=32, n=640)
    x = np.random.default_rng(6).standard_normal((33, 512)).astype(np.float32)
    for quant in (None, "int8", "int4"):
        dst = str(tmp_path / f"lrt-{quant}.qbin")
        lowbit.convert(src, dst, quant=quant, sparse="csr")
        m = lowbit.load(dst)
        assert [l["op"] for l in m.layers()] == ["LowRank"]
        old = _core.get_num_threads()
        try:
            _core.set_num_threads(1)
            y = m.run(x)
            for t in (2, 4):
                _core.set_num_threads(t)
                np.testing.assert_array_equal(m.run(x), y)
        finally:
            _core.set_num_threads(old)


@pytest.mark.parametrize("encoding", ["f32-csr-s8", "qs8-csr-k16", "qs8-bsr1x4-s8"])
def test_decode_weight_reads_the_sparse_encodings(encoding):
    """passes.encode.decode_weight, written from docs/format.md, gives back what the packer stored."""
    from lowbit.passes.encode import decode_weight
    rng = np.random.default_rng(3)
    k, n = 70, 29
    w = rng.standard_normal((k, n)).astype(np.float32)
    if encoding == "qs8-bsr1x4-s8":
        w *= np.repeat(rng.random((k // 4 + 1, n)) < 0.3, 4, axis=0)[:k]
    else:
        w *= rng.random((k, n)) < 0.2
    blob, _ = sp.pack_sparse(w, encoding)
    got = decode_weight(encoding, (k, n), blob)
    if encoding == "f32-csr-s8":
        np.testing.assert_array_equal(got, w)
    else:  # the same per-channel int8 codes and scales as quant="int8" (MSE clipping), zeros kept zero
        from lowbit.passes.quantize import quantize_int8
        q, scale = quantize_int8(w)
        np.testing.assert_array_equal(got, q.astype(np.float32) * scale[None, :])


def _bsr_model(tmp_path, name, rng, k, n, density):
    """A one-MatMul ONNX model whose weight has 1x4 blocks along K at `density`, converted to int8 "bsr"."""
    _, _, helper, _ = _onnx()
    w = rng.standard_normal((k, n)).astype(np.float32) * np.repeat(rng.random((k // 4, n)) < density, 4, axis=0)
    src = save_model(str(tmp_path / f"{name}.onnx"), [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
                     {"w": w}, k, n)
    dst = str(tmp_path / f"{name}.qbin")
    lowbit.convert(src, dst, quant="int8", sparse="bsr", outliers=0)
    return dst


def test_bsr_t16_form_by_block_density(tmp_path):
    """On the amx table a 1x4-block layer runs tile products on rebuilt tiles (the T16 form) from 9
    rows at block densities from 18%, from 17 rows between 10% and 18%, and never below 10% (its cost
    is per tile, the SELL-8 kernel's per block); Model.layers() says which, and every path gives the
    scalar table's bits."""
    import subprocess
    import sys
    from conftest import ISAS
    if "amx" not in ISAS:
        pytest.skip("no AMX on this machine")
    rng = np.random.default_rng(12)
    k, n = 512, 256
    code = ("import lowbit, sys, numpy as np; m = lowbit.load(sys.argv[1]); print(m.layers()[0]['kernel']); "
            "x = np.load(sys.argv[2]); np.save(sys.argv[3], np.concatenate([m.run(x[:r]) for r in (8, 9, 16, 17, 40)]))")
    x = rng.standard_normal((40, k)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for density, want in ((0.06, None), (0.14, 17), (0.26, 9)):
        dst = _bsr_model(tmp_path, f"d{density}", rng, k, n, density)
        outs = {}
        for isa in ("scalar", "amx"):
            y = str(tmp_path / f"y-{isa}.npy")
            kernel = subprocess.run([sys.executable, "-c", code, dst, str(tmp_path / "x.npy"), y],
                                    env={**os.environ, "LOWBIT_ISA": isa}, capture_output=True, text=True,
                                    check=True).stdout.strip()
            outs[isa] = np.load(y)
            if isa == "amx":
                if want is None:
                    assert "t16" not in kernel, (density, kernel)
                else:
                    assert kernel.endswith(f"| qs8_bspmm_t16__amx from {want} rows"), (density, kernel)
        np.testing.assert_array_equal(outs["amx"], outs["scalar"], err_msg=str(density))


def test_bsr_t16_form_built_on_first_use_under_concurrent_runs(tmp_path):
    """The op builds a layer's T16 form before the first call that takes it (a model only ever run
    at fewer rows never builds it). Calls from several threads at once, the first ones of 16 and 33
    rows among them, all get the results of a model whose form was built by a single call first."""
    import threading
    from conftest import ISAS
    if "amx" not in ISAS or lowbit.cpu_info()["isa"] != "amx":
        pytest.skip("the amx table is not the selected one")
    rng = np.random.default_rng(13)
    k, n = 512, 384
    dst = _bsr_model(tmp_path, "c", rng, k, n, 0.25)
    xs = [rng.standard_normal((r, k)).astype(np.float32) for r in (1, 16, 33, 9, 2)]
    warm = lowbit.load(dst)
    assert warm.layers()[0]["kernel"].endswith("| qs8_bspmm_t16__amx from 9 rows")
    want = [warm.run(x) for x in xs]
    for trial in range(3):
        m = lowbit.load(dst)
        got, errors = {}, []

        def work(i, order, m=m, got=got, errors=errors):
            try:
                for j in order:
                    got[(i, j)] = m.run(xs[j])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=work, args=(i, list(np.roll(range(len(xs)), i + trial))))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for (i, j), y in got.items():
            np.testing.assert_array_equal(y, want[j], err_msg=f"thread {i} call {j}")


def test_bsr_scratch_holds_the_staged_output_only_where_the_table_unstages(tmp_path):
    """The 1x4-block op's scratch: quantized rows, tiles, and the staged output (M x N fp32)
    only on tables with an unstage kernel (AVX-512); other tables write C directly. On AMX, 16 rows
    run the T16 kernel, whose scratch is the quantized rows alone."""
    import subprocess
    import sys
    from conftest import ISAS
    rng = np.random.default_rng(11)
    k, n = 256, 512
    dst = _bsr_model(tmp_path, "b", rng, k, n, 0.2)
    code = ("import lowbit, sys; m = lowbit.load(sys.argv[1]); "
            "print(m._engine.arena_bytes([[16, 256]]), m._engine.arena_bytes([[1, 256]]), m.layers()[0]['kernel'])")
    got = {}
    for isa in ISAS:
        out = subprocess.run([sys.executable, "-c", code, dst], env={**os.environ, "LOWBIT_ISA": isa},
                             capture_output=True, text=True, check=True).stdout.split(maxsplit=2)
        got[isa] = (out[2].strip(), int(out[0]), int(out[1]))
    staged = 16 * n * 4  # 64 slices of 8 columns x 16 rows, fp32
    tiles = 16 * k       # 16 rows of 256 activation bytes
    for isa, (kernel, m16, m1) in got.items():
        if isa == "amx":  # from 9 rows the T16 kernel: the quantized rows (16 x 256) only, no At, no staged output
            assert "qs8_bspmm_t16__amx from 9 rows" in kernel, kernel
            assert tiles - 1024 <= m16 - m1 < tiles + 4096, (isa, kernel, m16, m1)
            continue
        unstages = isa == "avx512vnni"
        assert m16 - m1 >= tiles + (staged if unstages else 0), (isa, kernel, m16, m1)
        assert m16 - m1 < tiles + staged + 4096 if unstages else m16 - m1 < staged, (isa, kernel, m16, m1)
