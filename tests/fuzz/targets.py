"""The fuzz targets: what one execution does with one input.

A case ends in success or in one of ``EXPECTED`` (the documented errors for a
bad file or a bad model). Any other exception is a finding; a crash or a hang is
caught by the supervisor in ``fuzz.py``, which runs the targets in a child process.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np

import lowbit
from lowbit import FormatError, UnsupportedOpError

EXPECTED = (FormatError, UnsupportedOpError, ValueError)
MAX_INPUT_ELEMENTS = 1 << 16   # larger declared inputs are loaded but not run
FUZZ_MEMORY_LIMIT = 256 << 20  # the engine's plan limit while fuzzing (LOWBIT_MAX_MEMORY)
last_error = ""  # "Type: message" of the last rejection (for --replay and the corpus tests)


def _rejected(e: BaseException, outcome: str = "rejected") -> str:
    global last_error
    last_error = f"{type(e).__name__}: {e}"
    return outcome


def _inputs(model: lowbit.Model, rng: random.Random) -> dict[str, np.ndarray] | None:
    """Random inputs of the declared shapes (symbolic dims: the same small value
    for the same symbol), or None when they would be too large to bother."""
    syms: dict[Any, int] = {}
    feeds = {}
    nprng = np.random.default_rng(rng.randrange(1 << 30))
    for v in model.inputs:
        shape = []
        for d in v.shape:
            if isinstance(d, int):
                shape.append(d)
            else:
                key = d if d is not None else object()
                syms.setdefault(key, rng.choice([1, 1, 2, 3, 5]))
                shape.append(syms[key])
        n = int(np.prod(shape, dtype=np.float64)) if shape else 1
        nonzero = float(np.prod([d for d in shape if d], dtype=np.float64))  # numpy refuses [0, 2^40, 2^40] too
        if n > MAX_INPUT_ELEMENTS or nonzero > 2.0 ** 48:
            return None
        x = nprng.standard_normal(shape).astype(np.float32)
        if rng.random() < 0.1 and x.size:
            x.reshape(-1)[rng.randrange(x.size)] = rng.choice([np.nan, np.inf, -np.inf, 3e38, 0.0])
        feeds[v.name] = x
    return feeds


def _exercise(model: lowbit.Model, rng: random.Random) -> None:
    model.layers()
    repr(model)
    for _ in range(rng.choice([1, 1, 2])):
        feeds = _inputs(model, rng)
        if feeds is None:
            return
        try:
            out = model.run(feeds)
        except EXPECTED as e:
            _rejected(e)
            continue
        outs = out.values() if isinstance(out, dict) else [out]
        for y in outs:
            assert isinstance(y, np.ndarray) and y.dtype.kind in "fiu", type(y)
            y.sum()  # touch every output byte


def run_qbin(data: bytes, workdir: str, rng: random.Random) -> str:
    """Writes ``data`` as a .qbin, loads it, runs it. Returns a short outcome."""
    global last_error
    last_error = ""
    path = os.path.join(workdir, "case.qbin")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # a new inode: an earlier case's mapping stays valid
    try:
        model = lowbit.load(path, verify=rng.random() < 0.5)
    except EXPECTED as e:
        return _rejected(e)
    try:
        _exercise(model, rng)
    finally:
        del model
    return "loaded"


def run_onnx(data: bytes, workdir: str, rng: random.Random) -> str:
    """Writes ``data`` as an .onnx file, converts it, then loads and runs the result."""
    global last_error
    last_error = ""
    src = os.path.join(workdir, "case.onnx")
    dst = os.path.join(workdir, "case-onnx.qbin")
    with open(src, "wb") as f:
        f.write(data)
    try:
        lowbit.convert(src, dst)
    except EXPECTED as e:
        return _rejected(e)
    try:
        model = lowbit.load(dst)
    except EXPECTED as e:
        return _rejected(e, "rejected-load")
    try:
        _exercise(model, rng)
    finally:
        del model
    return "converted"


def run_selftest(data: bytes, workdir: str, rng: random.Random) -> str:
    """Checks the supervisor itself: crashes, hangs or raises on marked inputs."""
    with open(os.path.join(workdir, "case.selftest"), "wb") as f:
        f.write(data)
    if data == b"CRASH":
        import signal
        os.kill(os.getpid(), signal.SIGSEGV)
    if data == b"HANG":
        import time
        time.sleep(3600)
    if data == b"TYPE":
        raise TypeError("selftest")
    if data == b"BAD":
        return _rejected(FormatError("selftest: an expected rejection"))
    return "ok"


TARGETS = {"qbin": run_qbin, "onnx": run_onnx, "selftest": run_selftest}
