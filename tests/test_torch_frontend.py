"""lowbit.convert on a live torch.nn.Module: argument checks and side effects."""

import os

import numpy as np
import pytest

import lowbit

torch = __import__("torch") if os.environ.get("LOWBIT_REQUIRE_TORCH") else pytest.importorskip("torch")


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return torch.relu(self.drop(self.fc(x)))


def test_needs_example_inputs(tmp_path):
    with pytest.raises(ValueError, match="example_inputs"):
        lowbit.convert(Tiny(), str(tmp_path / "m.qbin"))
    with pytest.raises(TypeError, match="tuple of tensors"):
        lowbit.convert(Tiny(), str(tmp_path / "m.qbin"), example_inputs={"x": torch.zeros(1, 6)})


def test_exports_in_eval_mode_and_restores_modes(tmp_path):
    torch.manual_seed(0)
    m = Tiny()
    m.train()
    m.fc.eval()  # mixed modes must come back as they were
    lowbit.convert(m, str(tmp_path / "m.qbin"), example_inputs=torch.zeros(2, 6))
    assert m.training and not m.fc.training and m.drop.training
    q = lowbit.load(str(tmp_path / "m.qbin"))
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)  # batch differs from the example
    m.eval()
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(q.run(x), ref, rtol=1e-5, atol=1e-6)
    assert [l["op"] for l in q.layers()] == ["Dense"]  # Linear + ReLU, dropout gone in eval mode


# ---- the torch.export path (frontends/torch_export.py) and its fallback ------------------

RTOL = 1e-4  # max |lowbit - torch| / max |torch|


def _rel(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def test_resnet18_through_torch_export(tmp_path):
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from torch_models import ResNet18, randomize_bn
    torch.manual_seed(0)
    model = randomize_bn(ResNet18(num_classes=100, width=32))
    report = lowbit.convert(model, str(tmp_path / "r.qbin"), example_inputs=(torch.randn(1, 3, 64, 64),))
    m = lowbit.load(str(tmp_path / "r.qbin"))
    assert m.graph.metadata["source"] == "torch.export" and "imported through torch.export" in report.notes
    assert m.graph.inputs[0].shape == ("batch", 3, 64, 64)
    ops = [l["op"] for l in m.layers()]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 20  # folded into the 20 convolutions
    for batch in (1, 3):  # the example had batch 1: the batch stays dynamic
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            ref = model(x).numpy()
        got = m.run(x.numpy())
        assert got.shape == ref.shape and _rel(got, ref) <= RTOL


def _bert(attn):
    transformers = pytest.importorskip("transformers") if not os.environ.get("LOWBIT_REQUIRE_TORCH") \
        else __import__("transformers")
    cfg = transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=128)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()

    class Positional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = bert

        def forward(self, ids, mask):
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state
    return Positional().eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bert_through_torch_export_two_sequence_lengths(tmp_path, attn):
    module = _bert(attn)
    ids = torch.randint(1, 300, (1, 8))
    lowbit.convert(module, str(tmp_path / "b.qbin"), example_inputs=(ids, torch.ones_like(ids)))
    m = lowbit.load(str(tmp_path / "b.qbin"))
    assert m.graph.metadata["source"] == "torch.export"
    assert [i.shape for i in m.graph.inputs] == [("batch", "sequence")] * 2
    ops = [l["op"] for l in m.layers()]
    # each norm's Add (embeddings, and the residuals of the two layers) folded into it
    assert ops.count("AddLayerNormalization") == 5 and ops.count("Dense") == 12
    for batch, seq in ((1, 9), (2, 37)):  # one file, two sequence lengths, a padded row
        rng = np.random.default_rng(seq)
        ids = rng.integers(1, 300, (batch, seq)).astype(np.int64)
        mask = np.ones((batch, seq), np.int64)
        mask[-1, seq // 2:] = 0
        with torch.no_grad():
            ref = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        got = m.run({"input_0": ids, "input_1": mask})
        assert got.shape == (batch, seq, 64) and _rel(got, ref) <= RTOL, (seq, _rel(got, ref))


class DataDependent(torch.nn.Module):
    """Python control flow on a tensor's value: torch.export cannot capture it; tracing takes one branch."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        if x.sum() > 0:
            return torch.relu(self.fc(x))
        return -self.fc(x)


def test_falls_back_to_torchscript_onnx_and_says_so(tmp_path):
    torch.manual_seed(0)
    model = DataDependent().eval()
    x = torch.rand(2, 8)  # positive: the traced branch
    with pytest.warns(Warning):  # the TorchScript tracer warns about the Python branch
        report = lowbit.convert(model, str(tmp_path / "f.qbin"), example_inputs=(x,))
    m = lowbit.load(str(tmp_path / "f.qbin"))
    assert m.graph.metadata["source"] == "torch.onnx(torchscript)"
    assert m.graph.metadata["fallback_reason"]
    assert any(n.startswith("imported through torch.onnx(torchscript): torch.export path failed") for n in report.notes)
    x2 = torch.rand(6, 8)
    with torch.no_grad():
        np.testing.assert_allclose(m.run(x2.numpy()), model(x2).numpy(), rtol=1e-5, atol=1e-6)


def test_unsupported_aten_op_falls_back(tmp_path):
    class Cumsum(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1) * 2.0  # no ATen handler for cumsum, and no ONNX handler either

    with pytest.raises(lowbit.UnsupportedOpError, match="CumSum.*torch.export could not capture.*cumsum"):
        lowbit.convert(Cumsum(), str(tmp_path / "c.qbin"), example_inputs=(torch.rand(2, 4),))


# ---- torch.nn.utils.prune masks ------------------------------------------------------------

def _dense_weights(m):
    from lowbit.passes.encode import decode_weight
    out = []
    for n in m.graph.nodes:
        if n.op == "Dense":
            t = m.graph.tensors[n.inputs[1]]
            out.append((t.encoding, decode_weight(t.encoding, t.shape, t.data)))
    return out


@pytest.mark.parametrize("sparse", ["auto", "csr"])
def test_pruned_linear_keeps_the_mask_zeros(tmp_path, sparse):
    from torch.nn.utils import prune
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 384), torch.nn.ReLU(), torch.nn.Linear(384, 32)).eval()
    prune.l1_unstructured(model[0], "weight", amount=0.9)
    assert hasattr(model[0], "weight_orig") and hasattr(model[0], "weight_mask")
    lowbit.convert(model, str(tmp_path / "p.qbin"), example_inputs=(torch.randn(1, 256),), sparse=sparse)
    m = lowbit.load(str(tmp_path / "p.qbin"))
    assert m.graph.metadata["source"] == "torch.export"
    (enc, w0), (_, w1) = _dense_weights(m)
    if sparse == "csr":
        assert enc == "f32-csr-s8"
    mask = model[0].weight_mask.numpy().T  # [K, N] like the stored weight
    assert np.array_equal(w0 == 0, mask == 0)  # exactly the mask's zeros, no more, no fewer
    assert np.array_equal(w0, model[0].weight.detach().numpy().T)
    x = torch.randn(5, 256)
    with torch.no_grad():
        ref = model(x).numpy()
    assert _rel(m.run(x.numpy()), ref) <= RTOL


# ---- torch.ao dynamically quantized Linear ------------------------------------------------

def _qs8_codes_and_scales(t):
    """Codes [K, N] and scales [N] of a qs8-n16k4 tensor, read per docs/format.md."""
    k, n = t.shape
    p, kp = -(-n // 16), -(-k // 4) * 4
    raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
    wq = raw[:p * kp * 16].view(np.int8).reshape(p, kp // 4, 16, 4).transpose(1, 3, 0, 2).reshape(kp, p * 16)
    s = raw[p * kp * 16:p * kp * 16 + p * 64].view(np.float32)[:n]
    return wq[:k, :n].astype(np.int32), s


@pytest.fixture
def x86_engine():
    old = torch.backends.quantized.engine
    if "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"
    yield
    torch.backends.quantized.engine = old


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_int8_linear_keeps_codes_and_scales(tmp_path, x86_engine, per_channel):
    import warnings
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
    torch.manual_seed(0)
    k, n = 96, 40
    lin = torch.nn.Linear(k, n)
    with torch.no_grad():  # every row's largest magnitude positive: no code lands on -128
        w = lin.weight
        i = w.abs().argmax(dim=1)
        w[torch.arange(n), i] = w.abs().max(dim=1).values
    model = torch.nn.Sequential(lin, torch.nn.ReLU()).eval()
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)
    report = lowbit.convert(qm, str(tmp_path / "q.qbin"), example_inputs=(torch.randn(2, k),))
    m = lowbit.load(str(tmp_path / "q.qbin"))
    assert not any("-128" in note for note in report.notes)
    dense = [nd for nd in m.graph.nodes if nd.op == "Dense"]
    assert len(dense) == 1
    t = m.graph.tensors[dense[0].inputs[1]]
    assert t.encoding == "qs8-n16k4"
    codes, scales = _qs8_codes_and_scales(t)
    qw = qm[0].weight()
    assert np.array_equal(codes, qw.int_repr().numpy().astype(np.int32).T)  # the module's codes, not re-quantized
    want = qw.q_per_channel_scales().float().numpy() if per_channel else np.full(n, qw.q_scale(), np.float32)
    assert np.array_equal(scales, want.astype(np.float32))

    # Outputs: both quantize activations at run time, differently (torch x86: one uint8 scale per
    # tensor over a 7-bit range; lowbit: one symmetric int8 scale per row), with the same weights W.
    # Bound per output: sum_k |W[n, k]| * (s_torch + s_row / 2), s_torch = (max(x,0) - min(x,0)) / 127
    # (rounding plus zero-point rounding), s_row = max|x_row| / 127 (half a step of rounding).
    x = torch.randn(8, k) * 2
    with torch.no_grad():
        ref = qm(x).numpy()
        pre_ref = torch.nn.functional.linear(x, qw.dequantize(), qm[0].bias()).numpy()
    got = m.run(x.numpy())
    xs = x.numpy()
    s_t = (max(xs.max(), 0) - min(xs.min(), 0)) / 127
    s_row = np.abs(xs).max(axis=1, keepdims=True) / 127
    bound = (s_t + s_row / 2) * np.abs(qw.dequantize().numpy()).sum(axis=1)[None, :] + 1e-5
    assert (np.abs(got - ref) <= bound).all()  # ReLU is 1-Lipschitz: the bound holds after it
    assert (np.abs(got - np.maximum(pre_ref, 0)) <= s_row / 2 * np.abs(qw.dequantize().numpy()).sum(axis=1) + 1e-5).all()
    assert np.abs(got - ref).max() > 0  # really an int8 path, not the float weights


def test_dynamic_int8_linear_minus_128_moves_to_minus_127(tmp_path, x86_engine):
    import warnings
    from torch.ao.quantization import quantize_dynamic
    torch.manual_seed(1)
    lin = torch.nn.Linear(64, 24)
    with torch.no_grad():
        lin.weight[3, 5] = -lin.weight.abs().max() * 1.5  # the tensor's largest magnitude, negative: code -128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = quantize_dynamic(torch.nn.Sequential(lin).eval(), {torch.nn.Linear}, dtype=torch.qint8)
    q = qm[0].weight().int_repr().numpy().astype(np.int32)
    assert (q == -128).sum() == 1
    report = lowbit.convert(qm, str(tmp_path / "q.qbin"), example_inputs=(torch.randn(1, 64),))
    assert any("1 int8 weight code(s) of -128 stored as -127" in note for note in report.notes)
    m = lowbit.load(str(tmp_path / "q.qbin"))
    t = next(m.graph.tensors[nd.inputs[1]] for nd in m.graph.nodes if nd.op == "Dense")
    codes, _ = _qs8_codes_and_scales(t)
    assert np.array_equal(codes, np.maximum(q, -127).T)
