"""``lowbit report``: the HTML page's content, its plots, and how it renders in
headless Chromium (Debian's ``chromium``; CI installs it and sets
LOWBIT_REQUIRE_CHROMIUM=1 so the browser test cannot be skipped there)."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import models

LOWBIT_ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def lowbit_cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "lowbit", *args], capture_output=True, text=True, timeout=timeout,
                          env=LOWBIT_ENV)


def _png_pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


SENS = {"metric": "loss", "baseline": 0.5, "options": ["int8", "int4_g32"],
        "layers": {"fc0": {"params": 512, "fp32_bits": 16384,
                           "options": {"fp32": {"delta": 0.0, "bits": 16384, "latency": None},
                                       "int8": {"delta": 0.001, "bits": 4608, "latency": None},
                                       "int4_g32": {"delta": 0.02, "bits": 2560, "latency": None}}},
                   "fc1": {"params": 768, "fp32_bits": 24576,
                           "options": {"fp32": {"delta": 0.0, "bits": 24576, "latency": None},
                                       "int8": {"delta": 0.0004, "bits": 6912, "latency": None},
                                       "int4_g32": {"delta": 0.3, "bits": 3840, "latency": None}}}}}
RECIPE = {"format": "lowbit.recipe/1", "seed": 0, "target": {"bits_per_weight": 6.0},
          "summary": {"bits_per_weight": 5.5, "metric": "loss", "sum_delta": 0.0204},
          "layers": {"fc0": {"option": "int4_g32", "quant": {"bits": 4, "scheme": "linear", "granularity": "group",
                                                             "group_size": 32}, "sparsity": None, "pattern":
                             "unstructured", "rank": None, "delta": 0.02, "bits": 2560, "latency": None},
                     "fc1": {"option": "int8", "quant": {"bits": 8, "scheme": "linear", "granularity": "channel"},
                             "sparsity": None, "pattern": "unstructured", "rank": None, "delta": 0.0004,
                             "bits": 6912, "latency": None}}}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    pytest.importorskip("matplotlib")
    d = tmp_path_factory.mktemp("report")
    src = d / "m.onnx"
    src.write_bytes(models.mlp4(sizes=(32, 64, 48, 40, 10)).SerializeToString())
    r = lowbit_cli("convert", str(src), "-o", str(d / "m.qbin"), "--quant", "int8")
    assert r.returncode == 0, r.stderr
    (d / "sens.json").write_text(json.dumps(SENS))
    (d / "recipe.json").write_text(json.dumps(RECIPE))
    r = lowbit_cli("report", str(d / "m.qbin"), "--sensitivity", str(d / "sens.json"), "--recipe",
                   str(d / "recipe.json"), "-o", str(d / "report.html"), "--batch", "8", "--repeat", "5", "--json")
    assert r.returncode == 0, r.stderr
    return d, json.loads(r.stdout)


def test_report_content(made):
    d, out = made
    assert out["written"] == [str(d / "report.html")]
    data = out["report"]
    dense = [l for l in data["layers"] if l["op"] == "Dense"]
    assert len(dense) == 4 and all(l["encoding"] == "qs8-n16k4" for l in dense)
    assert all(l["latency_ms"] > 0 for l in dense)
    assert data["latency"]["input_shapes"] == {"x": [8, 32]}
    page = (d / "report.html").read_text()
    rows = re.search(r'<table id="layers">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    assert rows.count("<tr>") == len(data["layers"]) + 1  # + the totals row
    for l in dense:
        assert f"<td>{l['name']}</td>" in rows
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [a for a, _ in imgs] == ["Size per layer before (fp32) and after (as stored)",
                                    "Measured latency per layer", "Per-layer sensitivity curves"]
    for _, b64 in imgs:
        px = _png_pixels(base64.b64decode(b64))
        assert px.shape[0] > 100 and px.std() > 10  # a drawn chart, not a blank image
    assert '<table id="recipe">' in page and "int4_g32" in page
    assert '<table id="sensitivity">' in page
    assert "src=\"http" not in page and "<script" not in page  # self-contained


def test_report_without_plots_and_png_dir(made, tmp_path):
    d, _ = made
    r = lowbit_cli("report", str(d / "m.qbin"), "-o", str(tmp_path / "a.html"), "--no-plots", "--no-latency")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "a.html").read_text()
    assert "<img" not in page and "plots turned off" in page and '<table id="layers">' in page
    r = lowbit_cli("report", str(d / "m.qbin"), "-o", str(tmp_path / "b.html"), "--png-dir", str(tmp_path / "png"),
                   "--repeat", "2")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "png")) == ["latency.png", "sizes.png"]
    page = (tmp_path / "b.html").read_text()
    assert 'src="png/sizes.png"' in page and 'src="png/latency.png"' in page


def test_report_bad_usage(made, tmp_path):
    d, _ = made
    r = lowbit_cli("report", str(tmp_path / "none.qbin"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = lowbit_cli("report", str(d / "m.qbin"), "--recipe", str(tmp_path / "none.json"), "-o", str(tmp_path / "x.html"))
    assert r.returncode == 1 and "recipe" in r.stderr and "does not exist" in r.stderr
    (tmp_path / "list.json").write_text("[]")
    r = lowbit_cli("report", str(d / "m.qbin"), "--sensitivity", str(tmp_path / "list.json"), "-o",
                   str(tmp_path / "x.html"), "--no-latency")
    assert r.returncode == 1 and "not a sensitivity table" in r.stderr
    r = lowbit_cli("report", str(d / "m.qbin"), "--repeat", "0")
    assert r.returncode == 2 and "--repeat must be >= 1" in r.stderr


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    if os.environ.get("LOWBIT_REQUIRE_CHROMIUM"):
        pytest.fail("chromium is required here (LOWBIT_REQUIRE_CHROMIUM=1) but not installed")
    pytest.skip("chromium not installed (apt-get install chromium)")


def test_report_renders_in_headless_chromium(made, tmp_path):
    d, out = made
    exe = _chromium()
    url = (d / "report.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([exe, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the DOM as the browser parsed it: the per-layer table with one row per layer, and the plots
    body = re.search(r'<table id="layers">.*?<tbody>(.*?)</tbody>', dom.stdout, re.S)
    assert body, "no per-layer table in the rendered DOM"
    assert body.group(1).count("<tr>") == len(out["report"]["layers"]) + 1
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', dom.stdout)) == 3
    shot = tmp_path / "report.png"
    r = subprocess.run([exe, *flags, "--window-size=1280,2000", f"--screenshot={shot}", url], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    px = _png_pixels(shot.read_bytes())
    assert px.shape[:2] == (2000, 1280)
    assert px.std() > 20  # text, tables and charts: far from a blank page
    # the charts are drawn in colour: the bars' blue (#2f6fdf) and orange (#e07b39) appear on screen
    blue = (np.abs(px - [47, 111, 223]).sum(axis=2) < 40).sum()
    orange = (np.abs(px - [224, 123, 57]).sum(axis=2) < 40).sum()
    assert blue > 500 and orange > 500, (blue, orange)
