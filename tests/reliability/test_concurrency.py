"""Concurrency: one Model shared by 8 Python threads returns, for every call,
exactly the bytes a single-threaded call returns; set_num_threads called over
and over while those threads run is safe and changes no result."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

import lowbit

import models

SHAPES = (1, 2, 5, 16, 33, 64)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("conc") / "mlp.qbin")
    lowbit.convert(models.mlp4(seed=4, sizes=(192, 384, 256, 128, 32)), p)
    return lowbit.load(p)


@pytest.fixture(scope="module")
def cases(model):
    rng = np.random.default_rng(0)
    xs = {b: rng.standard_normal((b, 192)).astype(np.float32) for b in SHAPES}
    before = lowbit.get_num_threads()
    lowbit.set_num_threads(1)
    want = {b: model.run(x).tobytes() for b, x in xs.items()}
    lowbit.set_num_threads(before)
    return xs, want


def _hammer(model, xs, want, n_threads, calls, extra=None):
    errors: list[str] = []
    done = threading.Event()
    barrier = threading.Barrier(n_threads + (1 if extra else 0))

    def work(seed: int) -> None:
        r = random.Random(seed)
        barrier.wait()
        for _ in range(calls):
            b = r.choice(SHAPES)
            y = model.run(xs[b])
            if y.tobytes() != want[b]:
                errors.append(f"thread {seed}: batch {b} differs")

    ts = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in ts:
        t.start()
    if extra:
        et = threading.Thread(target=extra, args=(barrier, done))
        et.start()
    for t in ts:
        t.join()
    done.set()
    if extra:
        et.join()
    return errors


@pytest.mark.parametrize("pool", [1, 2, 4])
def test_eight_threads_one_model_same_bytes(model, cases, pool, threads):
    lowbit.set_num_threads(pool)
    xs, want = cases
    errors = _hammer(model, xs, want, n_threads=8, calls=200)
    assert not errors, errors[:5]


def test_set_num_threads_while_running(model, cases, threads):
    xs, want = cases
    changes = []

    def flip(barrier, done):
        r = random.Random(1)
        barrier.wait()
        while not done.is_set():
            n = r.choice([1, 2, 3, 4])
            lowbit.set_num_threads(n)
            changes.append(n)

    errors = _hammer(model, xs, want, n_threads=6, calls=300, extra=flip)
    assert not errors, errors[:5]
    assert len(changes) > 10, "the pool was resized while the runs went on"


def test_two_models_in_parallel_with_different_shapes(model, cases, tmp_path, threads):
    # A second model (its own plans and arenas) interleaved with the first.
    p = str(tmp_path / "other.qbin")
    lowbit.convert(models.mlp4(seed=9, sizes=(64, 96, 80, 48, 8)), p)
    other = lowbit.load(p)
    xo = np.random.default_rng(2).standard_normal((9, 64)).astype(np.float32)
    want_o = other.run(xo).tobytes()
    xs, want = cases
    lowbit.set_num_threads(2)
    errors = []

    def run_other():
        for _ in range(50):
            if other.run(xo).tobytes() != want_o:
                errors.append("other model differs")

    ts = [threading.Thread(target=run_other) for _ in range(3)]
    for t in ts:
        t.start()
    errors += _hammer(model, xs, want, n_threads=5, calls=30)
    for t in ts:
        t.join()
    assert not errors, errors[:5]
