"""Pruning: masks and importance scores, the cubic schedule, structured channel
removal across a residual add, and the accuracy gates of issue 6."""

import time

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lowbit import compress as lc  # noqa: E402
from lowbit.compress.prune import BLOCK  # noqa: E402

from . import _variants as V  # noqa: E402


def test_magnitude_per_layer_and_global(mlp):
    model, _, _, _ = mlp
    p = lc.prune(model, 0.75, progress_bar=False)
    for name, s in lc.sparsity_of(p).items():
        assert s == pytest.approx(0.75, abs=1e-3), name
        m = dict(p.named_modules())[name]
        w0 = dict(model.named_modules())[name].weight.detach().abs()
        kept = w0[m.lowbit_mask > 0]
        dropped = w0[m.lowbit_mask == 0]
        assert float(kept.min()) >= float(dropped.max())  # magnitude: the smallest go
    g = lc.prune(model, 0.75, scope="global", progress_bar=False)
    sp = lc.sparsity_of(g)
    total = sum(m.weight.numel() for m in (g.fc1, g.fc2, g.fc3))
    zeros = sum(sp[n] * dict(g.named_modules())[n].weight.numel() for n in sp)
    assert zeros / total == pytest.approx(0.75, abs=1e-3)
    assert max(sp.values()) - min(sp.values()) > 0.02  # global: layers end at different sparsities


def test_masks_survive_training(mlp):
    model, train, _, _ = mlp
    p = lc.prune(model, 0.5, progress_bar=False)
    lc.finetune(p, train, epochs=1, progress_bar=False)
    assert lc.sparsity_of(p)["fc2"] >= 0.5


def test_gradient_and_taylor_importance(mlp):
    model, train, _, _ = mlp
    data = (train[0][:256], train[1][:256])
    grad = lc.importance(model, "gradient", data, batch_size=256, progress_bar=False)
    tay = lc.importance(model, "taylor", data, batch_size=256, progress_bar=False)
    # recompute |dL/dw| of one batch by hand
    model.zero_grad()
    nn.functional.cross_entropy(model(data[0]), data[1]).backward()
    g = model.fc2.weight.grad.abs()
    model.zero_grad()
    assert torch.allclose(grad["fc2"], g, atol=1e-7)
    assert torch.allclose(tay["fc2"], (g * model.fc2.weight.detach()).abs(), atol=1e-7)
    p = lc.prune(model, 0.5, importance_kind="taylor", data=data, progress_bar=False)
    m = lc.prune(model, 0.5, progress_bar=False)
    assert not torch.equal(p.fc2.lowbit_mask, m.fc2.lowbit_mask)


def test_block_1x4_pattern(cnn):
    model, _, _, _ = cnn
    p = lc.prune(model, 0.5, pattern="block1x4", progress_bar=False)
    for name in ("block.conv1", "head"):
        mod = dict(p.named_modules())[name]
        mk = mod.lowbit_mask.reshape(mod.weight.shape[0], -1)
        k = mk.shape[1]
        full = mk[:, : (k // BLOCK) * BLOCK].reshape(mk.shape[0], -1, BLOCK)
        # every 1x4 block along K is either all kept or all pruned
        assert torch.all((full.sum(-1) == 0) | (full.sum(-1) == BLOCK))
        assert mod.lowbit_sparsity["pattern"] == "block1x4"
        assert 1 - float(mk.mean()) == pytest.approx(0.5, abs=0.03)


def test_cubic_schedule():
    assert lc.cubic_schedule(0, 0.9, 0, 100) == 0.0
    assert lc.cubic_schedule(100, 0.9, 0, 100) == 0.9
    assert lc.cubic_schedule(50, 0.9, 0, 100) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    vals = [lc.cubic_schedule(t, 0.9, 0, 100) for t in range(0, 101, 10)]
    steps = [b - a for a, b in zip(vals, vals[1:])]
    assert all(s2 <= s1 + 1e-12 for s1, s2 in zip(steps, steps[1:]))  # fast first, slow at the end


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_gradual_90_percent_drop_at_most_1(kind, digits):
    # global magnitude scope, cubic ramp, re-pruned every 5 steps (MLP 30 epochs, CNN 12)
    model, p = V.compressed(kind, "prune90", digits)
    _, test = V.data_of(kind, digits)
    acc = lc.evaluate(model, test)
    sp = lc.sparsity_of(p)
    total = sum(m.weight.numel() for m in p.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    zeros = sum(sp[n] * dict(p.named_modules())[n].weight.numel() for n in sp)
    drop = acc - lc.evaluate(p, test)
    print(f"gradual 90%: overall sparsity {zeros / total:.3f}, drop {drop:.2f}")
    assert zeros / total >= 0.899
    assert drop <= 1.0


# ---------------------------------------------------------------------------------------------
# structured


def _best_time(model, x, reps=30):
    with torch.no_grad():
        for _ in range(3):
            model(x)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t)
    return min(ts)


def test_channel_groups_follow_the_residual_add(cnn):
    model, train, _, _ = cnn
    groups = lc.channel_groups(model, train[0][:2])
    by_prod = {tuple(sorted(g["producers"])): g for g in groups}
    # stem and block.conv2 are added together: one group, pruned as one
    res = by_prod[("block.conv2", "stem")]
    assert res["prunable"] and set(res["norms"]) == {"bn", "block.bn2"}
    assert sorted(c for c, _ in res["consumers"]) == ["block.conv1", "down"]
    # the flatten before the head: each channel feeds 4x4 = 16 features
    assert by_prod[("down",)]["consumers"] == [("head", 16)]
    assert not by_prod[("head",)]["prunable"]  # the output layer keeps its classes


def test_structured_half_channels_is_exact_before_training(cnn):
    """Removing channels whose producers are zero must not change the output."""
    model, train, test, _ = cnn
    x = test[0][:64]
    with torch.no_grad():
        for conv, bn in ((model.stem, model.bn), (model.block.conv2, model.block.bn2),
                         (model.block.conv1, model.block.bn1), (model.down, model.bn_down)):
            conv.weight[::2] = 0.0    # zero half the filters ...
            bn.weight[::2] = 0.0      # ... and their BN output, so the channels carry 0
            bn.bias[::2] = 0.0
        ref = model(x)
    p = lc.prune_channels(model, 0.5, x[:2])
    assert p.block.conv1.out_channels == 16 and p.down.out_channels == 32 and p.head.in_features == 32 * 16
    assert p.stem.out_channels == p.block.conv2.out_channels == p.block.conv1.in_channels == p.down.in_channels == 16
    with torch.no_grad():
        assert torch.allclose(p(x), ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_structured_half_channels_with_distillation(kind, digits):
    model, s = V.compressed(kind, "structured", digits)  # half the channels, distilled 15 epochs
    _, test = V.data_of(kind, digits)
    acc = lc.evaluate(model, test)
    n0 = sum(p.numel() for p in model.parameters())
    n1 = sum(p.numel() for p in s.parameters())
    drop = acc - lc.evaluate(s, test)
    x = test[0]
    t0, t1 = _best_time(model, x), _best_time(s, x)
    print(f"structured 1/2 channels: params {n0} -> {n1}, drop {drop:.2f}, torch time {t0 * 1e3:.2f} -> "
          f"{t1 * 1e3:.2f} ms")
    assert n1 < 0.6 * n0
    assert drop <= 1.5
    assert t1 < 0.8 * t0
