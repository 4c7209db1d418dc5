"""Loading is an mmap plus validation: a 100 MB .qbin loads in under 30 ms with
both checksums verified and under 5 ms with verify=False (best of several
loads, file in the page cache)."""

import time

import numpy as np
import pytest

import lowbit
from lowbit.format import save
from lowbit.ir import Graph, Node, Tensor, ValueInfo
from lowbit.passes import pack_dense_weights


def big_file(path, n_layers=5, k=2048, n=2560):
    rng = np.random.default_rng(0)
    tensors, nodes, prev = {}, [], "x"
    dims = [k] + [n if i % 2 == 0 else k for i in range(n_layers)]
    for i in range(n_layers):
        w = rng.standard_normal((dims[i], dims[i + 1]), dtype=np.float32)
        tensors[f"w{i}"] = Tensor.from_array(f"w{i}", w)
        tensors[f"b{i}"] = Tensor.from_array(f"b{i}", np.zeros(dims[i + 1], np.float32))
        out = "y" if i == n_layers - 1 else f"h{i}"
        nodes.append(Node("Dense", [prev, f"w{i}", f"b{i}"], [out], {"activation": 1}, f"fc{i}"))
        prev = out
    g = Graph([ValueInfo("x", "float32", ("batch", k))], [ValueInfo("y", "float32", ("batch", dims[-1]))], nodes,
              tensors)
    return save(pack_dense_weights(g), path)


def best_load_ms(path, verify, reps=7):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        m = lowbit.load(path, verify=verify)
        times.append(time.perf_counter() - t0)
        del m
    return min(times) * 1e3


@pytest.fixture(scope="module")
def path_100mb(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("big") / "big.qbin")
    size = big_file(p)
    assert size > 100e6
    return p


def test_load_100mb_verified_under_30ms(path_100mb):
    ms = best_load_ms(path_100mb, True)
    print(f"load 100 MB verified: {ms:.2f} ms")
    assert ms < 30, ms


def test_load_100mb_unverified_under_5ms(path_100mb):
    ms = best_load_ms(path_100mb, False)
    print(f"load 100 MB verify=False: {ms:.2f} ms")
    assert ms < 5, ms


def test_loaded_big_model_runs(path_100mb):
    m = lowbit.load(path_100mb)
    x = np.random.default_rng(1).standard_normal((2, 2048)).astype(np.float32)
    y = m.run(x)
    assert y.shape == (2, 2560) and np.isfinite(y).all() and (y >= 0).all()
