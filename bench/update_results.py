"""Rewrites the generated blocks of README.md and docs/kernels.md: the results
tables from the bench output (bench/results/*.json; run after `python -m pytest bench`)
and the supported-operator list from the code.

    python bench/update_results.py                     # every block
    python bench/update_results.py --only supported-ops  # one block (repeatable)

Blocks (between `<!-- NAME:start -->` and `<!-- NAME:end -->`):
- `f32-gemm`, `qgemm`: kernel-level results (bench/test_f32_gemm.py, bench/test_qgemm.py).
- `models`: end-to-end models, one row per model and precision: file size (.qbin and the ONNX
  it came from), accuracy against onnxruntime fp32, and latency of lowbit, onnxruntime and
  PyTorch at 1 and 2 threads. Read from every suite named `models_<precision>` (e.g.
  models_fp32.json, written by bench/test_models_fp32.py) with the keys
  `{lowbit|onnxruntime|pytorch}/<model>/<T>t` -> {"seconds": best},
  `size/<model>` -> {"onnx_bytes", "qbin_bytes"} and
  `error/<peer>/<model>/<T>t` -> max |y - y_ORT| / max |y_ORT|
  (or `cosine/<peer>/<model>` -> mean cosine similarity to the fp32 output).
- `supported-ops`: the ONNX operators `lowbit.frontends.onnx.supported_ops()` imports.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")  # the repo root


def _load(suite: str) -> dict | None:
    p = os.path.join(ROOT, "bench", "results", f"{suite}.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def f32_gemm_table() -> str:
    data = _load("f32_gemm")
    if data is None:
        return "_no bench results yet: run `python -m pytest bench`_"
    r = data["results"]
    m = data["machine"]
    rows = ["| shape (M×K×N) | threads | lowbit | onnxruntime MatMul | lowbit speed ÷ ORT speed | target (1 thread) |",
            "|---|---|---|---|---|---|"]
    for shape, note in (("128x768x3072", ""), ("1x4096x4096", " (64 MB of weights from DRAM)")):
        for t in (1, 2):
            a, b = r.get(f"lowbit/{shape}/{t}t"), r.get(f"onnxruntime/{shape}/{t}t")
            if not a or not b:
                continue
            ratio = b["seconds"] / a["seconds"]
            med = b.get("median_seconds", 0) / max(a.get("median_seconds", 0), 1e-12)
            rows.append(f"| {shape.replace('x', '×')}{note} | {t} | {a['seconds'] * 1e3:.3f} ms ({a['gops']:.1f} GOP/s) "
                        f"| {b['seconds'] * 1e3:.3f} ms ({b['gops']:.1f} GOP/s) | {ratio:.2f}× (median {med:.2f}×) | "
                        f"{'≥ 0.8×' if t == 1 else '—'} |")
        k2 = r.get(f"lowbit-avx2-kernel/{shape}/1t")
        if k2:
            rows.append(f"| {shape.replace('x', '×')}, AVX2 kernel alone | 1 | {k2['seconds'] * 1e3:.3f} ms "
                        f"({k2['gops']:.1f} GOP/s) | | {r[f'onnxruntime/{shape}/1t']['seconds'] / k2['seconds']:.2f}× | |")
    rows.append("")
    rows.append(f"Measured by `bench/test_f32_gemm.py` (best round of pytest-benchmark, same process, same inputs) "
                f"on {m['vendor']} with {m['cpus']} CPUs, ISA `{m['isa']}`.")
    return "\n".join(rows)


def _ms(r: dict | None) -> str:
    if not r:
        return "—"
    t = r["seconds"]
    return f"{t * 1e6:.0f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def qgemm_table() -> str:
    data = _load("qgemm")
    if data is None:
        return "_no bench results yet: run `python -m pytest bench`_"
    r, m = data["results"], data["machine"]
    rows = ["| shape (M×K×N) | threads | lowbit int8 | lowbit int4 g32 | lowbit nf4 g32 | ORT int8 | ORT int4 | PyTorch int8 |",
            "|---|---|---|---|---|---|---|---|"]
    for shape in ("1x4096x4096", "128x768x3072", "256x4096x4096"):
        for t in (1, 2):
            cells = [_ms(r.get(f"{p}/{shape}/{t}t")) for p in
                     ("lowbit-int8", "lowbit-int4", "lowbit-nf4", "ort-int8", "ort-int4", "torch-int8")]
            if all(c == "—" for c in cells):
                continue
            rows.append(f"| {shape.replace('x', '×')} | {t} | " + " | ".join(cells) + " |")
    rows += ["", "| target (1 thread) | measured | target |", "|---|---|---|"]
    gates = [("int8 1×4096×4096: lowbit ÷ ORT int8", "lowbit-int8/ort-int8/1x4096x4096", 0.8),
             ("int8 128×768×3072: lowbit ÷ best peer", "lowbit-int8/ort-int8+torch-int8/128x768x3072", 1.0),
             ("int8 256×4096×4096: lowbit ÷ best peer", "lowbit-int8/ort-int8+torch-int8/256x4096x4096", 1.0),
             ("int4 1×4096×4096: lowbit ÷ ORT int4", "lowbit-int4/ort-int4/1x4096x4096", 0.5),
             ("int4 1×4096×4096: lowbit int4 ÷ lowbit int8", "lowbit-int4/lowbit-int8/1x4096x4096", 0.7),
             ("int4 128×768×3072: lowbit ÷ ORT int4", "lowbit-int4/ort-int4/128x768x3072", 0.4),
             ("int4 128×768×3072: lowbit int4 ÷ lowbit int8", "lowbit-int4/lowbit-int8/128x768x3072", 1.25),
             ("nf4 1×4096×4096: nf4 ÷ int4", "lowbit-nf4/lowbit-int4/1x4096x4096", 1.2),
             ("nf4 128×768×3072: nf4 ÷ int4", "lowbit-nf4/lowbit-int4/128x768x3072", 1.2)]
    for label, key, target in gates:
        v = r.get(f"ratio/{key}/1t")
        if v is not None:
            rows.append(f"| {label} (time ratio) | {v:.2f}× {'(met)' if v <= target else '(**not met**)'} | ≤ {target}× |")
    for q in ("int8", "int4"):
        st = r.get(f"stream/{q}")
        if st:
            rows.append(f"| {q} M=1 streaming {st['weight_bytes'] / 2**20:.0f} MB of weights: GB/s ÷ plain read loop | "
                        f"{st['fraction']:.0%} ({st['weights_gbs']:.1f} of {st['read_loop_gbs']:.1f} GB/s) | ≥ 70% |")
    rows.append("")
    rows.append(f"Measured by `bench/test_qgemm.py` (best round, same process, same inputs, lowbit through `Model.run`) "
                f"on {m['vendor']} with {m['cpus']} CPUs, ISA `{m['isa']}`; int4 symmetric g32 for lowbit and ORT "
                f"(MatMulNBits, accuracy_level=4).")
    return "\n".join(rows)


def _size(n: float | None) -> str:
    if not n:
        return "—"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


MODEL_NAMES = {"resnet18": "ResNet-18 224×224, batch 1", "minilm": "all-MiniLM-L6-v2, seq 128, batch 1"}


def models_table() -> str:
    paths = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "models_*.json")))
    if not paths:
        return "_no bench results yet: run `python -m pytest bench`_"
    rows = ["| model | precision | file: .qbin (ONNX) | accuracy vs ORT fp32 | lowbit 1t | ORT 1t | PyTorch 1t "
            "| lowbit 2t | ORT 2t | PyTorch 2t |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    machine = None
    for path in paths:
        precision = os.path.basename(path)[len("models_"):-len(".json")]
        with open(path) as f:
            data = json.load(f)
        r, machine = data["results"], data["machine"]
        names = sorted({k.split("/")[1] for k in r if k.count("/") == 2 and k.split("/")[0] in
                        ("lowbit", "onnxruntime", "pytorch")})
        for name in names:
            size = r.get(f"size/{name}") or {}
            errs = [v for k, v in r.items() if k.startswith(f"error/lowbit/{name}/")]
            cos = r.get(f"cosine/lowbit/{name}")
            acc = f"cosine {cos:.4f}" if cos is not None else (f"max rel. error {max(errs):.1e}" if errs else "—")
            file = f"{_size(size.get('qbin_bytes'))} ({_size(size.get('onnx_bytes'))})" if size else "—"
            cells = [_ms(r.get(f"{p}/{name}/{t}t")) for t in (1, 2) for p in ("lowbit", "onnxruntime", "pytorch")]
            rows.append(f"| {MODEL_NAMES.get(name, name)} | {precision} | {file} | {acc} | " + " | ".join(cells) + " |")
    rows.append("")
    rows.append("Measured by `bench/test_models_*.py` (best round of pytest-benchmark; every peer in the same process "
                f"on the same inputs) on {machine['vendor']} with {machine['cpus']} CPUs, ISA `{machine['isa']}`.")
    return "\n".join(rows)


def supported_ops_block() -> str:
    """The ONNX operators the importer handles, from the code (not from a list kept by hand)."""
    from lowbit.frontends.onnx import supported_ops

    ops = supported_ops()
    return (f"{len(ops)} ONNX operators (default domain), from `lowbit.frontends.onnx.supported_ops()` "
            f"(`lowbit ops` prints them):\n\n" + ", ".join(f"`{o}`" for o in ops))


def _replace(path: str, marker: str, body: str) -> None:
    with open(path) as f:
        text = f.read()
    pat = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"{path}: markers for {marker} not found")
    with open(path, "w") as f:
        f.write(pat.sub(lambda mm: mm.group(1) + body + "\n" + mm.group(2), text))


BLOCKS = {  # block -> (generator, files that carry it)
    "f32-gemm": (f32_gemm_table, ("README.md", "docs/kernels.md")),
    "qgemm": (qgemm_table, ("README.md", "docs/kernels.md")),
    "models": (models_table, ("README.md",)),
    "supported-ops": (supported_ops_block, ("README.md",)),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(BLOCKS), help="regenerate only this block")
    args = ap.parse_args(argv)
    for name in args.only or list(BLOCKS):
        fn, files = BLOCKS[name]
        body = fn()
        for rel in files:
            _replace(os.path.join(ROOT, *rel.split("/")), name, body)


if __name__ == "__main__":
    main()
