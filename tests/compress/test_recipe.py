"""Sensitivity sweep, budget solver, the JSON recipe (editable, reproducible),
size accounting, and `import lowbit` without torch."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from lowbit import compress as lc  # noqa: E402
from lowbit.compress.annotate import weight_bits  # noqa: E402

OPTIONS = ["int8", "int4_g32", "int2_g32", "sparse0.5", "sparse0.9", "int4_g32+sparse0.75", "rank0.25"]


def _calib(train):
    return (train[0][:384], train[1][:384])


def test_sensitivity_table(mlp):
    model, train, _, _ = mlp
    t = lc.sensitivity(model, _calib(train), OPTIONS, progress_bar=False)
    assert set(t["layers"]) == {"fc1", "fc2", "fc3"}
    for name, l in t["layers"].items():
        o = l["options"]
        assert o["fp32"]["bits"] == l["params"] * 32 and o["fp32"]["delta"] == 0.0
        assert o["int8"]["bits"] > o["int4_g32"]["bits"] > o["int2_g32"]["bits"]
        n, k = dict(model.named_modules())[name].weight.shape
        assert o["int4_g32"]["bits"] == n * k * 4 + n * -(-k // 32) * 32
        assert o["int2_g32"]["delta"] > o["int8"]["delta"]
        assert o["sparse0.9"]["delta"] > o["sparse0.5"]["delta"]
    # rank 0.25 of fc3 (10 x 128 -> rank 2) is a real option; all are
    assert "rank0.25" in t["layers"]["fc2"]["options"]
    with pytest.raises(ValueError, match="cannot parse"):
        lc.sensitivity(model, _calib(train), ["int4_gx"], progress_bar=False)


def test_solver_meets_budget_and_recipe_applies(mlp):
    model, train, test, acc = mlp
    t = lc.sensitivity(model, _calib(train), OPTIONS, progress_bar=False)
    rec = lc.solve(t, bits_per_weight=3.0)
    assert rec.summary["bits_per_weight"] <= 3.0
    # a tighter budget never costs less loss
    loose = lc.solve(t, bits_per_weight=8.0)
    assert loose.summary["sum_delta"] <= rec.summary["sum_delta"] + 1e-12
    assert loose.summary["bits_per_weight"] <= 8.0
    with pytest.raises(ValueError, match="cheapest"):
        lc.solve(t, bits_per_weight=0.05)
    q = rec.apply(model, progress_bar=False)
    rep = lc.size_report(q)
    # the applied model's accounting matches what the solver planned, layer by layer
    for name, l in rec.layers.items():
        if l["rank"] is None:
            assert rep["per_layer_bits"][name] == l["bits"], name
        else:
            assert rep["per_layer_bits"][f"{name}.first"] + rep["per_layer_bits"][f"{name}.second"] == l["bits"]
    print(f"recipe at 3 bits/weight: {json.dumps({n: l['option'] for n, l in rec.layers.items()})}, "
          f"accuracy {lc.evaluate(q, test):.2f} (fp32 {acc:.2f})")
    assert acc - lc.evaluate(q, test) <= 3.0


def test_recipe_is_reproducible_and_editable(mlp, tmp_path):
    model, train, _, _ = mlp
    a = lc.solve(lc.sensitivity(model, _calib(train), OPTIONS, progress_bar=False), bits_per_weight=4.0, seed=7)
    b = lc.solve(lc.sensitivity(model, _calib(train), OPTIONS, progress_bar=False), bits_per_weight=4.0, seed=7)
    assert a.to_json() == b.to_json()
    path = tmp_path / "recipe.json"
    a.save(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "lowbit.recipe/1" and doc["seed"] == 7
    # a hand edit: fc1 to int8 per channel, no sparsity, no low-rank
    doc["layers"]["fc1"].update(quant=lc.QuantSpec.parse("int8").to_dict(), sparsity=None, rank=None)
    path.write_text(json.dumps(doc))
    r = lc.Recipe.load(path)
    q1 = r.apply(model, progress_bar=False)
    q2 = r.apply(model, progress_bar=False)
    assert q1.fc1.lowbit_quant["bits"] == 8 and q1.fc1.lowbit_quant["granularity"] == "channel"
    for (n1, p1), (n2, p2) in zip(q1.state_dict().items(), q2.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)  # same recipe, same weights, bit for bit
    bad = dict(doc, format="something/else")
    with pytest.raises(ValueError, match="lowbit.recipe/1"):
        lc.Recipe.from_json(json.dumps(bad))
    doc["layers"]["fc2"]["bogus"] = 1
    with pytest.raises(ValueError, match="unknown keys"):
        lc.Recipe.from_json(json.dumps(doc))


def test_latency_budget_through_a_pluggable_timer(mlp):
    model, train, _, _ = mlp

    def fake_latency(name, module, option):
        # a stand-in cost model: time proportional to stored bits (lowbit's per-layer timing plugs in here)
        from lowbit.compress.sensitivity import option_bits
        return option_bits(module, option) * 1e-9 if option != "fp32" else module.weight.numel() * 32e-9

    t = lc.sensitivity(model, _calib(train), ["int8", "int4_g32"], latency_fn=fake_latency, progress_bar=False)
    full = sum(l["options"]["fp32"]["latency"] for l in t["layers"].values())
    rec = lc.solve(t, latency=0.2 * full)
    assert rec.summary["latency"] <= 0.2 * full
    with pytest.raises(ValueError, match="latency"):
        lc.solve(lc.sensitivity(model, _calib(train), ["int8"], progress_bar=False), latency=1.0)


def test_size_accounting_counts_indices_and_scales():
    n, k = 64, 128
    dense4 = weight_bits(n, k, lc.QuantSpec.parse("int4_g32").to_dict())
    assert dense4 == n * k * 4 + n * 4 * 32
    mask = torch.zeros(n, k)
    mask[:, ::40] = 1  # ~3% kept: CSR (16-bit columns + 32-bit row pointers) beats a bitmap
    nnz = int(mask.sum())
    assert weight_bits(n, k, None, mask) == nnz * 32 + nnz * 16 + (n + 1) * 32
    mask2 = (torch.arange(k) % 2 == 0).float().expand(n, k)  # 50%: the bitmap is cheaper
    assert weight_bits(n, k, lc.QuantSpec.parse("int8").to_dict(), mask2) == n * k // 2 * 8 + n * k + n * 32
    asym = weight_bits(n, k, lc.QuantSpec.parse("int4_g32_asym").to_dict())
    assert asym == dense4 + n * 4 * 4  # zero points


def test_import_lowbit_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import lowbit\n"
            "assert 'compress' in dir(lowbit)\n"
            "try:\n"
            "    lowbit.compress.quantize\n"
            "except ImportError as e:\n"
            "    assert 'pip install torch' in str(e), e\n"
            "else:\n"
            "    raise SystemExit('expected ImportError')\n"
            "print('ok')\n")
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
