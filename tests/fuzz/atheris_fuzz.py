"""Coverage-guided fuzzing of the same targets with atheris (libFuzzer for Python).

atheris traces the Python code of lowbit (the loader, the validator, the ONNX
importer and the passes) for coverage; the C++ engine is not instrumented (that
needs a clang build with -fsanitize=fuzzer), but it runs on every input, and
under the ASan/UBSan build (.ci/sanitize) memory errors abort with a report.
The structure-aware mutators of mutators.py do most of the mutating; libFuzzer's
own byte mutator gets a share. Inputs that raise anything outside
targets.EXPECTED, crash or time out are written as crash-*/timeout-* files.

    python tests/fuzz/atheris_fuzz.py qbin -runs=20000
    python tests/fuzz/atheris_fuzz.py onnx -max_total_time=600 -artifact_prefix=build/fuzz-findings/
"""

from __future__ import annotations

import os
import random
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["lowbit"]):
    import lowbit  # noqa: F401,E402
    import lowbit.frontends.onnx  # noqa: F401,E402
    import lowbit.passes  # noqa: F401,E402

from fuzz import mutators, seeds, targets  # noqa: E402

TARGET = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1] in targets.TARGETS else "qbin"
WORKDIR = tempfile.mkdtemp(prefix="lowbit-atheris-")
SEED_DIR = os.path.join(WORKDIR, "seeds")
_seeds, _ = seeds.generate(SEED_DIR)
EXT = ".qbin" if TARGET == "qbin" else ".onnx"
BLOBS = [open(os.path.join(SEED_DIR, f), "rb").read() for f in sorted(os.listdir(SEED_DIR)) if f.endswith(EXT)]
MUTATE = mutators.mutate_qbin if TARGET == "qbin" else mutators.mutate_onnx
RUN = targets.TARGETS[TARGET]


def test_one_input(data: bytes) -> None:
    RUN(data, WORKDIR, random.Random(len(data)))  # anything outside EXPECTED propagates: a finding


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.25:
        return atheris.Mutate(data, max_size)
    base = data if data and rng.random() < 0.7 else rng.choice(BLOBS)
    try:
        out = MUTATE(rng, base, rng.choice(BLOBS))
    except Exception:  # an input the structural mutators cannot parse: mutate bytes instead
        out = atheris.Mutate(data, max_size)
    return out[:max_size]


if __name__ == "__main__":
    os.environ.setdefault("LOWBIT_MAX_MEMORY", str(targets.FUZZ_MEMORY_LIMIT))
    lowbit._core.set_memory_limit(int(os.environ["LOWBIT_MAX_MEMORY"]))
    lowbit.set_num_threads(1)
    argv = sys.argv + [SEED_DIR] if not any(not a.startswith("-") for a in sys.argv[1:]) else sys.argv
    if not any(a.startswith("-max_len") for a in argv):
        argv.append(f"-max_len={mutators.MAX_CASE_BYTES}")
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
