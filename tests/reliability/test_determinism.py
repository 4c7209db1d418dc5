"""Determinism: the same output bytes for any thread count (1 to 4), across
runs and across processes, for every encoding convert can produce. Parametrized
over fuzz/seeds.py's CONVERT_OPTIONS, so new quant= modes are covered the day
convert accepts them (until then they are reported as skipped)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import lowbit

from fuzz import seeds

# Large enough that the GEMMs and elementwise ops really split over threads.
MODELS = {
    "mlp": lambda: seeds.model_mlp(sizes=(256, 512, 384, 256, 64)),
    "sparse": lambda: seeds.model_sparse(k=512, n=256),
    "lowrank": lambda: seeds.model_lowrank(k=512, r=32, n=512),
    "ops": seeds.model_ops,
}
BATCHES = (1, 7, 64)


def _inputs(model: lowbit.Model, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {v.name: rng.standard_normal([batch if not isinstance(d, int) else d for d in v.shape]).astype(np.float32)
            for v in model.inputs}


def _digest(model: lowbit.Model, batch: int) -> str:
    out = model.run(_inputs(model, batch))
    outs = [out[k] for k in sorted(out)] if isinstance(out, dict) else [out]
    h = hashlib.sha256()
    for y in outs:
        h.update(str(y.shape).encode())
        h.update(y.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("det")
    cache = {}

    def get(mname: str, opt: dict):
        key = (mname, seeds.option_id(opt))
        if key not in cache:
            src, dst = str(d / f"{mname}.onnx"), str(d / f"{mname}-{key[1]}.qbin")
            if not os.path.exists(src):
                with open(src, "wb") as f:
                    f.write(MODELS[mname]().SerializeToString())
            try:
                lowbit.convert(src, dst, **opt)
                cache[key] = dst
            except (NotImplementedError, TypeError) as e:
                cache[key] = e
        if isinstance(cache[key], Exception):
            pytest.skip(f"convert option {opt} not available: {cache[key]}")
        return cache[key]
    return get


@pytest.mark.parametrize("opt", seeds.CONVERT_OPTIONS, ids=seeds.option_id)
@pytest.mark.parametrize("mname", sorted(MODELS))
def test_same_bytes_for_any_thread_count_and_run(converted, mname, opt, threads):
    path = converted(mname, opt)
    model = lowbit.load(path)
    encodings = {t.encoding for t in model.graph.tensors.values()}
    assert encodings, "the model has constants"
    for batch in BATCHES:
        lowbit.set_num_threads(1)
        want = _digest(model, batch)
        for t in (2, 3, 4, 1, 2):
            lowbit.set_num_threads(t)
            assert _digest(model, batch) == want, f"{mname}/{seeds.option_id(opt)} batch {batch}: {t} threads differ"
    again = lowbit.load(path)  # a fresh load plans and packs nothing differently
    assert _digest(again, 7) == _digest(model, 7)


def test_same_bytes_across_processes(converted, threads):
    path = converted("mlp", {})
    lowbit.set_num_threads(2)
    here = _digest(lowbit.load(path), 64)
    code = ("import sys; sys.path.insert(0, {tests!r}); import lowbit; "
            "from reliability.test_determinism import _digest; lowbit.set_num_threads(3); "
            "print(_digest(lowbit.load({path!r}), 64))").format(tests=os.path.dirname(os.path.dirname(__file__)), path=path)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(lowbit.__file__)) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == here
