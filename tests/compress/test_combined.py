"""All four techniques together: >= 8x smaller than fp32 within 2 points (issue 6)."""

import json

import pytest

torch = pytest.importorskip("torch")

from lowbit import compress as lc  # noqa: E402

from . import _variants as V  # noqa: E402


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_combined_8x_smaller_within_2_points(kind, digits):
    # CNN: a quarter of the channels + distillation; MLP: fc2 as a rank-16 pair; then 75 % gradual
    # pruning, 4-bit g64 QAT + distillation (tests/compress/_variants.py)
    model, q = V.compressed(kind, "combined", digits)
    _, test = V.data_of(kind, digits)
    acc = lc.evaluate(model, test)
    size = lc.size_report(q)
    ratio = lc.fp32_bits(model) / size["bits"]
    drop = acc - lc.evaluate(q, test)
    print(f"combined: {lc.fp32_bits(model) / 8:.0f} B fp32 -> {size['bytes']:.0f} B ({ratio:.1f}x), drop {drop:.2f}")
    assert ratio >= 8.0
    assert drop <= 2.0
    # every compressed layer is annotated for the converter, and the annotation is plain JSON
    ann = json.loads(json.dumps(lc.annotation(q)))
    for name, m in q.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            a = ann["layers"][name]
            assert a["quant"]["bits"] == 4 and a["sparsity"]["mask"] == f"{name}.lowbit_mask"
            # pruned weights stay exactly zero through quantization
            assert torch.all(m.weight[m.lowbit_mask == 0] == 0)
            codes = m.lowbit_codes.reshape(m.weight.shape)
            assert torch.all(codes[m.lowbit_mask == 0] == 0)
