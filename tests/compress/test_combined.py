"""All four techniques together: >= 8x smaller than fp32 within 2 points (issue 6)."""

import json

import pytest

torch = pytest.importorskip("torch")

from lowbit import compress as lc  # noqa: E402


def test_combined_8x_smaller_within_2_points(model_and_data):
    model, train, test, acc = model_and_data
    c = model
    if hasattr(model, "block"):  # CNN: structured half channels first, recovered by distillation
        c = lc.prune_channels(model, 0.5, train[0][:4])
        lc.distill(model, c, train, epochs=6, lr=3e-3, progress_bar=False)
    else:  # MLP: the middle layer as a low-rank pair
        c = lc.factorize(model, rank={"fc2": 32})
    # 75% unstructured sparsity on the gradual schedule, then 4-bit g32 with QAT + distillation
    c = lc.prune_gradual(c, train, 0.75, epochs=15, lr=3e-3, progress_bar=False)
    q = lc.prepare_qat(c, "int4_g32")
    lc.distill(model, q, train, epochs=5, lr=1e-3, progress_bar=False)
    lc.finish_qat(q)
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
