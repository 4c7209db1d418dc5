"""End-to-end int8 CNN, batch 1: ResNet-18 224x224 (random weights; the
architecture of tests/torch_models.py), lowbit int8 vs onnxruntime's static int8
(``quantize_static(..., quant_format=QDQ, per_channel=True)``) in the same
process on the same inputs, 1 and 2 threads; also onnxruntime fp32, lowbit fp32
and lowbit running onnxruntime's own QDQ file.

- ``lowbit-int8``: ``convert(fp32.onnx, quant="int8", calib=...)`` (static
  activation scales from the same 8 calibration inputs onnxruntime's quantizer
  sees, percentile calibration): every convolution int8 end to end.
- ``lowbit-qdq``: ``convert(ort_qdq.onnx)``: onnxruntime's integer weights and
  scales imported as they are.
- ``lowbit-int8r``: as ``lowbit-int8`` with ``reduce_range=True`` (7-bit conv weights,
  ``qs7-n16k4``; the u8 x s7 AVX2 GEMM): an option, recorded with its ratio next to
  the same target, gated against regression only.

Gate (issue 5): lowbit int8 time <= 0.5 x onnxruntime int8 time at 1 thread,
measured interleaved (alternating calls, best of each). The machines are shared
and noisy: the strict result is recorded (met / not met) and CI fails only when
the ratio is more than CI_MARGIN beyond its limit, as in bench/test_qgemm.py.
The 1-thread ratio of thread CPU times is recorded too: on an oversubscribed
machine it is the one that still measures the code (wall times there mostly
measure the scheduler).

The limit depends on the ISA. With AVX-512 VNNI (the issue's Zen 4) it is the
target. With AVX2 only, exact int8 products cost vpmaddubsw + vpmaddwd (two
multiply-pipe ops per 32 MACs, plus the sign trick's vpsignb), so an int8 GEMM
tops out near 2x the fp32 FMA rate, and onnxruntime's own int8 already runs at
about its fp32 speed there: 0.5x is out of reach (docs/kernels.md, "int8
convolutions"). There the CI limit is the ratio measured on the Zen 3 build
machine (AVX2_MEASURED) plus the same margin: a regression gate, with the
target still recorded as not met.
"""

import io
import os
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest

import lowbit

from conftest import record, ort_options

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

TARGET = 0.5  # lowbit int8 time / ORT static int8 time, 1 thread (issue 5)
AVX2_MEASURED = 0.85  # the same ratio on the AVX2-only Zen 3 build machine (thread CPU time and interleaved wall)
AVX2_MEASURED_REDUCE_RANGE = 0.65  # reduce_range=True (7-bit conv weights) there, interleaved wall
CI_MARGIN = 1.35  # CI fails beyond limit * CI_MARGIN (run-to-run noise here: +-10%, outliers beyond)
ROUNDS, ITERS = 10, 2
PEERS = ["lowbit-int8", "lowbit-int8r", "lowbit-qdq", "lowbit-fp32", "onnxruntime-int8", "onnxruntime-fp32"]


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from torch_models import ResNet18, randomize_bn

    d = tmp_path_factory.mktemp("resnet18_int8")
    torch.manual_seed(0)
    model = randomize_bn(ResNet18())
    f = io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), f, dynamo=False, input_names=["x"], output_names=["y"],
                      opset_version=17)
    (d / "fp32.onnx").write_bytes(f.getvalue())
    calib = [np.random.default_rng(100 + i).standard_normal((1, 3, 224, 224), dtype=np.float32) for i in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": c} for c in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(d / "fp32.onnx"), str(d / "qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    lowbit.convert(str(d / "fp32.onnx"), str(d / "int8.qbin"), quant="int8", calib=calib)
    lowbit.convert(str(d / "fp32.onnx"), str(d / "int8r.qbin"), quant="int8", calib=calib, reduce_range=True)
    lowbit.convert(str(d / "qdq.onnx"), str(d / "qdq.qbin"))
    lowbit.convert(str(d / "fp32.onnx"), str(d / "fp32.qbin"))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    for f in ("int8.qbin", "int8r.qbin", "qdq.qbin"):
        record("models_int8", f"size/{f}", {"qbin_bytes": os.path.getsize(d / f),
                                            "onnx_bytes": os.path.getsize(d / ("qdq.onnx" if f == "qdq.qbin"
                                                                               else "fp32.onnx"))})
    return d, x


def _ort(path, threads):
    so = ort_options(threads)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _fn(resnet, peer, threads):
    d, x = resnet
    if peer.startswith("lowbit"):
        m = lowbit.load(str(d / {"lowbit-int8": "int8.qbin", "lowbit-int8r": "int8r.qbin", "lowbit-qdq": "qdq.qbin",
                                 "lowbit-fp32": "fp32.qbin"}[peer]))
        lowbit.set_num_threads(threads)
        return lambda: m.run(x)  # noqa: E731
    sess = _ort(d / ("qdq.onnx" if peer == "onnxruntime-int8" else "fp32.onnx"), threads)
    return lambda: sess.run(None, {"x": x})[0]  # noqa: E731


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("peer", PEERS)
def test_resnet18_int8(benchmark, resnet, peer, threads):
    d, x = resnet
    fn = _fn(resnet, peer, threads)
    y = fn()
    ref = _ort(d / "fp32.onnx", 1).run(None, {"x": x})[0]
    # every peer computes the same network: int8 within a few percent of fp32 (the tests assert the bounds)
    rel = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    assert rel <= 0.1, peer
    benchmark.group = f"resnet18 int8 {threads}t"
    benchmark.extra_info.update(peer=peer, threads=threads)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=ITERS, warmup_rounds=2)
    record("models_int8", f"{peer}/resnet18/{threads}t", {"seconds": benchmark.stats.stats.min,
                                                          "median_seconds": benchmark.stats.stats.median,
                                                          "rel_error_vs_fp32": rel})
    lowbit.set_num_threads(2)


def _interleaved(fns, rounds):
    """Best time of each function over `rounds` alternating calls (the load of a
    shared machine changes over seconds; alternating gives each peer the same)."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def _cpu_times(fns, rounds):
    """Best thread CPU time of each function (1 thread: the work happens in this thread)."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t = time.thread_time()
            f()
            best[i] = min(best[i], time.thread_time() - t)
    return best


def test_resnet18_int8_gate(resnet):
    """lowbit int8 / ORT static int8 at 1 thread (interleaved); 2 threads and ORT fp32 recorded."""
    ratios = {}
    for t in (1, 2):
        fns = [_fn(resnet, p, t) for p in ("lowbit-int8", "onnxruntime-int8", "onnxruntime-fp32", "lowbit-qdq",
                                           "lowbit-int8r")]
        for f in fns:
            f()
        if t == 1:
            ca, cb = _cpu_times(fns[:2], ROUNDS)
            record("models_int8", "cpu_time/resnet18/1t", {"lowbit_int8_seconds": ca, "onnxruntime_int8_seconds": cb,
                                                          "ratio": ca / cb})
            print(f"\nresnet18 1 thread, thread CPU time: lowbit int8 {ca * 1e3:.1f} ms, ORT int8 {cb * 1e3:.1f} ms "
                  f"-> {ca / cb:.2f}x")
        a, b, c, q, r = _interleaved(fns, 2 * ROUNDS)
        ratios[t] = a / b
        ratios[f"r{t}"] = r / b
        record("models_int8", f"interleaved/resnet18/{t}t", {
            "lowbit_int8_seconds": a, "onnxruntime_int8_seconds": b, "onnxruntime_fp32_seconds": c,
            "lowbit_qdq_seconds": q, "lowbit_int8r_seconds": r, "ratio": a / b, "ratio_qdq": q / b,
            "ratio_int8r": r / b, "ratio_vs_ort_fp32": a / c})
        print(f"\nresnet18 {t} thread(s): lowbit int8 {a * 1e3:.1f} ms, reduce_range {r * 1e3:.1f} ms, lowbit from "
              f"ORT's QDQ file {q * 1e3:.1f} ms, ORT int8 {b * 1e3:.1f} ms, ORT fp32 {c * 1e3:.1f} ms -> "
              f"{a / b:.2f}x ({r / b:.2f}x reduce_range) ORT int8's time")
    lowbit.set_num_threads(2)
    isa = lowbit.cpu_info()["isa"]
    limit = TARGET if isa in ("avx512vnni", "amx") else max(TARGET, AVX2_MEASURED)
    met = ratios[1] <= TARGET
    record("models_int8", "target/resnet18/1t", {"target": TARGET, "ratio": ratios[1], "met": met, "isa": isa,
                                                 "ci_limit": limit * CI_MARGIN})
    print(f"target {TARGET}x ({'met' if met else 'NOT met'}); {isa}: CI fails beyond {limit * CI_MARGIN:.2f}x")
    limit_r = TARGET if isa in ("avx512vnni", "amx") else max(TARGET, AVX2_MEASURED_REDUCE_RANGE)
    record("models_int8", "target_reduce_range/resnet18/1t", {"target": TARGET, "ratio": ratios["r1"],
                                                              "met": ratios["r1"] <= TARGET, "isa": isa,
                                                              "ci_limit": limit_r * CI_MARGIN})
    print(f"reduce_range: {ratios['r1']:.2f}x (target {TARGET}x {'met' if ratios['r1'] <= TARGET else 'NOT met'}); "
          f"CI fails beyond {limit_r * CI_MARGIN:.2f}x")
    assert ratios[1] <= limit * CI_MARGIN, (f"lowbit int8 takes {ratios[1]:.2f}x ORT int8's time on ResNet-18 "
                                            f"(target {TARGET}, CI limit on {isa} {limit * CI_MARGIN:.2f})")
    assert ratios["r1"] <= limit_r * CI_MARGIN, (f"lowbit int8 reduce_range takes {ratios['r1']:.2f}x ORT int8's time "
                                                 f"(CI limit on {isa} {limit_r * CI_MARGIN:.2f})")
