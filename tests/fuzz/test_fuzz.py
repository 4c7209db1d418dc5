"""The fuzzers in the normal suite: seed coverage, the saved corpus of past
findings (each must now fail cleanly with its expected error), and a short run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import lowbit
from lowbit.format import ENCODINGS

from fuzz import seeds as seedgen

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(os.path.dirname(HERE), "corpus")
FUZZ = os.path.join(HERE, "fuzz.py")


@pytest.fixture(scope="module")
def seed_set(tmp_path_factory):
    return seedgen.generate(str(tmp_path_factory.mktemp("seeds")))


def test_seeds_cover_every_encoding(seed_set):
    # A new encoding in lowbit.format.ENCODINGS needs a seed (a model + convert
    # option in fuzz/seeds.py that produces it), or it goes unfuzzed.
    seeds, skipped = seed_set
    covered = set().union(*(s.encodings for s in seeds))
    assert set(ENCODINGS) <= covered, f"no fuzz seed uses {sorted(set(ENCODINGS) - covered)}; skipped: {skipped}"
    for s in seeds:
        lowbit.load(s.qbin)  # every seed is valid


def _env():
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(lowbit.__file__))
    env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_corpus_of_past_findings_fails_cleanly():
    expected = json.load(open(os.path.join(CORPUS, "expected.json")))
    files = sorted(f for f in os.listdir(CORPUS) if f.endswith((".qbin", ".onnx")))
    assert sorted(expected) == files, "every corpus file needs an entry in tests/corpus/expected.json"
    # In a child process: a crash must fail this test, not end the test run.
    r = subprocess.run([sys.executable, FUZZ, "--replay", *[os.path.join(CORPUS, f) for f in files]],
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    for f in files:
        assert f in lines, r.stdout
        assert expected[f] in f"{f}: {lines[f]}", f"{f}: expected {expected[f]!r}, got {lines[f]!r}"


def test_short_fuzz_run(tmp_path):
    # A few thousand cases of both targets (the CI run in .ci/run does 100,000).
    r = subprocess.run([sys.executable, FUZZ, "--execs", "3000", "--onnx-share", "0.2", "--seed", "11",
                        "--findings", str(tmp_path / "findings")],
                       capture_output=True, text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    assert "total: 3000 executions, 0 findings" in r.stdout, r.stdout


def test_supervisor_catches_crashes_hangs_and_unexpected_errors(tmp_path):
    # The selftest target segfaults, sleeps forever or raises TypeError on marked
    # inputs; the supervisor must save each, restart the child and go on.
    find = tmp_path / "findings"
    r = subprocess.run([sys.executable, FUZZ, "--targets", "selftest", "--execs", "40", "--hang-seconds", "2",
                        "--findings", str(find)], capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 1, r.stdout + r.stderr
    assert "total: 40 executions" in r.stdout, r.stdout
    crashes = [line for line in r.stdout.splitlines() if "crash (exit status" in line]
    assert len(crashes) == len(set(crashes)), "a crash was retried instead of skipped"
    saved = sorted(os.listdir(find))
    assert any(name.endswith("-crash-in-mutator.txt") for name in saved), saved
    kinds = {name.rsplit("-", 1)[1].split(".")[0] for name in saved if name.endswith(".selftest")}
    assert kinds == {"crash", "hang", "TypeError"}, saved
    for name in saved:
        if name.endswith(".selftest"):
            data = (find / name).read_bytes()
            want = {"crash": b"CRASH", "hang": b"HANG", "TypeError": b"TYPE"}[name.rsplit("-", 1)[1].split(".")[0]]
            assert data == want, (name, data)  # the input in flight is the one saved
