"""Resources: no growth over 10,000 runs, shapes needing more memory than the
machine has fail before anything is allocated, and deep, cyclic or broken
ONNX graphs fail (or import) with clear errors, without recursion or hangs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import lowbit
from lowbit import FormatError, _core
from lowbit.format import save
from lowbit.ir import Graph, Node, Tensor, ValueInfo



def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# Run in a fresh interpreter: in the long-lived test process, RSS also moves when the
# garbage collector finalizes objects left by earlier tests (torch tensors, models) and
# their destructors fault in pages of large libraries -- one-off steps of 3-7 MB seen in
# full-suite runs that have nothing to do with lowbit's runs.
_RSS_SCRIPT = r"""
import gc, json, os, sys
import numpy as np
import lowbit
sys.path.insert(0, sys.argv[2])
import models

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

p = sys.argv[1]
lowbit.convert(models.mlp4(seed=1, sizes=(32, 64, 48, 32, 8)), p)
m = lowbit.load(p)
lowbit.set_num_threads(2)
# 20 batch sizes: more than the 16-entry plan cache, so plans are evicted and rebuilt too
xs = [np.random.default_rng(b).standard_normal((b, 32)).astype(np.float32) for b in range(1, 21)]
for i in range(1000):  # warm-up: arenas, plans, allocator pools
    m.run(xs[i % len(xs)])
gc.collect()
base = rss()
samples = []
for i in range(10_000):
    y = m.run(xs[i % len(xs)])
    if i % 1000 == 999:
        gc.collect()
        samples.append(rss() - base)
print(json.dumps(samples))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.skipif(os.environ.get("LOWBIT_SANITIZE") == "1", reason="ASan keeps freed memory in quarantine")
def test_rss_flat_over_10000_runs(tmp_path):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, for models.py
    r = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / "m.qbin"), here],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    samples = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(samples) == 10
    # A leak of even 100 bytes per run would show as 1 MB; allow 2 MB of allocator noise.
    assert max(samples) < 2 << 20, [s // 1024 for s in samples]
    assert samples[-1] - samples[0] < 1 << 20, [s // 1024 for s in samples]


def _broadcast_model(path: str, a_shape, b_shape) -> None:
    """y = a + b: a [n, 1] and b [1, m] broadcast to [n, m]."""
    g = Graph([ValueInfo("a", "float32", tuple(a_shape)), ValueInfo("b", "float32", tuple(b_shape))],
              [ValueInfo("y", "float32", ())], [Node("Add", ["a", "b"], ["y"], {}, "add")], {})
    save(g, path)


def test_static_shapes_beyond_memory_fail_at_load_before_allocating(tmp_path):
    p = str(tmp_path / "huge.qbin")
    n = 1 << 20  # [2^20, 2^20] float32 = 4 TiB of output
    _broadcast_model(p, (n, 1), (1, n))
    peak = _peak()
    with pytest.raises(FormatError) as ei:
        lowbit.load(p)
    msg = str(ei.value)
    assert p in msg and "need too much memory" in msg and "memory limit" in msg, msg
    assert _peak() - peak < 64 << 20  # nothing near the declared size was touched


def test_dynamic_shapes_beyond_memory_fail_at_run_before_allocating(tmp_path):
    p = str(tmp_path / "huge-dyn.qbin")
    _broadcast_model(p, ("n", 1), (1, "m"))
    m = lowbit.load(p)  # symbolic dims: planned at run time
    n = 1 << 19  # 2 MiB inputs, 1 TiB output
    a = np.ones((n, 1), np.float32)
    b = np.ones((1, n), np.float32)
    peak = _peak()
    with pytest.raises(ValueError, match="above the memory limit") as ei:
        m.run({"a": a, "b": b})
    assert isinstance(ei.value, _core.MemoryLimitError)
    assert _peak() - peak < 64 << 20
    small = m.run({"a": a[:3], "b": b[:, :4]})  # the model still works for sane shapes
    assert small.shape == (3, 4) and (small == 2).all()


def test_memory_limit_applies_to_intermediates_and_can_be_lowered(tmp_path):
    p = str(tmp_path / "chain.qbin")
    g = Graph([ValueInfo("x", "float32", ("n", 256))], [ValueInfo("y", "float32", ())],
              [Node("Relu", ["x"], ["h"], {}, "r1"), Node("Neg", ["h"], ["h2"], {}, "n"),
               Node("Abs", ["h2"], ["y"], {}, "a")], {})
    save(g, p)
    m = lowbit.load(p)
    x = np.ones((1024, 256), np.float32)  # 1 MiB per value
    default = _core.memory_limit()
    assert default > 1 << 26
    try:
        _core.set_memory_limit(3 << 20)  # output (1 MiB) + two live intermediates (2 MiB) fit exactly
        assert (m.run(x) == 1).all()
        _core.set_memory_limit((3 << 20) - 1)
        assert (m.run(x) == 1).all()  # the limit applies when a shape is planned; this plan is cached
        fresh = lowbit.load(p)
        with pytest.raises(ValueError, match="intermediates and outputs"):
            fresh.run(x)
    finally:
        _core.set_memory_limit(0)
    assert _core.memory_limit() == default


def test_memory_limit_from_environment():
    import subprocess
    import sys
    env = dict(os.environ, LOWBIT_MAX_MEMORY=str(123456789),
               PYTHONPATH=os.path.dirname(os.path.dirname(lowbit.__file__)) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", "from lowbit import _core; print(_core.memory_limit())"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.strip() == "123456789", r.stderr


def test_loader_rejects_a_huge_declared_tensor_before_allocating(tmp_path):
    # The tensor table claims 4 TiB of weights; the file has 64 bytes of data.
    g = Graph([ValueInfo("x", "float32", (2, 4))], [ValueInfo("y", "float32", ())],
              [Node("Add", ["x", "w"], ["y"], {}, "add")], {"w": Tensor.from_array("w", np.zeros(4, np.float32))})
    p = str(tmp_path / "t.qbin")
    save(g, p)
    import qbin_tools
    header, data, _ = qbin_tools.read(p)
    header["tensors"][0]["shape"] = [1 << 20, 1 << 20]
    header["tensors"][0]["nbytes"] = 4 << 40
    qbin_tools.write(p, header, data)
    peak = _peak()
    with pytest.raises(FormatError, match="outside the data region"):
        lowbit.load(p)
    assert _peak() - peak < 64 << 20


# -- ONNX graphs: deep, cyclic, missing initializers, shape mismatches ----------

def _chain_model(n: int, batch="batch") -> "onnx.ModelProto":  # noqa: F821 - onnx is imported as a module only here
    rng = np.random.default_rng(0)
    nodes, inits = [], {}
    prev = "x"
    for i in range(n):
        c = f"c{i}"
        inits[c] = np.array(rng.uniform(-0.01, 0.01), np.float32).reshape(1)
        op = ("Add", "Relu", "Sub", "Abs")[i % 4]
        ins = [prev, c] if op in ("Add", "Sub") else [prev]
        out = "y" if i == n - 1 else f"v{i}"
        nodes.append(helper.make_node(op, ins, [out], name=f"n{i}"))
        prev = out
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, inits


def _chain_ref(x: np.ndarray, n: int, inits) -> np.ndarray:
    for i in range(n):
        op = ("Add", "Relu", "Sub", "Abs")[i % 4]
        c = inits[f"c{i}"]
        x = x + c if op == "Add" else np.maximum(x, 0) if op == "Relu" else x - c if op == "Sub" else np.abs(x)
    return x


def test_deep_chain_of_10000_nodes(tmp_path):
    n = 10_000
    m, inits = _chain_model(n)
    p = str(tmp_path / "deep.qbin")
    t0 = time.perf_counter()
    lowbit.convert(m, p)
    model = lowbit.load(p)
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    y = model.run(x)
    elapsed = time.perf_counter() - t0
    np.testing.assert_allclose(y, _chain_ref(x, n, inits), rtol=1e-5, atol=1e-5)
    assert len(model.graph.nodes) == n
    assert elapsed < 30, f"convert + load + run of a {n}-node chain took {elapsed:.1f} s"
    # the planner reuses memory along the chain: two live [3, 8] buffers (128 bytes each after alignment)
    assert model._engine.arena_bytes([[3, 8]]) == 256


def test_wide_graph_plans_in_linear_time(tmp_path):
    # 3,000 values all live until the end: past the planner's work budget, so it
    # lays them out without reuse (O(n)) instead of searching quadratically.
    n = 3000
    nodes = [Node("Relu", ["x"], [f"v{i}"], {}, f"r{i}") for i in range(n)]
    prev = "v0"
    for i in range(1, n):
        out = "y" if i == n - 1 else f"s{i}"
        nodes.append(Node("Add", [prev, f"v{i}"], [out], {}, f"a{i}"))
        prev = out
    p = str(tmp_path / "wide.qbin")
    save(Graph([ValueInfo("x", "float32", ("n", 4))], [ValueInfo("y", "float32", ())], nodes, {}), p)
    m = lowbit.load(p)
    x = np.array([[1, -2, 3, 0.5]], np.float32)
    t0 = time.perf_counter()
    y = m.run(x)
    assert time.perf_counter() - t0 < 5
    np.testing.assert_array_equal(y, n * np.maximum(x, 0))
    assert m._engine.arena_bytes([[1, 4]]) == (2 * n - 2) * 64  # every intermediate has its own 64-byte slot


def test_cyclic_onnx_graph_is_rejected(tmp_path):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second")]
    g = helper.make_graph(nodes, "cyc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="node 'first' \\(Add\\) reads 'b', which node 'second' produces later: "
                                         "the graph is cyclic"):
        lowbit.convert(m, str(tmp_path / "c.qbin"))
    # a node reading its own output
    nodes = [helper.make_node("Relu", ["s"], ["s"], name="self")]
    g = helper.make_graph(nodes, "self", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2])])
    with pytest.raises(ValueError, match="node 'self' \\(Relu\\) reads 's'"):
        lowbit.convert(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "s.qbin"))


def test_missing_initializer_is_named(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])])
    with pytest.raises(ValueError, match="node 'fc' \\(MatMul\\) reads 'w', which is not a graph input, an "
                                         "initializer or any node's output \\(a missing initializer\\?\\)"):
        lowbit.convert(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.qbin"))


def _gemm_model(in_shape, k_weight):
    w = np.ones((k_weight, 5), np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_mismatch_static_fails_at_convert(tmp_path):
    with pytest.raises(ValueError) as ei:
        lowbit.convert(_gemm_model([3, 12], 10), str(tmp_path / "s.qbin"))
    msg = str(ei.value)
    assert "node 'fc' (Dense)" in msg and "last dimension 10" in msg and "(3, 12)" in msg, msg


def test_shape_mismatch_dynamic_fails_at_run(tmp_path):
    p = str(tmp_path / "d.qbin")
    lowbit.convert(_gemm_model(["batch", "k"], 10), p)
    m = lowbit.load(p)
    assert m.run(np.ones((2, 10), np.float32)).shape == (2, 5)
    with pytest.raises(ValueError, match="node 'fc' \\(Dense\\): expected input with last dimension 10, got shape "
                                         "\\(2, 12\\)"):
        m.run(np.ones((2, 12), np.float32))
