"""Shared machinery for the benches: peers built in the same process, results
collected per session and written to bench/results/<suite>.json for docs/."""

import json
import os
import platform
import subprocess

# PyTorch's OpenMP workers spin-wait after each call by default and can take the CPU from
# whatever runs next in this process (suspected in a CI run where one lowbit case took 1.6x
# its usual time at 1 thread but scaled 3.3x at 2). Make them sleep; set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

import lowbit

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
_results: dict = {}


def ort_options(threads: int):
    """onnxruntime session options for `threads` intra-op threads, with its workers' spin-wait
    off. After each run its worker keeps spinning for ~40 ms (here the process burned 20 ms of
    CPU during a 20 ms sleep after a 2-thread ResNet-18 run, 43 ms during 100 ms), so the next
    peer's run in this process shares a core with it: interleaved with a spinning onnxruntime,
    lowbit's 2-thread ResNet-18 median went from 33 to 58 ms. onnxruntime's own times did not
    change with spinning off (ResNet-18 at 2 threads 24.5 vs 25.0 ms best; the int8 MatMul
    128x4096x4096 12.1-12.7 vs 12.3-12.8 ms, 1x4096x4096 0.27-0.46 vs 0.33-0.41 ms), so it
    is off, as PyTorch's OpenMP spin is above. At 1 thread there is no worker to spin."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def read_loop_gbs(buf) -> float:
    """GB/s of one plain sum over `buf` (lowbit's memread kernel: one stream, no software
    prefetch), the bandwidth the weight-streaming benches compare their kernels with."""
    import time

    from lowbit import _core
    t = time.perf_counter()
    _core.memread_sum(buf)
    return buf.nbytes / (time.perf_counter() - t) / 1e9


def record(suite: str, key: str, value) -> None:
    _results.setdefault(suite, {})[key] = value


def recorded(suite: str) -> dict:
    return _results.get(suite, {})


def _commit() -> str | None:
    """The commit the bench ran on (with "+dirty" when the tree had changes), so a results
    table can say what it documents; None outside a git checkout."""
    root = os.path.join(os.path.dirname(__file__), "..")
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                               cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict:
    info = lowbit.cpu_info()
    return {"isa": info["isa"], "vendor": info["vendor"], "cpus": os.cpu_count(), "python": platform.python_version(),
            "commit": _commit()}


@pytest.fixture(scope="session", autouse=True)
def _write_results():
    yield
    if not _results:
        return
    os.makedirs(RESULTS_DIR, exist_ok=True)
    for suite, data in _results.items():
        with open(os.path.join(RESULTS_DIR, f"{suite}.json"), "w") as f:
            json.dump({"machine": machine(), "results": data}, f, indent=2, sort_keys=True)
