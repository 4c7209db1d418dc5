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
