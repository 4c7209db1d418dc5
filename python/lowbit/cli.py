"""The ``lowbit`` command line. Exit codes: 0 ok, 1 failed, 2 bad usage."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from .errors import FormatError, UnsupportedOpError

DATA = os.path.join(os.path.dirname(__file__), "data")


def _time_run(fn: Any, min_seconds: float = 0.3, min_iters: int = 20) -> tuple[float, int]:
    fn()  # warm-up (plans the arena for this shape)
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < min_iters or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def cmd_demo(args: argparse.Namespace) -> int:
    import lowbit

    src = os.path.join(DATA, "digits_mlp.onnx")
    data = np.load(os.path.join(DATA, "digits_test.npz"))
    x, labels = data["pixels"], data["labels"]
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "digits_mlp.qbin")
        report = lowbit.convert(src, dst)
        model = lowbit.load(dst)
        logits = model.run(x)
        acc = float((logits.argmax(1) == labels).mean())
        batch_t, _ = _time_run(lambda: model.run(x))
        one = x[:1]
        single_t, _ = _time_run(lambda: model.run(one))
        info = lowbit.cpu_info()
        result = {
            "model": "digits_mlp.onnx (MLP 64-256-128-10 trained on scikit-learn digits)",
            "converted_to": os.path.basename(dst),
            "file_bytes": report.file_bytes,
            "layers": [{k: l[k] for k in ("name", "op", "weight_shape", "encoding", "kernel", "activation")}
                       for l in report.layers],
            "test_samples": int(len(x)),
            "accuracy": acc,
            "latency_batch_ms": batch_t * 1e3,
            "latency_single_us": single_t * 1e6,
            "throughput_samples_per_s": len(x) / batch_t,
            "isa": info["isa"],
            "threads": info["num_threads"],
        }
        ort_t = None
        try:
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = info["num_threads"]
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
            ref = sess.run(None, {"pixels": x})[0]
            result["max_abs_diff_vs_onnxruntime"] = float(np.abs(ref - logits).max())
            ort_t, _ = _time_run(lambda: sess.run(None, {"pixels": x}))
            result["onnxruntime_latency_batch_ms"] = ort_t * 1e3
        except ImportError:
            pass
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"lowbit {lowbit.__version__} demo — CPU: {info['vendor']}, ISA {info['isa']}, {info['num_threads']} threads")
    print()
    print(report)
    print()
    print(f"accuracy on {len(x)} held-out digits: {acc * 100:.2f}%")
    print(f"latency: {batch_t * 1e3:.3f} ms for a batch of {len(x)} "
          f"({len(x) / batch_t:,.0f} samples/s), {single_t * 1e6:.1f} us for one sample")
    if ort_t is not None:
        print(f"onnxruntime on the same batch: {ort_t * 1e3:.3f} ms "
              f"(max |difference| of logits {result['max_abs_diff_vs_onnxruntime']:.2e})")
    print("\nnext: lowbit convert your_model.onnx -o your_model.qbin")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import lowbit

    out = args.output or os.path.splitext(args.src)[0] + ".qbin"
    batch = tuple(int(b) for b in args.batch.split(",") if b)
    report = lowbit.convert(args.src, out, quant=args.quant, group_size=args.group_size, sparse=args.sparse,
                            batch=batch)
    if args.json:
        print(json.dumps({"src": report.src, "dst": report.dst, "file_bytes": report.file_bytes,
                          "passes": report.passes, "layers": report.layers, "choices": report.choices},
                         indent=2, default=str))
    else:
        print(report)
        print(f"\nnext: lowbit inspect {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import lowbit

    model = lowbit.load(args.model)
    x = np.load(args.input, allow_pickle=False)
    if isinstance(x, np.lib.npyio.NpzFile):
        feeds: Any = {k: x[k] for k in x.files}
    else:
        feeds = x
    y = model.run(feeds)
    if args.output:
        if isinstance(y, dict):
            np.savez(args.output, **y)
        else:
            np.save(args.output, y)
    ys = y if isinstance(y, dict) else {model.output_names[0]: y}
    if args.json:
        print(json.dumps({k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in ys.items()}))
    else:
        for k, v in ys.items():
            print(f"{k}: shape {v.shape} {v.dtype}" + (f" -> {args.output}" if args.output else ""))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import lowbit

    model = lowbit.load(args.model, verify=not args.no_verify)
    layers = model.layers()
    total = sum(l["bytes"] for l in layers)
    if args.json:
        print(json.dumps({"inputs": [vars(v) for v in model.inputs], "outputs": [vars(v) for v in model.outputs],
                          "producer": model.producer, "file_bytes": model.file_size, "layers": layers},
                         default=str, indent=2))
        return 0
    print(repr(model))
    w = max([len(l["name"]) for l in layers] + [4])
    print(f"{'name':<{w}}  {'op':<18} {'weights':<16} {'encoding':<9} {'bytes':>10}  kernel")
    for l in layers:
        shapes = ",".join("x".join(map(str, s)) for s in l["shapes"]) or "-"
        op = l["op"] + (f"+{l['activation']}" if l.get("activation") else "")
        print(f"{l['name']:<{w}}  {op:<18} {shapes:<16} {l['encoding'] or '-':<9} {l['bytes']:>10}  {l['kernel']}")
    print(f"total weights {total} bytes in a {model.file_size}-byte file")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import lowbit

    info = lowbit.cpu_info()
    print(json.dumps(info, indent=None if args.json else 2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit", description="Compress models into .qbin files and run them on the CPU.",
                                epilog="example: lowbit demo")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, example: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, epilog=f"example: {example}")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    add("demo", "convert the bundled digits MLP, run it, print accuracy and speed", "lowbit demo").set_defaults(
        fn=cmd_demo)
    sp = add("convert", "convert an ONNX model to .qbin", "lowbit convert model.onnx -o model.qbin")
    sp.add_argument("src")
    sp.add_argument("-o", "--output")
    sp.add_argument("--quant", choices=["int8", "int4", "nf4"])
    sp.add_argument("--group-size", type=int, default=32, choices=[32, 64, 128])
    sp.add_argument("--sparse", default="auto", choices=["auto", "off", "csr", "bsr"],
                    help="sparse/low-rank layers: auto = timed choice per layer (default)")
    sp.add_argument("--batch", default="1,16", help="row counts the auto choice is timed at (comma-separated)")
    sp.set_defaults(fn=cmd_convert)
    sp = add("run", "run a .qbin model on a .npy (one input) or .npz (named inputs)",
             "lowbit run model.qbin --input x.npy -o y.npy")
    sp.add_argument("model")
    sp.add_argument("--input", required=True)
    sp.add_argument("-o", "--output")
    sp.set_defaults(fn=cmd_run)
    sp = add("inspect", "print a .qbin model's layers, encodings and kernels", "lowbit inspect model.qbin")
    sp.add_argument("model")
    sp.add_argument("--no-verify", action="store_true", help="skip the data checksum")
    sp.set_defaults(fn=cmd_inspect)
    add("info", "print the CPU features and the kernels lowbit selected", "lowbit info").set_defaults(fn=cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (FormatError, UnsupportedOpError, FileNotFoundError, ValueError, NotImplementedError, ImportError) as e:
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
