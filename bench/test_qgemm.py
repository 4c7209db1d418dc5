"""Quantized dense layers: lowbit int8 / int4 g32 / nf4 g32 vs onnxruntime
(dynamic int8, per-channel; MatMulNBits int4 block 32, accuracy_level=4) and
PyTorch (dynamic int8 nn.Linear, x86 engine), same process, same inputs, 1 and
2 threads. lowbit runs through its real path: a converted one-layer .qbin, run
by Model.run (activation quantization + integer GEMM + epilogue).

Gates (1 thread, the issue's targets), on the best round of each peer:
  int8  1x4096x4096           lowbit <= 0.8 x ORT int8
  int8  128x768x3072          lowbit <= 1.0 x min(ORT int8, torch int8)
  int8  256x4096x4096         lowbit <= 1.0 x min(ORT int8, torch int8)
  int4  1x4096x4096           lowbit <= 0.5 x ORT int4  and <= 0.7 x lowbit int8
  int4  128x768x3072          lowbit <= 0.4 x ORT int4  and <= 1.25 x lowbit int8
  nf4   (both int4 shapes)    lowbit <= 1.2 x lowbit int4
The 4096x4096 weights (16 MB int8, 8.5 MB int4) fit the 32 MB L3 here, as for
the peers; test_weight_streaming measures the memory-bound case separately.

These machines are shared and noisy: each ratio is recorded with whether it met
its target, and the gate fails CI when a ratio is more than CI_MARGIN beyond its
target (a regression), so run-to-run noise around a target does not turn CI red.
The README and docs/kernels.md tables show the measured ratio next to the target.

The targets were set on a Zen 4 with AVX-512 VNNI. On an AVX2-only CPU (ISA
`avx2`), a few of them are out of reach of exact integer arithmetic (numbers in
docs/kernels.md, "AVX2 (Zen 3)"): for those, AVX2_GATES holds an explicit
regression gate, the ratio measured on a Zen 3 times CI_MARGIN, which CI applies
instead. The strict target is still recorded and reported as met / not met; the
AVX-512 (and every other) gate is unchanged.
"""

import os
import time
import tempfile

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import lowbit
from lowbit import _core

from conftest import ort_options, read_loop_gbs, record, recorded

SHAPES = {"1x4096x4096": (1, 4096, 4096), "128x768x3072": (128, 768, 3072), "256x4096x4096": (256, 4096, 4096)}
ROUNDS = {"1x4096x4096": (15, 100), "128x768x3072": (10, 10), "256x4096x4096": (5, 2)}
CI_MARGIN = 1.35  # a ratio this much beyond its target fails CI (seen run to run here: +-10%, outliers to 1.6x)
PEERS = ["lowbit-int8", "lowbit-int8r", "lowbit-int4", "lowbit-nf4", "ort-int8", "ort-int4", "torch-int8"]
SKIP = {("ort-int4", "256x4096x4096"), ("lowbit-int4", "256x4096x4096"), ("lowbit-nf4", "256x4096x4096")}
# lowbit-int8r: convert(quant="int8", reduce_range=True), 7-bit weight codes (qs7-n16k4): an
# option, not the int8 (8-bit weights); measured against the same peers for the record


def _weights(K, N):
    return (np.random.default_rng(K * 7 + N).standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)


def _matmul_model(W):
    K, N = W.shape
    m = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", N])], [numpy_helper.from_array(W, "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _ort_session(blob, threads):
    import onnxruntime as ort
    so = ort_options(threads)
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])


_cache: dict = {}


def _peer(peer, shape):
    """Builds (once) what `peer` runs for `shape`: a callable factory taking threads."""
    key = (peer, shape)
    if key in _cache:
        return _cache[key]
    M, K, N = SHAPES[shape]
    W = _weights(K, N)
    d = tempfile.mkdtemp(prefix="qgemm-bench-")
    if peer.startswith("lowbit"):
        quant = peer.split("-")[1]
        reduce_range = quant == "int8r"
        quant = quant.rstrip("r")
        path = os.path.join(d, f"{peer}.qbin")
        # outliers=0: the kernels (int8 activations per row, or per group for 4-bit), the same
        # activation handling as the peers' dynamic int8; convert's default outlier split (one float
        # value per row, docs/kernels.md) adds ~8% at 128x768x3072 and is measured end to end by
        # bench/test_models_quant.py
        lowbit.convert(_matmul_model(W), path, quant=quant, group_size=32, symmetric=True, outliers=0,
                       reduce_range=reduce_range)
        model = lowbit.load(path)

        def make(threads):
            lowbit.set_num_threads(threads)
            return lambda x: model.run(x)
    elif peer == "ort-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        import onnx
        src, dst = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
        onnx.save(_matmul_model(W), src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        blob = open(dst, "rb").read()

        def make(threads):
            s = _ort_session(blob, threads)
            return lambda x: s.run(None, {"x": x})[0]
    elif peer == "ort-int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        q = MatMulNBitsQuantizer(_matmul_model(W), block_size=32, is_symmetric=True, accuracy_level=4)
        q.process()
        blob = q.model.model.SerializeToString()

        def make(threads):
            s = _ort_session(blob, threads)
            return lambda x: s.run(None, {"x": x})[0]
    else:
        torch = pytest.importorskip("torch")
        torch.backends.quantized.engine = "x86"
        lin = torch.nn.Linear(K, N, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
        qlin = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)

        def make(threads):
            torch.set_num_threads(threads)

            def run(x, _t=torch.from_numpy):
                with torch.inference_mode():
                    return qlin(_t(x)).numpy()
            return run
    _cache[key] = (make, W)
    return _cache[key]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("peer", PEERS)
def test_qgemm(benchmark, peer, shape, threads):
    if (peer, shape) in SKIP:
        pytest.skip("4-bit targets are set at 1x4096x4096 and 128x768x3072")
    if threads == 2 and shape == "256x4096x4096":
        pytest.skip("256x4096x4096 is gated at 1 thread")
    make, W = _peer(peer, shape)
    fn = make(threads)
    M, K, N = SHAPES[shape]
    x = np.random.default_rng(M).standard_normal((M, K), dtype=np.float32)
    y = fn(x)
    ref = x.astype(np.float64) @ W.astype(np.float64)
    rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert rel < (0.03 if "int8" in peer else 0.15), f"{peer}: relative error {rel:.4f}"
    rounds, iters = ROUNDS[shape]
    benchmark.group = f"qgemm {shape} {threads}t"
    benchmark.extra_info.update(peer=peer, shape=shape, threads=threads, isa=lowbit.cpu_info()["isa"], rel_error=rel)
    benchmark.pedantic(fn, args=(x,), rounds=rounds, iterations=iters, warmup_rounds=2)
    t = benchmark.stats.stats.min
    record("qgemm", f"{peer}/{shape}/{threads}t", {"seconds": t, "median_seconds": benchmark.stats.stats.median,
                                                    "gops": 2 * M * K * N / t / 1e9, "rel_error": float(rel)})
    lowbit.set_num_threads(os.cpu_count() or 1)


def _t(peer, shape, threads=1):
    r = recorded("qgemm").get(f"{peer}/{shape}/{threads}t")
    return r["seconds"] if r else None


# AVX2-only regression gates: (lowbit peer, shape, reference peers) -> the largest ratio CI
# accepts on ISA avx2. Each is the largest 1-thread ratio measured on a Zen 3 (EPYC, family 25
# model 1, 2 cores; six runs of bench/interleaved_qgemm.py, CPU time of the calling thread)
# times CI_MARGIN. docs/kernels.md, "AVX2 (Zen 3)", explains why the target cannot be
# met with exact AVX2 integer arithmetic.
AVX2_GATES = {
    # exact s8 x s8 takes vpsignb + vpmaddubsw + vpmaddwd + vpaddd per 32 MACs (measured ceiling
    # ~25 MACs/cycle); ORT runs u8 x s8 in 3 ops (vpmaddubsw may saturate), PyTorch with 7-bit
    # activations. Measured 1.18-1.32x (128x768x3072) and 1.32x (256x4096x4096).
    ("lowbit-int8", "128x768x3072", ("ort-int8", "torch-int8")): round(1.32 * CI_MARGIN, 2),
    ("lowbit-int8", "256x4096x4096", ("ort-int8", "torch-int8")): round(1.32 * CI_MARGIN, 2),
    # M = 1 with the 16 MB of int8 weights in L3: int8 is barely memory-bound and the 4-bit dot
    # product costs about as many vector ops per MAC as int8 (nibble split + int16 sums).
    # Measured 0.73-0.88x.
    ("lowbit-int4", "1x4096x4096", ("lowbit-int8",)): round(0.88 * CI_MARGIN, 2),
    # nf4 since its tables moved to [-64, 64] and the shifted-table cell: 1.22-1.23x at M = 1
    # (the target's 1.2 x CI_MARGIN applies there) and 1.25-1.38x at 128x768x3072 (gated at
    # the larger times CI_MARGIN; it was 1.67-1.78x before)
    ("lowbit-nf4", "128x768x3072", ("lowbit-int4",)): round(1.38 * CI_MARGIN, 2),
}

# AMX-only regression gates (ISA amx: an Emerald Rapids Xeon, 2 cores of a VM): the same idea where a
# target is out of reach there (docs/kernels.md, "AMX"); measured with bench/interleaved_qgemm.py
# and the CI runs, times CI_MARGIN.
AMX_GATES = {
    # (nf4 at 128x768x3072 had a gate here while its table codes drained each group's sums out
    # of the tile, 1.8-2.2x int4; since they run in the lattice form too, the target applies)
    # M = 1: int8 and int4 both read their weights from L3 at ~27-29 GB/s, one core's L3 limit
    # here; ORT MatMulNBits runs at 475-547 us. Measured 0.62-0.72x.
    ("lowbit-int4", "1x4096x4096", ("ort-int4",)): round(0.72 * CI_MARGIN, 2),
}

GATES = [
    # (name, lowbit peer, shape, [(reference peers (min taken), max ratio lowbit/reference)])
    ("int8 vs ORT", "lowbit-int8", "1x4096x4096", [(("ort-int8",), 0.8)]),
    ("int8 vs best peer", "lowbit-int8", "128x768x3072", [(("ort-int8", "torch-int8"), 1.0)]),
    ("int8 vs best peer", "lowbit-int8", "256x4096x4096", [(("ort-int8", "torch-int8"), 1.0)]),
    ("int4", "lowbit-int4", "1x4096x4096", [(("ort-int4",), 0.5), (("lowbit-int8",), 0.7)]),
    ("int4", "lowbit-int4", "128x768x3072", [(("ort-int4",), 0.4), (("lowbit-int8",), 1.25)]),
    ("nf4", "lowbit-nf4", "1x4096x4096", [(("lowbit-int4",), 1.2)]),
    ("nf4", "lowbit-nf4", "128x768x3072", [(("lowbit-int4",), 1.2)]),
    # reduce_range=True (7-bit weights, qs7-n16k4): the int8 targets, measured for the option
    ("int8 reduce_range vs ORT", "lowbit-int8r", "1x4096x4096", [(("ort-int8",), 0.8)]),
    ("int8 reduce_range vs best peer", "lowbit-int8r", "128x768x3072", [(("ort-int8", "torch-int8"), 1.0)]),
    ("int8 reduce_range vs best peer", "lowbit-int8r", "256x4096x4096", [(("ort-int8", "torch-int8"), 1.0)]),
]


def _ci_limit(peer, shape, ref_peers, limit):
    """The ratio beyond which CI fails: the target times CI_MARGIN, or on ISA avx2 / amx the
    explicit regression gate where the target is out of reach there."""
    isa = lowbit.cpu_info()["isa"]
    if isa == "avx2" and (peer, shape, ref_peers) in AVX2_GATES:
        return AVX2_GATES[(peer, shape, ref_peers)], "avx2 regression gate"
    if isa == "amx" and (peer, shape, ref_peers) in AMX_GATES:
        return AMX_GATES[(peer, shape, ref_peers)], "amx regression gate"
    return limit * CI_MARGIN, "target x CI_MARGIN"


# 256x4096x4096: 20 rounds (~0.6 s). With 6 (~0.2 s), the CI run on 8ef1845 read lowbit int8 at
# 13.1 ms, its best of all six, against 4.65 ms in its pytest-benchmark block of the same run and
# 5.7 ms for the 7-bit variant's gate a minute later: one slow stretch of the VM covered every round.
INTERLEAVED_ROUNDS = {"1x4096x4096": 60, "128x768x3072": 20, "256x4096x4096": 20}


def _interleaved_1t(peers, shape):
    """Best 1-thread time of each peer over alternating calls on the same input: the load of a
    shared machine changes over seconds, and alternating gives every peer the same moments
    (the pytest-benchmark rounds time each peer in its own block). Each timed call follows an
    untimed call of the same peer, so it finds its own weights in cache as a pytest-benchmark
    round does: the three 1x4096x4096 peers' weights together (8.5 + 8.5 + 16 MB) overflow a
    32 MB L3, and timing each call right after the others' made the 4-bit gate a DRAM
    measurement on a Zen 4 (lowbit int4 421 us there against 165 us in its block; the memory-
    bound case has its own bench, test_weight_streaming)."""
    M, K, _ = SHAPES[shape]
    x = np.random.default_rng(M).standard_normal((M, K), dtype=np.float32)
    fns = [_peer(p, shape)[0](1) for p in peers]
    for f in fns:
        f(x)
    best = [float("inf")] * len(fns)
    for _ in range(INTERLEAVED_ROUNDS[shape]):
        for i, f in enumerate(fns):
            f(x)
            t = time.perf_counter()
            f(x)
            best[i] = min(best[i], time.perf_counter() - t)
    lowbit.set_num_threads(os.cpu_count() or 1)
    return dict(zip(peers, best))


@pytest.mark.parametrize("name,peer,shape,refs", GATES, ids=[f"{g[1]}-{g[2]}" for g in GATES])
def test_qgemm_gate(name, peer, shape, refs):
    """1 thread: the gate, from the peers timed interleaved. 2 threads: the ratio of the
    pytest-benchmark times, recorded."""
    if _t(peer, shape) is None:
        pytest.skip("run together with test_qgemm")
    failures = []
    peers = [peer] + sorted({p for ref_peers, _ in refs for p in ref_peers})
    il = _interleaved_1t(peers, shape)
    record("qgemm", f"interleaved/{peer}/{shape}/1t", il)
    for threads in (1, 2):
        for ref_peers, limit in refs:
            if threads == 1:
                got, mt = [il[p] for p in ref_peers], il[peer]
            else:
                got = [g for g in (_t(p, shape, threads) for p in ref_peers) if g is not None]
                mt = _t(peer, shape, threads)
            if not got or mt is None:
                continue
            ratio = mt / min(got)
            key = f"{peer}/{'+'.join(ref_peers)}/{shape}/{threads}t"
            record("qgemm", f"ratio/{key}", ratio)
            ci_limit, kind = _ci_limit(peer, shape, ref_peers, limit)
            if threads == 1:
                record("qgemm", f"target/{key}", {"target": limit, "met": ratio <= limit, "ci_limit": ci_limit,
                                                  "ci_gate": kind, "ratio": ratio})
            print(f"\n{peer} {shape} {threads}t: {ratio:.2f}x the time of {'/'.join(ref_peers)} (target <= {limit} at 1t; "
                  f"CI fails beyond {ci_limit:.2f}, {kind}{'; interleaved' if threads == 1 else ''})")
            if threads == 1 and ratio > ci_limit:
                failures.append(f"{peer} {shape}: {ratio:.2f}x the time of {'/'.join(ref_peers)}, target <= {limit} "
                                f"(CI fails beyond {ci_limit:.2f}, {kind})")
    assert not failures, "; ".join(failures)


# ---- weights streamed from memory ----------------------------------------------------------

STREAM_BYTES = 288 << 20  # > 256 MB of distinct weights: nothing stays in the 32 MB L3
STREAM_TARGET = 0.70      # GB/s of weights read / plain read loop GB/s


def _stream_model(enc, d):
    """A chain of 4096x4096 Dense layers holding STREAM_BYTES of weights, packed from
    random codes (the values do not matter for speed); one run (of any number of rows) reads
    each once."""
    from lowbit.format import save
    from lowbit.ir import Graph, Node, Tensor, ValueInfo
    K = N = 4096
    rng = np.random.default_rng(0)
    tensors, nodes, total = {}, [], 0
    prev = "x"
    i = 0
    while total < STREAM_BYTES:
        if enc == "qs8-n16k4":
            p = _core.pack_qs8(rng.integers(-127, 128, (K, N), dtype=np.int8), np.full(N, 1 / (70 * 64), np.float32))
        else:
            s = np.full((K // 32, N), 1 / (4.6 * 64), np.float16).view(np.uint16)
            p = _core.pack_q4(rng.integers(0, 16, (K, N), dtype=np.uint8), s, None, None, "sym", 32)
        tensors[f"w{i}"] = Tensor(f"w{i}", p, "float32", (K, N), enc, {})
        nodes.append(Node("Dense", [prev, f"w{i}"], [f"h{i}"], {"activation": 0}, f"fc{i}"))
        prev = f"h{i}"
        total += p.nbytes
        i += 1
    nodes[-1].outputs = ["y"]
    g = Graph([ValueInfo("x", "float32", ("m", K))], [ValueInfo("y", "float32", ("m", N))], nodes, tensors)
    path = os.path.join(d, f"stream-{enc}.qbin")
    save(g, path)
    return lowbit.load(path), total


@pytest.mark.parametrize("quant,enc", [("int8", "qs8-n16k4"), ("int4", "q4-g32-sym-n16k8")])
def test_weight_streaming(benchmark, quant, enc, tmp_path):
    lowbit.set_num_threads(1)
    model, total = _stream_model(enc, str(tmp_path))
    x = np.random.default_rng(0).standard_normal((1, 4096), dtype=np.float32)
    assert np.all(np.isfinite(model.run(x)))
    buf = np.ones(1 << 27, np.uint64)  # 1 GiB: the bare read loop also streams from DRAM
    bw = max(read_loop_gbs(buf) for _ in range(5))
    benchmark.group = "weight streaming 1t"
    benchmark.extra_info.update(quant=quant, weight_bytes=total, layers=len(model.layers()))
    benchmark.pedantic(model.run, args=(x,), rounds=7, iterations=1, warmup_rounds=1)
    bw = max(bw, max(read_loop_gbs(buf) for _ in range(3)))  # best of before and after, against the same noise
    gbs = total / benchmark.stats.stats.min / 1e9
    frac = gbs / bw
    record("qgemm", f"stream/{quant}", {"weight_bytes": total, "weights_gbs": gbs, "read_loop_gbs": bw, "fraction": frac})
    print(f"\n{quant} M=1 over {total / 2**20:.0f} MB of weights: {gbs:.1f} GB/s of weights, "
          f"plain read loop {bw:.1f} GB/s -> {frac:.0%} (target {STREAM_TARGET:.0%})")
    lowbit.set_num_threads(os.cpu_count() or 1)
    assert frac >= STREAM_TARGET


STREAM_ROWS = 16
STREAM_ROWS_TARGET = 0.70  # of the roofline: min(plain read from DRAM, int8 MAC rate / rows)


def test_weight_streaming_16_rows(tmp_path):
    """int8, 16 rows over the same > 256 MB chain of 4096x4096 layers: every weight byte read
    once from DRAM serves 16 MACs, so a layer is bound by the slower of reading its bytes (the
    plain one-stream read of this ISA over 1 GiB, memread.h) and doing its MACs (qs8_dotpeak, the
    level's int8 dot instruction in registers; not on amx, whose GEMM takes AMX tiles at 16 rows).
    Gated on the share of that bound reached, interleaved. The tiled GEMM reads a column block's
    panels from memory in its first row tile only; on a Zen 4 this reached 71-73% of the bound
    (avx512vnni). A next-block L2 prefetch that was tried is recorded in docs/kernels.md."""
    isa = lowbit.cpu_info()["isa"]
    lowbit.set_num_threads(1)
    try:
        model, total = _stream_model("qs8-n16k4", str(tmp_path))
        x = np.random.default_rng(0).standard_normal((STREAM_ROWS, 4096), dtype=np.float32)
        assert np.all(np.isfinite(model.run(x)))
        buf = np.ones(1 << 27, np.uint64)  # 1 GiB
        macs = STREAM_ROWS * total  # one MAC per weight byte and row (int8 weights)
        fns = [lambda: model.run(x), lambda: _core.memread_sum(buf, isa)]
        mac_rounds = macs // 1024 // 16  # a sixteenth of the MACs (the probe's rate does not depend on its length)
        if isa != "amx":
            fns.append(lambda: _core.qs8_dotpeak(isa, mac_rounds))
        best = [float("inf")] * len(fns)
        for _ in range(10):
            for i, f in enumerate(fns):
                t = time.perf_counter()
                f()
                best[i] = min(best[i], time.perf_counter() - t)
    finally:
        lowbit.set_num_threads(os.cpu_count() or 1)
    gbs = total / best[0] / 1e9
    read_gbs = buf.nbytes / best[1] / 1e9
    mac_gbs = mac_rounds * 1024 / best[2] / STREAM_ROWS / 1e9 if len(best) > 2 else float("inf")
    bound = min(read_gbs, mac_gbs)
    frac = gbs / bound
    record("qgemm", "stream16/int8", {"rows": STREAM_ROWS, "weight_bytes": total, "weights_gbs": gbs, "read_gbs": read_gbs,
                                      "mac_bound_gbs": None if mac_gbs == float("inf") else mac_gbs, "fraction": frac,
                                      "target": STREAM_ROWS_TARGET})
    print(f"\nint8 M={STREAM_ROWS} over {total / 2**20:.0f} MB of weights: {gbs:.1f} GB/s of weights "
          f"({gbs * STREAM_ROWS:.0f} G MACs/s); bound {bound:.1f} GB/s (plain read {read_gbs:.1f} GB/s, "
          f"int8 MACs / {STREAM_ROWS} {mac_gbs:.1f} GB/s) -> {frac:.0%} (target {STREAM_ROWS_TARGET:.0%})")
    floor = STREAM_ROWS_TARGET / CI_MARGIN
    assert frac >= floor, f"{frac:.0%} of the bound, target {STREAM_ROWS_TARGET:.0%} (CI fails below {floor:.0%})"
