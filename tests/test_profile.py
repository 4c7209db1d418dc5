"""Model.profile: per-node wall times of real runs, in graph order, without
changing what the model computes; lowbit.format_profile renders them."""

import numpy as np
import pytest

import lowbit

import models


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("prof") / "m.qbin")
    lowbit.convert(models.mlp4(seed=5), path)
    return lowbit.load(path)


def test_profile_rows_follow_the_graph(mlp):
    x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    rows = mlp.profile(x, repeat=5)
    layers = mlp.layers()
    assert [r["name"] for r in rows] == [l["name"] for l in layers]
    assert [r["op"] for r in rows] == [l["op"] for l in layers]
    assert [r["kernel"] for r in rows] == [l["kernel"] for l in layers]
    dense = [r for r in rows if r["op"] == "Dense"]
    assert dense and all(r["seconds"] > 0 and 0 < r["min_seconds"] <= r["seconds"] for r in dense)
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-9
    # profiling runs the same computation
    assert np.array_equal(mlp.run(x), mlp.run(x))


def test_profile_times_grow_with_the_work(mlp):
    small = sum(r["min_seconds"] for r in mlp.profile(np.ones((1, 64), np.float32), repeat=5))
    big = sum(r["min_seconds"] for r in mlp.profile(np.ones((512, 64), np.float32), repeat=5))
    assert big > small


def test_profile_checks_its_arguments(mlp):
    x = np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="repeat"):
        mlp.profile(x, repeat=0)
    with pytest.raises(ValueError, match="warmup"):
        mlp.profile(x, warmup=-1)
    with pytest.raises(ValueError, match="expected"):
        mlp.profile(np.ones((2, 63), np.float32))


def test_format_profile(mlp):
    rows = mlp.profile(np.ones((4, 64), np.float32), repeat=3)
    text = lowbit.format_profile(rows)
    assert all(r["name"] in text for r in rows)
    assert "total" in text.splitlines()[-1]
    by_op = lowbit.format_profile(rows, by_op=True)
    n_plain = sum(1 for r in rows if r["op"] == "Dense" and "gelu" not in r["kernel"])
    assert f"{n_plain} node" in by_op and "Dense" in by_op  # grouped by op and kernel
    assert len(lowbit.format_profile(rows, top=1).splitlines()) == 3  # header, one row, total
