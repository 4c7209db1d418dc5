"""Mutation fuzzer for the .qbin loader + executor and the ONNX importer.

A supervisor runs the target in a child process (one per target, restarted
after a crash), reads one line per execution, and treats a dead child as a
crash and a silent one as a hang; either way the input is saved. Unexpected
Python exceptions are saved by the child itself. Cases are derived from
(--seed, target, iteration), so any finding can be regenerated.

    python tests/fuzz/fuzz.py --execs 100000                 # the CI run
    python tests/fuzz/fuzz.py --seconds 3600 --execs 0       # a long run
    python tests/fuzz/fuzz.py --replay tests/corpus/*.qbin   # re-run saved inputs

Exit status: 0 no finding, 1 findings (listed, saved under --findings).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

EXT = {"qbin": ".qbin", "onnx": ".onnx", "selftest": ".selftest"}
CASE_FILE = {"qbin": "case.qbin", "onnx": "case.onnx", "selftest": "case.selftest"}


# -- child ----------------------------------------------------------------------

def worker(args: argparse.Namespace) -> int:
    from fuzz import mutators, targets  # noqa: F401  (imports lowbit)
    import lowbit

    lowbit.set_num_threads(args.threads)
    ext = EXT[args.target]
    seeds = sorted(os.path.join(args.seed_dir, f) for f in os.listdir(args.seed_dir) if f.endswith(ext))
    blobs = [open(p, "rb").read() for p in seeds]
    mutate = mutators.mutate_qbin if args.target == "qbin" else mutators.mutate_onnx
    if args.target == "selftest":  # marked inputs that crash, hang or raise, to test this supervisor
        blobs = [b"ok"]

        def mutate(rng, blob, other):
            data = rng.choice([b"ok"] * 6 + [b"BAD", b"CRASH", b"HANG", b"TYPE", b"MUTATOR"])
            if data == b"MUTATOR":  # a crash inside the mutation step itself
                os.kill(os.getpid(), signal.SIGSEGV)
            return data
    target = targets.TARGETS[args.target]
    out = sys.stdout
    case_file = os.path.join(args.workdir, CASE_FILE[args.target])
    counts: dict[str, int] = {}
    deadline = args.deadline
    i = args.start
    for i in range(args.start, args.end):
        if deadline and time.time() > deadline:
            break
        # The index goes out before the mutation: a crash inside the mutators is
        # charged to this iteration, and the restart skips it.
        out.write(f"{i}\n")
        out.flush()
        try:  # no stale input: a crash before the target writes the case leaves none to save
            os.unlink(case_file)
        except FileNotFoundError:
            pass
        rng = random.Random(f"{args.seed}:{args.target}:{i}")
        k = rng.randrange(len(blobs))
        data = blobs[k] if rng.random() < 0.02 else mutate(rng, blobs[k], blobs[rng.randrange(len(blobs))])
        t0 = time.perf_counter()
        try:
            res = target(data, args.workdir, rng)
        except Exception as e:  # noqa: BLE001 - anything outside EXPECTED is a finding
            res = "finding"
            name = f"{args.target}-{args.seed}-{i}-{type(e).__name__}"
            with open(os.path.join(args.findings, name + ext), "wb") as f:
                f.write(data)
            with open(os.path.join(args.findings, name + ".txt"), "w") as f:
                f.write(traceback.format_exc())
            out.write(f"finding {i} {type(e).__name__}: {str(e)[:200]!r}\n")
        dt = time.perf_counter() - t0
        if dt > args.slow_seconds:
            name = f"{args.target}-{args.seed}-{i}-slow"
            with open(os.path.join(args.findings, name + ext), "wb") as f:
                f.write(data)
            out.write(f"finding {i} slow: {dt:.1f} s\n")
        counts[res] = counts.get(res, 0) + 1
        if (i + 1) % 5000 == 0:  # partial counts survive a later crash
            out.write("stats " + json.dumps(counts) + "\n")
            counts = {}
    out.write("done " + json.dumps(counts) + "\n")
    out.flush()
    return 0


# -- supervisor -------------------------------------------------------------------

def _spawn(args, target, start, end, workdir, seed_dir, findings, deadline):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--target", target, "--seed", str(args.seed),
           "--start", str(start), "--end", str(end), "--workdir", workdir, "--seed-dir", seed_dir,
           "--findings", findings, "--threads", str(args.threads), "--deadline", str(deadline),
           "--slow-seconds", str(args.hang_seconds / 2)]
    env = dict(os.environ)
    env.setdefault("LOWBIT_MAX_MEMORY", str(256 << 20))
    stderr = open(os.path.join(workdir, "stderr.txt"), "wb")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True)
    return p, stderr


def run_target(args, target: str, n: int, seconds: float, seed_dir: str, findings: str) -> dict:
    """Runs iterations [0, n) of one target (n = 0: until the time is up)."""
    workdir = tempfile.mkdtemp(prefix=f"lowbit-fuzz-{target}-")
    end = n if n else 1 << 62
    deadline = time.time() + seconds if seconds else 0.0
    stats = {"target": target, "execs": 0, "findings": [], "outcomes": {}, "restarts": 0}
    start = 0
    t0 = time.time()
    while start < end and (not deadline or time.time() < deadline):
        p, errf = _spawn(args, target, start, end, workdir, seed_dir, findings, deadline)
        cur = start - 1
        buf = b""
        status = None
        while True:
            r, _, _ = select.select([p.stdout], [], [], args.hang_seconds)
            if not r:  # no line for hang_seconds: the case in flight hangs
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                status = "hang"
                break
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                p.wait()
                status = "exit" if p.returncode == 0 else f"crash (exit status {p.returncode})"
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                s = line.decode(errors="replace")
                if s.startswith("finding"):
                    stats["findings"].append(f"{target}: {s}")
                elif s.startswith(("done", "stats")):
                    for k, v in json.loads(s.split(" ", 1)[1]).items():
                        stats["outcomes"][k] = stats["outcomes"].get(k, 0) + v
                elif s:
                    cur = int(s)
        errf.close()
        if status == "exit":
            stats["execs"] += max(0, cur - start + 1)
            break
        if cur < start:  # died before announcing a case (start-up): do not retry the same start forever
            cur = start
        stats["execs"] += cur - start + 1
        # Crash or hang at iteration `cur`: keep its input, then resume after it.
        name = f"{target}-{args.seed}-{cur}-{status.split()[0]}"
        src = os.path.join(workdir, CASE_FILE[target])
        if os.path.exists(src):
            shutil.copy(src, os.path.join(findings, name + EXT[target]))
        else:  # died inside the mutators: the case is regenerated from (seed, target, iteration)
            name += "-in-mutator"
        shutil.copy(os.path.join(workdir, "stderr.txt"), os.path.join(findings, name + ".txt"))
        stats["findings"].append(f"{target}: {status} at iteration {cur} -> {name}{EXT[target]}")
        stats["restarts"] += 1
        start = cur + 1
    stats["seconds"] = round(time.time() - t0, 1)
    shutil.rmtree(workdir, ignore_errors=True)
    return stats


def supervise(args: argparse.Namespace) -> int:
    from fuzz import seeds as seedgen

    findings = os.path.abspath(args.findings)
    os.makedirs(findings, exist_ok=True)
    seed_dir = tempfile.mkdtemp(prefix="lowbit-fuzz-seeds-")
    got, skipped = seedgen.generate(seed_dir)
    print(f"seeds: {len(got)} .qbin ({', '.join(s.name for s in got)}), {len(seedgen.MODELS)} .onnx; "
          f"skipped options: {', '.join(skipped) or 'none'}", flush=True)
    share = {"qbin": 1.0 - args.onnx_share, "onnx": args.onnx_share, "selftest": 1.0}
    results = []
    for target in args.targets.split(","):
        n = int(round(args.execs * share[target])) if args.execs else 0
        secs = args.seconds * share[target] if args.seconds else 0
        if args.execs and n == 0:
            continue
        results.append(run_target(args, target, n, secs, seed_dir, findings))
        print(json.dumps(results[-1]), flush=True)
    shutil.rmtree(seed_dir, ignore_errors=True)
    total = sum(r["execs"] for r in results)
    nfind = sum(len(r["findings"]) for r in results)
    print(f"total: {total} executions, {nfind} findings"
          + (f" (saved in {findings})" if nfind else ""), flush=True)
    for r in results:
        for f in r["findings"]:
            print("  " + f)
    if args.min_execs and total < args.min_execs:
        print(f"fewer executions than --min-execs {args.min_execs}")
        return 1
    return 1 if nfind else 0


def replay(paths: list[str]) -> int:
    """Runs saved inputs through their target in this process; prints one outcome per file."""
    from fuzz import targets

    bad = 0
    with tempfile.TemporaryDirectory() as wd:
        for p in paths:
            target = "onnx" if p.endswith(".onnx") else "qbin"
            data = open(p, "rb").read()
            try:
                res = targets.TARGETS[target](data, wd, random.Random(0))
            except targets.EXPECTED as e:  # pragma: no cover - targets catch these
                res = f"{type(e).__name__}"
            except Exception as e:  # noqa: BLE001
                res = f"finding {type(e).__name__}: {e}"
                bad += 1
            detail = f" ({targets.last_error})" if targets.last_error and not res.startswith("finding") else ""
            print(f"{os.path.basename(p)}: {res}{detail}", flush=True)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="qbin,onnx")
    ap.add_argument("--execs", type=int, default=100_000, help="total executions over all targets (0: no cap)")
    ap.add_argument("--seconds", type=float, default=0, help="time budget over all targets (0: no cap)")
    ap.add_argument("--min-execs", type=int, default=0, help="fail when fewer executions happened")
    ap.add_argument("--onnx-share", type=float, default=0.1, help="share of executions/time for the ONNX target")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hang-seconds", type=float, default=10.0)
    ap.add_argument("--findings", default="build/fuzz-findings")
    ap.add_argument("--replay", nargs="*")
    # child mode
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--end", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--seed-dir", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--slow-seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.replay is not None:
        return replay(args.replay)
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
