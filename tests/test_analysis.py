"""lowbit.analysis: the per-layer table (sizes before/after, totals), example
inputs, latency statistics, and per-layer latency run through lowbit itself."""

import numpy as np
import pytest

import lowbit
import models
from lowbit import analysis


def _convert(tmp_path, onnx_model, **kw):
    src = tmp_path / "m.onnx"
    src.write_bytes(onnx_model.SerializeToString())
    dst = str(tmp_path / "m.qbin")
    lowbit.convert(str(src), dst, **kw)
    return lowbit.load(dst)


def test_layer_table_sizes_and_totals(tmp_path):
    m = _convert(tmp_path, models.mlp4(sizes=(64, 96, 64, 48, 10)), quant="int8")
    rows = analysis.layer_table(m)
    dense = [r for r in rows if r["op"] == "Dense"]
    assert len(dense) == 4
    for r in dense:
        k, n = r["weight_shape"]
        assert r["fp32_bytes"] == 4 * (k * n + n)  # weight + bias as fp32
        assert r["encoding"] == "qs8-n16k4"
        assert r["ratio"] == pytest.approx(r["fp32_bytes"] / r["bytes"])
        assert r["sparsity"] is None and r["rank"] is None  # dense encodings
    t = analysis.totals(rows, m.file_size)
    assert t["weight_bytes"] == sum(r["bytes"] for r in rows)
    assert t["fp32_weight_bytes"] == sum(r["fp32_bytes"] for r in rows)
    assert 3.0 < t["weight_compression"] < 4.0  # int8 weights + fp32 scales and padding
    assert t["file_bytes"] == m.file_size


def test_sparsity_and_rank_come_from_the_header_meta(tmp_path):
    m = _convert(tmp_path, models.mlp4(sizes=(16, 32, 24, 20, 5)))
    w = m.graph.tensors[m.graph.nodes[0].inputs[1]]
    w.meta.update({"nnz": w.shape[0] * w.shape[1] // 4, "rank": 3})
    r = analysis.layer_table(m)[0]
    assert r["sparsity"] == pytest.approx(0.75) and r["rank"] == 3
    w.meta["density"] = 0.1  # what the sparse encodings write
    assert analysis.layer_table(m)[0]["sparsity"] == pytest.approx(0.9)


def test_example_inputs_follow_declared_shapes():
    vi = [lowbit.ir.ValueInfo("ids", "int64", ("batch", "sequence")),
          lowbit.ir.ValueInfo("attention_mask", "int64", ("batch", "sequence")),
          lowbit.ir.ValueInfo("x", "float32", ("batch", 3, 8))]
    f = analysis.example_inputs(vi, batch=4, dims={"sequence": 7})
    assert f["ids"].shape == (4, 7) and f["ids"].dtype == np.int64 and 0 <= f["ids"].min() and f["ids"].max() < 100
    assert (f["attention_mask"] == 1).all()
    assert f["x"].shape == (4, 3, 8) and f["x"].dtype == np.float32
    assert analysis.parse_dims(["sequence=128", "b=1"]) == {"sequence": 128, "b": 1}
    for bad in ("sequence", "=3", "s=0", "s=x"):
        with pytest.raises(ValueError, match="NAME=N"):
            analysis.parse_dims([bad])


def test_latency_stats_values():
    t = np.array([0.001] * 98 + [0.002, 0.010])
    s = analysis.latency_stats(t, samples_per_call=8)
    assert s["p50_ms"] == pytest.approx(1.0) and s["min_ms"] == pytest.approx(1.0)
    assert s["p99_ms"] == pytest.approx(np.percentile(t, 99) * 1e3)
    assert s["mean_ms"] == pytest.approx(t.mean() * 1e3)
    assert s["throughput_per_s"] == pytest.approx(8 / t.mean())
    assert s["iterations"] == 100


def test_time_calls_respects_min_iters_and_budget():
    calls = []
    t = analysis.time_calls(lambda: calls.append(1), min_seconds=0.0, min_iters=7, warmup=2)
    assert len(t) == 7 and len(calls) == 9


def _alone(model, feeds):
    return analysis._layer_latency_alone(model, feeds, repeat=3, on_layer=None)


def test_per_layer_latency_alone_reproduces_the_model(tmp_path):
    """Running the layers one by one (the fallback timing path) must compute what the
    whole model computes: the same final output, one row per node."""
    m = _convert(tmp_path, models.mlp4(sizes=(16, 32, 24, 20, 5)))
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    seen = []
    rows = analysis._layer_latency_alone(m, {"x": x}, repeat=3, on_layer=lambda i, n: seen.append((i, n)))
    assert [r["name"] for r in rows] == [n.name for n in m.graph.nodes]
    assert all(r["seconds"] > 0 and r["min_seconds"] <= r["seconds"] for r in rows)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert seen[-1] == (len(rows), len(rows))
    # the values computed layer by layer feed the next layer: check the last one
    values = {"x": x}
    for node in m.graph.nodes:
        _, _, outs = analysis._node_runner(m.graph, node, values)
        for o, y in zip(node.outputs, outs):
            values[o] = y
    np.testing.assert_array_equal(values[m.output_names[0]], m.run(x))


def test_per_layer_latency_on_integer_and_mask_ops(tmp_path):
    """A transformer encoder has int64 shape arithmetic and uint8 masks between
    layers; the one-layer graphs must get each intermediate dtype right."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()

    class Positional(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

    ids = torch.randint(0, 100, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.int64)
    dst = str(tmp_path / "bert.qbin")
    lowbit.convert(Positional(bert), dst, example_inputs=(ids, mask))
    m = lowbit.load(dst)
    feeds = dict(zip(m.input_names, (ids.numpy(), mask.numpy())))
    rows = _alone(m, feeds)
    assert len(rows) == len(m.graph.nodes)
    values = dict(feeds)
    for node in m.graph.nodes:
        _, _, outs = analysis._node_runner(m.graph, node, values)
        for o, y in zip(node.outputs, outs):
            values[o] = y
    dtypes = {str(v.dtype) for v in values.values()}
    assert "int64" in dtypes  # shape arithmetic ran as its own layers
    np.testing.assert_array_equal(values[m.output_names[0]], m.run(feeds))


def test_layer_latency_returns_a_method(tmp_path):
    m = _convert(tmp_path, models.mlp4(sizes=(16, 32, 24, 20, 5)))
    rows, how = analysis.layer_latency(m, {"x": np.ones((2, 16), np.float32)}, repeat=2)
    assert len(rows) == len(m.graph.nodes) and "median of 2" in how
