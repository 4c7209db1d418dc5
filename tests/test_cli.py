"""The command line, through a subprocess: the demo's numbers, convert/inspect/run,
and exit codes for failures (1) and bad usage (2)."""

import json
import subprocess
import sys

import numpy as np

import models


def lowbit_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "lowbit", *args], capture_output=True, text=True, timeout=timeout)


def test_demo_reports_accuracy_and_speed():
    r = lowbit_cli("demo", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["test_samples"] == 360
    assert out["accuracy"] >= 0.97  # the bundled MLP scores 98.6% on held-out digits
    assert out["latency_batch_ms"] > 0 and out["throughput_samples_per_s"] > 0
    assert out["max_abs_diff_vs_onnxruntime"] < 1e-4
    assert [l["op"] for l in out["layers"]] == ["Dense"] * 3


def test_demo_human_output():
    r = lowbit_cli("demo")
    assert r.returncode == 0, r.stderr
    assert "accuracy on 360 held-out digits" in r.stdout and "samples/s" in r.stdout


def test_convert_inspect_run(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(models.mlp4(sizes=(16, 32, 24, 20, 5)).SerializeToString())
    dst = tmp_path / "m.qbin"
    r = lowbit_cli("convert", str(src), "-o", str(dst))
    assert r.returncode == 0, r.stderr
    assert "f32-n16" in r.stdout and dst.exists()
    r = lowbit_cli("inspect", str(dst), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert [l["op"] for l in info["layers"]].count("Dense") == 4
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = lowbit_cli("run", str(dst), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y, models.ort_run(models.mlp4(sizes=(16, 32, 24, 20, 5)), {"x": x})[0], rtol=1e-5,
                               atol=1e-7)


def test_failures_exit_1_with_a_message(tmp_path):
    r = lowbit_cli("inspect", str(tmp_path / "missing.qbin"))
    assert r.returncode == 1 and "cannot open" in r.stderr
    bad = tmp_path / "bad.qbin"
    bad.write_bytes(b"\x89QBIN\r\n\x1a" + bytes(100))
    r = lowbit_cli("inspect", str(bad))
    assert r.returncode == 1 and "bad.qbin" in r.stderr and "checksum" in r.stderr


def test_bad_usage_exits_2():
    r = lowbit_cli("convert")
    assert r.returncode == 2 and "usage" in r.stderr
    r = lowbit_cli("frobnicate")
    assert r.returncode == 2
