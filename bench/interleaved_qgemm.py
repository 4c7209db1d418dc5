"""Interleaved timing of the qgemm bench's peers, for shared, noisy machines.

The pytest-benchmark suite (test_qgemm.py) times each peer in its own block of rounds; when
other processes come and go between those blocks, the ratios move by tens of percent. This
script builds the same peers (test_qgemm._peer: lowbit Model.run on the converted one-layer
.qbin, ORT int8 / MatMulNBits, PyTorch dynamic int8), runs them round-robin on the same
input and keeps each one's best round. At 1 thread it reads the CPU time of the calling
thread (all three run single-threaded in the caller), so time spent descheduled by other
tenants does not count; at 2 threads it reads wall time.

    python bench/interleaved_qgemm.py 1x4096x4096,128x768x3072 1
    python bench/interleaved_qgemm.py 256x4096x4096 1 lowbit-int8,ort-int8,torch-int8

Prints the times and every gate ratio of test_qgemm.GATES with its target. Run it under
`flock /tmp/lowbit-bench.lock` like every timing run.
"""

import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import lowbit  # noqa: E402
import test_qgemm as B  # noqa: E402


def main(argv):
    shapes = argv[1].split(",")
    threads = int(argv[2])
    peers = argv[3].split(",") if len(argv) > 3 else list(B.PEERS)
    rounds = int(os.environ.get("ROUNDS", "15"))
    cpu_time = threads == 1 and os.environ.get("CLOCK", "thread") == "thread"
    clock = time.thread_time if cpu_time else time.perf_counter
    for shape in shapes:
        M, K, N = B.SHAPES[shape]
        x = np.random.default_rng(M).standard_normal((M, K), dtype=np.float32)
        fns = {}
        for p in peers:
            if (p, shape) not in B.SKIP:
                fns[p] = B._peer(p, shape)[0](threads)
        iters = max(1, int(0.03 / (2 * M * K * N / 60e9)))  # ~30 ms per round
        best = {p: float("inf") for p in fns}
        for f in fns.values():
            f(x)
        for _ in range(rounds):
            for p, f in fns.items():
                if p.startswith("lowbit"):
                    lowbit.set_num_threads(threads)
                elif p.startswith("torch"):
                    import torch
                    torch.set_num_threads(threads)
                t = clock()
                for _ in range(iters):
                    f(x)
                best[p] = min(best[p], (clock() - t) / iters)
        kind = "thread CPU time" if cpu_time else "wall time"
        print(f"{shape} {threads}t ({kind}, best of {rounds}, isa {lowbit.cpu_info()['isa']}): " +
              " ".join(f"{p}={best[p] * 1e6:.0f}us" for p in best), flush=True)
        for _, peer, shp, refs in B.GATES:
            for ref_peers, limit in refs:
                if shp == shape and peer in best and all(q in best for q in ref_peers):
                    ratio = best[peer] / min(best[q] for q in ref_peers)
                    print(f"   {peer} / {'+'.join(ref_peers)}: {ratio:.3f} (target {limit})", flush=True)


if __name__ == "__main__":
    main(sys.argv)
