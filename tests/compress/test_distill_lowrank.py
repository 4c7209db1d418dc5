"""Distillation loss and low-rank factorization, and the low-rank accuracy gate of issue 6."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from lowbit import compress as lc  # noqa: E402


def test_distillation_loss_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    T, alpha = 3.0, 0.6
    pt = torch.softmax(t / T, -1)
    kl = (pt * (pt.log() - torch.log_softmax(s / T, -1))).sum(-1).mean()
    want = alpha * T * T * kl + (1 - alpha) * F.cross_entropy(s, y)
    assert float(lc.distillation_loss(s, t, y, T, alpha)) == pytest.approx(float(want), rel=1e-5)
    assert float(lc.distillation_loss(t, t, None, T, 1.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        lc.distill(nn.Linear(2, 2), nn.Linear(2, 2), (torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)), T=0)


def test_distill_with_feature_matching_moves_features(cnn):
    model, train, test, _ = cnn
    student = lc.prune_channels(model, 0.5, train[0][:2])
    data = (train[0][:256], train[1][:256])

    def feat_err(s):
        out = {}
        hs = s.block.register_forward_hook(lambda m, a, o: out.__setitem__("s", o))
        ht = model.block.register_forward_hook(lambda m, a, o: out.__setitem__("t", o))
        with torch.no_grad():
            s(data[0])
            model(data[0])
        hs.remove()
        ht.remove()
        return out["s"], out["t"]

    lc.distill(model, student, data, epochs=2, features=[("block", "block")], beta=1.0, progress_bar=False)
    # the student has 16 channels, the teacher 32: a learned projection bridged them
    fs, ft = feat_err(student)
    assert fs.shape[1] == 16 and ft.shape[1] == 32


def test_factorize_is_the_truncated_svd(mlp, cnn):
    model, train, test, _ = mlp
    f = lc.factorize(model, rank={"fc2": 48})
    assert isinstance(f.fc2, lc.LowRankLinear) and f.fc2.first.weight.shape == (48, 128)
    assert f.fc2.second.weight.shape == (128, 48) and f.fc2.first.bias is None
    assert torch.equal(f.fc2.second.bias, model.fc2.bias)
    W = model.fc2.weight.detach()
    U, S, Vh = torch.linalg.svd(W)
    best = (U[:, :48] * S[:48]) @ Vh[:48]  # Eckart-Young: the best rank-48 approximation
    assert torch.allclose(f.fc2.second.weight @ f.fc2.first.weight, best, atol=1e-4)
    # rank 64 of a 128x128 layer would hold as many weights as the layer: it stays dense
    assert isinstance(lc.factorize(model, rank=64).fc2, nn.Linear)
    assert isinstance(lc.factorize(model, rank=48).fc2, lc.LowRankLinear)
    cm, ctrain, ctest, _ = cnn
    fc = lc.factorize(cm, rank={"block.conv1": 8})
    assert isinstance(fc.block.conv1, lc.LowRankConv2d)
    assert fc.block.conv1.first.weight.shape == (8, 32, 3, 3) and fc.block.conv1.second.weight.shape == (32, 8, 1, 1)
    with torch.no_grad():  # conv factors compose to the rank-8 approximation of the reshaped weight
        Wc = cm.block.conv1.weight.reshape(32, -1)
        Uc, Sc, Vc = torch.linalg.svd(Wc, full_matrices=False)
        approx = (Uc[:, :8] * Sc[:8]) @ Vc[:8]
        cm.block.conv1.weight.copy_(approx.reshape(cm.block.conv1.weight.shape))
        assert torch.allclose(fc(ctest[0][:8]), cm(ctest[0][:8]), atol=1e-4)
    ann = lc.annotation(fc)
    assert ann["layers"]["block.conv1"]["lowrank"] == {"rank": 8, "original_matrix": [32, 288],
                                                       "first": "block.conv1.first",
                                                       "second": "block.conv1.second"}


def test_rank_by_energy_and_budget(mlp):
    model, _, _, _ = mlp
    f = lc.factorize(model, energy=0.9)
    for name in ("fc1", "fc2"):
        mod = getattr(f, name)
        if isinstance(mod, lc.LowRankLinear):
            S = torch.linalg.svdvals(getattr(model, name).weight.detach()).double()
            e = (S ** 2).cumsum(0) / (S ** 2).sum()
            r = mod.rank
            assert e[r - 1] >= 0.9 and (r == 1 or e[r - 2] < 0.9)
    n0 = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    h = lc.factorize(model, param_fraction=0.5)
    n1 = sum(m.weight.numel() for m in h.modules() if isinstance(m, nn.Linear))
    assert n1 <= 0.5 * n0 + 1
    with pytest.raises(ValueError, match="exactly one"):
        lc.factorize(model, rank=4, energy=0.9)


def test_lowrank_half_params_with_distillation_drop_at_most_1(model_and_data):
    model, train, test, acc = model_and_data
    n0 = sum(p.numel() for p in model.parameters())
    f = lc.factorize(model, param_fraction=0.5)
    n1 = sum(p.numel() for p in f.parameters())
    raw = acc - lc.evaluate(f, test)
    lc.distill(model, f, train, T=4.0, alpha=0.7, epochs=15, lr=3e-3, progress_bar=False)
    drop = acc - lc.evaluate(f, test)
    print(f"low-rank: params {n0} -> {n1} ({n1 / n0:.2f}), drop before distill {raw:.2f}, after {drop:.2f}")
    assert n1 <= 0.51 * n0
    assert drop <= 1.0


def test_training_is_seeded_and_progress_bars_switch(mlp, capsys):
    model, train, _, _ = mlp
    data = (train[0][:256], train[1][:256])
    a = lc.finetune(lc.prune(model, 0.5, progress_bar=False), data, epochs=1, seed=3, progress_bar=False)
    b = lc.finetune(lc.prune(model, 0.5, progress_bar=False), data, epochs=1, seed=3, progress_bar=True)
    for (n1, p1), (_n2, p2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p1, p2), n1  # same seed, same weights (the bar changes nothing)
    c = lc.finetune(lc.prune(model, 0.5, progress_bar=False), data, epochs=1, seed=4, progress_bar=False)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    capsys.readouterr()
    lc.quantize(model, "int8", progress_bar=False)
    assert capsys.readouterr().err == ""  # nothing printed with the bar off
