"""The ``lowbit`` command line (``lowbit`` or ``python -m lowbit``).

Exit codes: 0 ok, 1 failed (the message says what went wrong and what to try),
2 bad usage (unknown command or flag, a missing or malformed argument). Every
command takes ``--json`` (machine output on stdout; errors too, as
``{"ok": false, "error": ..., "hint": ...}``) and ``--quiet`` (no progress bar).
Progress bars (tqdm) appear only when stderr is a terminal. ``LOWBIT_DEBUG=1``
shows the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, NoReturn, Sequence

import numpy as np

from .errors import FormatError, UnsupportedOpError

DATA = os.path.join(os.path.dirname(__file__), "data")


class UsageError(Exception):
    """A bad argument found after parsing (exit code 2)."""


class Failure(Exception):
    """A failure with a hint for what to do next (exit code 1)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


# -- helpers --------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on stderr when it is a terminal and not ``--quiet``; otherwise nothing."""

    def __init__(self, args: argparse.Namespace, total: int, desc: str, unit: str = "it"):
        self.bar: Any = None
        if getattr(args, "quiet", False) or getattr(args, "json", False) or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:  # optional nicety
            return
        # a terminal that reports 0 columns and rows (a bare pty) would hide the bar
        size = shutil.get_terminal_size((80, 24))
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, ncols=min(size.columns, 100),
                        nrows=size.lines)
        self._n = 0

    def to(self, n: int) -> None:
        if self.bar is not None and n > self._n:
            self.bar.update(n - self._n)
            self._n = n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and not getattr(args, "json", False) and sys.stderr.isatty()


def _need_file(path: str, what: str, hint: str = "") -> str:
    if not os.path.exists(path):
        raise Failure(f"{what} {path!r} does not exist", hint or "check the path (relative paths start from the "
                      f"current directory, {os.getcwd()})")
    if os.path.isdir(path):
        raise Failure(f"{what} {path!r} is a directory, expected a file", "pass the file inside it")
    return path


def _out_dir_ok(path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise Failure(f"cannot write {path!r}: the folder {d!r} does not exist", f"create it first: mkdir -p {d}")
    return path


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set, np.ndarray)):
        return list(o)
    return str(o)


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def _text_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _threads(args: argparse.Namespace) -> None:
    n = getattr(args, "threads", None)
    if n is not None:
        if n < 1:
            raise UsageError(f"--threads must be >= 1, got {n}")
        import lowbit
        lowbit.set_num_threads(n)


def _feeds(args: argparse.Namespace, model: Any) -> dict[str, np.ndarray]:
    from . import analysis

    if getattr(args, "input", None):
        return analysis.load_feeds(_need_file(args.input, "input file"), model)
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    try:
        dims = analysis.parse_dims(args.dim or [])
    except ValueError as e:
        raise UsageError(str(e)) from None
    return analysis.example_inputs(model.inputs, batch=args.batch, dims=dims)


def _load_model(path: str) -> Any:
    import lowbit

    _need_file(path, "model file", "convert a model first: lowbit convert model.onnx -o model.qbin")
    return lowbit.load(path)


# -- commands -------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    import lowbit
    from . import analysis

    src = os.path.join(DATA, "digits_mlp.onnx")
    data = np.load(os.path.join(DATA, "digits_test.npz"))
    x, labels = data["pixels"], data["labels"]
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "digits_mlp.qbin")
        report = lowbit.convert(src, dst, quant=args.quant)
        model = lowbit.load(dst)
        logits = model.run(x)
        assert isinstance(logits, np.ndarray)
        acc = float((logits.argmax(1) == labels).mean())
        bar = _Progress(args, 2, "timing", unit="step")
        batch_t = float(np.median(analysis.time_calls(lambda: model.run(x), min_seconds=0.3, min_iters=20)))
        bar.to(1)
        one = x[:1]
        single_t = float(np.median(analysis.time_calls(lambda: model.run(one), min_seconds=0.3, min_iters=20)))
        bar.to(2)
        bar.close()
        info = lowbit.cpu_info()
        result: dict[str, Any] = {
            "model": "digits_mlp.onnx (MLP 64-256-128-10 trained on scikit-learn digits)",
            "converted_to": os.path.basename(dst),
            "quant": args.quant,
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
        except ImportError:
            ort = None
        if ort is not None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = info["num_threads"]
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
            ref = sess.run(None, {"pixels": x})[0]
            result["max_abs_diff_vs_onnxruntime"] = float(np.abs(ref - logits).max())
            ort_t = float(np.median(analysis.time_calls(lambda: sess.run(None, {"pixels": x}), min_seconds=0.3,
                                                        min_iters=20)))
            result["onnxruntime_latency_batch_ms"] = ort_t * 1e3
    if args.json:
        _print_json(result)
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


def _load_calib(path: str, batch: int = 32) -> list[Any]:
    """Calibration inputs as ``convert(calib=)`` takes them: an iterable of batches
    (arrays for a single-input model, dicts name -> array otherwise), here the
    file's samples in batches of ``batch`` along the first axis."""
    data = np.load(_need_file(path, "calibration file"), allow_pickle=False)
    if isinstance(data, np.ndarray):
        arrays = {"": data}
    else:
        with data:
            arrays = {k: data[k] for k in data.files}
    if not arrays:
        raise Failure(f"calibration file {path!r} holds no arrays", "save inputs with np.savez(path, x=inputs)")
    n = {a.shape[0] if a.ndim else 1 for a in arrays.values()}
    if len(n) != 1:
        raise Failure(f"calibration file {path!r}: the arrays disagree on the number of samples {sorted(n)}",
                      "save one array per model input, with the samples along the first axis")
    total = n.pop()
    batches: list[Any] = []
    for i in range(0, total, batch):
        part = {k: a[i:i + batch] for k, a in arrays.items()}
        batches.append(next(iter(part.values())) if len(part) == 1 else part)
    return batches


def cmd_convert(args: argparse.Namespace) -> int:
    import lowbit

    src = _need_file(args.src, "source model")
    if not src.lower().endswith(".onnx"):
        raise Failure(f"{src!r} is not an .onnx file",
                      "export PyTorch models to ONNX first (torch.onnx.export), or call "
                      "lowbit.convert(module, 'model.qbin', example_inputs=(x,)) from Python")
    out = args.output or os.path.splitext(src)[0] + ".qbin"
    _out_dir_ok(out)
    kwargs: dict[str, Any] = {"quant": args.quant, "group_size": args.group_size}
    if args.symmetric:
        kwargs["symmetric"] = True
    if args.codebook:
        if args.quant != "nf4":
            raise UsageError("--codebook applies to --quant nf4 only")
        kwargs["codebook"] = args.codebook
    if args.outliers is not None:
        kwargs["outliers"] = args.outliers
    if args.reduce_range:
        if args.quant != "int8":
            raise UsageError("--reduce-range applies to --quant int8 only")
        kwargs["reduce_range"] = True
    if getattr(args, "attention", None):
        kwargs["attention"] = args.attention
    if args.recipe:
        with open(_need_file(args.recipe, "recipe file", "write one with: lowbit compress CONFIG.json"),
                  encoding="utf-8") as f:
            try:
                json.load(f)
            except json.JSONDecodeError as e:
                raise Failure(f"recipe {args.recipe!r} is not valid JSON: {e}",
                              "a recipe is the JSON written by lowbit compress (docs/compress.md)") from None
        # a recipe names torch layers and may need gradients and calibration (GPTQ): it applies to the module
        raise Failure(f"a recipe applies to a PyTorch module, not to an ONNX file ({src})",
                      "lowbit compress CONFIG.json applies it and writes the .qbin (output.qbin), or call "
                      "lowbit.convert(module, 'model.qbin', example_inputs=(x,), recipe='recipe.json') from Python")
    if args.calib:
        kwargs["calib"] = _load_calib(args.calib)
    if args.calib_method:
        if not args.calib:
            raise UsageError("--calib-method needs --calib DATA.npz")
        kwargs["calib_method"] = args.calib_method
    # sparse / low-rank encodings (issue 4): passed only when given, so the API's defaults apply
    if args.sparse is not None:
        kwargs["sparse"] = args.sparse
    if args.time_rows is not None:
        try:
            kwargs["batch"] = tuple(int(b) for b in args.time_rows.split(",") if b.strip())
        except ValueError:
            raise UsageError(f"--time-rows expects comma-separated row counts, e.g. 1,16; got {args.time_rows!r}") from None
        if not kwargs["batch"] or min(kwargs["batch"]) < 1:
            raise UsageError(f"--time-rows expects row counts >= 1, got {args.time_rows!r}")
    if not args.json and not args.quiet and sys.stderr.isatty():
        print(f"converting {src} ...", file=sys.stderr)
    report = lowbit.convert(src, out, **kwargs)
    if args.json:
        _print_json({"src": report.src, "dst": report.dst, "file_bytes": report.file_bytes,
                     "source_weight_bytes": report.source_weight_bytes,
                     "compression_ratio": report.compression_ratio, "seconds": report.seconds,
                     "passes": report.passes, "layers": report.layers, "notes": report.notes,
                     "choices": getattr(report, "choices", [])})
    else:
        print(report)
        print(f"\nnext: lowbit inspect {out}   |   lowbit bench {out} --compare-onnx {src}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    _threads(args)
    from . import analysis

    feeds = analysis.load_feeds(_need_file(args.input, "input file",
                                           "save the input with numpy: np.save('x.npy', x)"), model)
    if args.output:
        _out_dir_ok(args.output)
        if len(model.output_names) > 1 and not args.output.endswith(".npz"):
            raise UsageError(f"this model has {len(model.output_names)} outputs {model.output_names}: "
                             f"-o needs an .npz file name")
    t0 = time.perf_counter()
    y = model.run(feeds if len(feeds) > 1 else next(iter(feeds.values())))
    seconds = time.perf_counter() - t0
    ys = y if isinstance(y, dict) else {model.output_names[0]: y}
    if args.output:
        if args.output.endswith(".npz"):
            np.savez(args.output, **ys)
        else:
            with open(args.output, "wb") as f:  # exactly this name (np.save would append .npy)
                np.save(f, next(iter(ys.values())))
    if args.json:
        _print_json({"outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "min": float(v.min()) if v.size else None,
                                     "max": float(v.max()) if v.size else None} for k, v in ys.items()},
                     "saved_to": args.output, "seconds": seconds})
    else:
        for k, v in ys.items():
            print(f"{k}: shape {v.shape} {v.dtype}" + (f" -> {args.output}" if args.output else ""))
        if not args.output and not args.quiet:
            print("next: add -o y.npy to save the output", file=sys.stderr)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import lowbit
    from . import analysis

    _need_file(args.model, "model file", "convert a model first: lowbit convert model.onnx -o model.qbin")
    model = lowbit.load(args.model, verify=not args.no_verify)
    rows = analysis.layer_table(model)
    tot = analysis.totals(rows, model.file_size)
    if args.json:
        _print_json({"model": args.model, "inputs": [vars(v) for v in model.inputs],
                     "outputs": [vars(v) for v in model.outputs], "producer": model.producer,
                     "file_bytes": model.file_size, "layers": rows, "totals": tot})
        return 0
    print(repr(model))
    table = []
    for r in rows:
        op = r["op"] + (f"+{r['activation']}" if r.get("activation") else "")
        shapes = ",".join("x".join(map(str, s)) for s in r["shapes"]) or "-"
        table.append([r["name"], op, shapes, r["encoding"] or "-", str(r["bytes"]),
                      str(r["fp32_bytes"]) if r["bytes"] else "-",
                      "-" if r["sparsity"] is None else f"{r['sparsity']:.1%}",
                      "-" if r["rank"] is None else str(r["rank"]), r["kernel"]])
    print(_text_table(["name", "op", "shapes", "encoding", "bytes", "fp32 bytes", "sparsity", "rank", "kernel"],
                      table, right={4, 5, 6, 7}))
    ratio = f"{tot['weight_compression']:.2f}x" if tot["weight_compression"] else "-"
    print(f"total: {tot['layers']} layers, weights {_fmt_bytes(tot['weight_bytes'])} stored "
          f"({_fmt_bytes(tot['fp32_weight_bytes'])} as fp32: {ratio} compression), file {_fmt_bytes(model.file_size)}")
    return 0


def _ort_session(path: str, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise Failure("--compare-onnx needs onnxruntime", "pip install onnxruntime") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def cmd_bench(args: argparse.Namespace) -> int:
    import lowbit
    from . import analysis

    if args.seconds <= 0:
        raise UsageError(f"--seconds must be > 0, got {args.seconds}")
    model = _load_model(args.model)
    _threads(args)
    if args.compare_onnx:
        _need_file(args.compare_onnx, "ONNX model")
    feeds = _feeds(args, model)
    first = next(iter(feeds.values()))
    samples = int(first.shape[0]) if first.ndim else 1
    threads = lowbit.get_num_threads()
    runners: list[tuple[str, Callable[[], Any]]] = [("lowbit", lambda: model.run(feeds))]
    agree = None
    if args.compare_onnx:
        sess = _ort_session(args.compare_onnx, threads)
        names = [i.name for i in sess.get_inputs()]
        if sorted(names) != sorted(feeds):
            raise Failure(f"{args.compare_onnx} takes inputs {names}, the .qbin takes {sorted(feeds)}",
                          "compare against the ONNX file the .qbin was converted from")
        ref = sess.run(None, feeds)[0]
        ours = model.run(feeds)
        ours0 = ours if isinstance(ours, np.ndarray) else next(iter(ours.values()))
        if ref.shape == ours0.shape:
            agree = float(np.abs(ref.astype(np.float64) - ours0).max()) if ref.size else 0.0
        runners.append(("onnxruntime", lambda: sess.run(None, feeds)))
    # interleaved rounds so that a change in machine load hits both alike
    rounds = 3
    times: dict[str, list[np.ndarray]] = {n: [] for n, _ in runners}
    bar = _Progress(args, rounds * len(runners), "bench", unit="round")
    for r in range(rounds):
        for i, (name, fn) in enumerate(runners):
            times[name].append(analysis.time_calls(fn, min_seconds=args.seconds / rounds, min_iters=5,
                                                   warmup=args.warmup if r == 0 else 1))
            bar.to(r * len(runners) + i + 1)
    bar.close()
    stats = {n: analysis.latency_stats(np.concatenate(t), samples) for n, t in times.items()}
    result: dict[str, Any] = {"model": args.model, "threads": threads, "isa": lowbit.cpu_info()["isa"],
                              "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
                              "samples_per_call": samples, "results": stats}
    if "onnxruntime" in stats:
        result["speedup_vs_onnxruntime_p50"] = stats["onnxruntime"]["p50_ms"] / stats["lowbit"]["p50_ms"]
        result["max_abs_diff_vs_onnxruntime"] = agree
    if args.json:
        _print_json(result)
        return 0
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
    print(f"{args.model}: {shapes}; {threads} thread(s), ISA {result['isa']}")
    rows = [[n, f"{s['p50_ms']:.4f}", f"{s['p90_ms']:.4f}", f"{s['p99_ms']:.4f}", f"{s['mean_ms']:.4f}",
             f"{s['throughput_per_s']:,.1f}", str(s["iterations"])] for n, s in stats.items()]
    print(_text_table(["engine", "p50 ms", "p90 ms", "p99 ms", "mean ms", "samples/s", "runs"], rows,
                      right={1, 2, 3, 4, 5, 6}))
    if "onnxruntime" in stats:
        print(f"lowbit is {result['speedup_vs_onnxruntime_p50']:.2f}x the speed of onnxruntime (p50)"
              + (f"; max |difference| of the first output {agree:.3g}" if agree is not None else ""))
    elif not args.quiet:
        print("next: add --compare-onnx ORIGINAL.onnx to time onnxruntime on the same inputs", file=sys.stderr)
    return 0


def _config(args: argparse.Namespace) -> dict[str, Any]:
    from . import pipeline

    _need_file(args.config, "config file", "see `lowbit compress --help` for the schema")
    return pipeline.load_config(args.config)


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from . import pipeline

    cfg = _config(args)
    out = args.output or pipeline.output_paths(cfg)["sensitivity"]
    if out:
        _out_dir_ok(out)
    log = (lambda s: None) if (args.quiet or args.json) else (lambda s: print(s, file=sys.stderr))
    table = pipeline.run_sensitivity(cfg, _progress_enabled(args), log=log)
    if out:
        pipeline.dump_json(out, table)
    if args.json:
        _print_json({"output": out, "table": table})
        return 0
    opts = list(dict.fromkeys(o for l in table["layers"].values() for o in l["options"]))
    rows = [[n] + [f"{l['options'][o]['delta']:.4g}" if o in l["options"] else "-" for o in opts]
            for n, l in table["layers"].items()]
    print(f"metric {table['metric']} (baseline {table['baseline']:.5g}); increase when only that layer gets the option:")
    print(_text_table(["layer"] + opts, rows, right=set(range(1, len(opts) + 1))))
    if out:
        print(f"wrote {out}\nnext: add a budget to the config and run lowbit compress {args.config}")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from . import pipeline

    cfg = _config(args)
    if args.budget_bits is not None:
        cfg["budget"] = {"bits_per_weight": args.budget_bits}
    if args.no_convert:
        cfg.setdefault("output", {})["qbin"] = None
    for p in pipeline.output_paths(cfg).values():
        if p:
            _out_dir_ok(p)
    log = (lambda s: None) if (args.quiet or args.json) else (lambda s: print(s, file=sys.stderr))
    summary: dict[str, Any] = {}
    pipeline.run_compress(cfg, _progress_enabled(args), log=log, summary=summary)
    if args.json:
        _print_json(summary)
        return 0
    for k, v in summary["outputs"].items():
        print(f"wrote {k}: {v}")
    r = summary["recipe"]["summary"]
    print(f"recipe: {r.get('bits_per_weight', 0):.3f} bits per weight, sum of metric increases "
          f"{r.get('sum_delta', 0):.4g}")
    if "accuracy_compressed" in summary:
        print(f"accuracy: {summary['accuracy_fp32']:.2f}% fp32 -> {summary['accuracy_compressed']:.2f}% compressed")
    qbin = summary["outputs"].get("qbin")
    if qbin:
        print(f"next: lowbit report {qbin} --recipe {summary['outputs'].get('recipe', 'recipe.json')} -o report.html")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from . import report

    model = _load_model(args.model)
    _threads(args)
    sens, rec = args.sensitivity, args.recipe
    if args.config:
        from . import pipeline
        outs = pipeline.output_paths(_config(args))
        sens = sens or (outs["sensitivity"] if outs["sensitivity"] and os.path.exists(outs["sensitivity"]) else None)
        rec = rec or (outs["recipe"] if outs["recipe"] and os.path.exists(outs["recipe"]) else None)
    for p, what in ((sens, "sensitivity table"), (rec, "recipe")):
        if p:
            _need_file(p, what)
    out = args.output or os.path.splitext(args.model)[0] + ".report.html"
    _out_dir_ok(out)
    if args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1, got {args.repeat}")
    feeds = None if args.no_latency else _feeds(args, model)
    bar = _Progress(args, len(model.graph.nodes), "latency per layer", unit="layer")
    data = report.collect(args.model, feeds=feeds, sensitivity=sens, recipe=rec, latency=not args.no_latency,
                          repeat=args.repeat, on_layer=lambda i, n: bar.to(i))
    bar.close()
    written = report.write(data, out, with_plots=not args.no_plots, png_dir=args.png_dir)
    if args.json:
        _print_json({"written": written, "report": data})
    else:
        print("wrote " + ", ".join(written))
        print(f"next: open {out} in a browser")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from . import _core
    from .frontends.onnx import supported_ops

    onnx_ops = supported_ops()
    if args.json:
        _print_json({"onnx": onnx_ops, "engine": list(_core.known_ops())})
    else:
        print(f"ONNX operators lowbit imports ({len(onnx_ops)}):")
        print("  " + ", ".join(onnx_ops))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import lowbit

    info = lowbit.cpu_info()
    info["version"] = lowbit.__version__
    print(json.dumps(info, indent=None if args.json else 2))
    return 0


# -- the parser -----------------------------------------------------------------------------

CONFIG_HELP = """config file (JSON; every path relative to it):
  {"format": "lowbit.compress-config/1", "seed": 0,
   "model": {"factory": "my_models:build", "kwargs": {}, "state_dict": "w.pt", "python_path": ["."]},
   "data": {"file": "data.npz", "inputs": "x", "targets": "y", "calib": null,
            "eval_inputs": null, "eval_targets": null},
   "sensitivity": {"options": ["int8", "int4_g32", "sparse0.5"], "metric": "loss",
                   "batch_size": 256, "max_batches": null, "layers": null, "skip": [], "from": null},
   "budget": {"bits_per_weight": 4.0},        (or size_bits, or latency in seconds)
   "solve_options": null,
   "output": {"sensitivity": "sensitivity.json", "recipe": "recipe.json",
              "state_dict": null, "qbin": "compressed.qbin"}}
model.factory is module:callable returning a torch.nn.Module; data.file an .npz.
docs/cli.md describes every key."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a hint to --help on every usage error (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\nrun '{self.prog} --help' for the options and an example\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lowbit", description="Compress models into .qbin files and run them on the CPU.",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="examples:\n  lowbit demo\n  lowbit convert model.onnx -o model.qbin --quant int8\n"
                       "  lowbit bench model.qbin --compare-onnx model.onnx\n\n"
                       "exit codes: 0 ok, 1 failed, 2 bad usage. Environment: LOWBIT_ISA=scalar|avx2|avx512vnni|amx, "
                       "LOWBIT_NUM_THREADS=N.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help: str, examples: str, extra: str = "") -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=(extra + "\n\n" if extra else "") + "example:\n  " + examples.replace("\n", "\n  "))
        sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar or hints")
        return sp

    def input_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--input", metavar="X.npy|X.npz", help="inputs (default: random ones of the declared shapes)")
        sp.add_argument("--batch", type=int, default=1, help="batch size of random inputs (default 1)")
        sp.add_argument("--dim", action="append", metavar="NAME=N",
                        help="size of a named symbolic dimension of random inputs, e.g. sequence=128 (repeatable)")
        sp.add_argument("--threads", type=int, help="lowbit threads (default: LOWBIT_NUM_THREADS or the CPU count)")

    sp = add("demo", "convert the bundled digits MLP, run it, print accuracy and speed",
             "lowbit demo\nLOWBIT_ISA=scalar lowbit demo --quant int8")
    sp.add_argument("--quant", choices=["int8", "int4", "nf4"], help="quantize the demo's weights")
    sp.set_defaults(fn=cmd_demo)

    sp = add("convert", "convert an ONNX model to a .qbin file",
             "lowbit convert model.onnx -o model.qbin\nlowbit convert model.onnx -o model-int4.qbin --quant int4 "
             "--group-size 64\nlowbit convert model.onnx -o model.qbin --recipe recipe.json --calib calib.npz")
    sp.add_argument("src", help="the .onnx model")
    sp.add_argument("-o", "--output", metavar="OUT.qbin", help="output file (default: SRC with .qbin)")
    sp.add_argument("--quant", choices=["int8", "int4", "nf4"], help="weight quantization (default: keep fp32)")
    sp.add_argument("--group-size", type=int, default=32, choices=[32, 64, 128], help="int4/nf4 group size along K")
    sp.add_argument("--symmetric", action="store_true", help="int4: symmetric (no zero points)")
    sp.add_argument("--codebook", choices=["nf4", "kmeans"], help="nf4: the NF4 levels or k-means levels per layer")
    sp.add_argument("--outliers", type=int, choices=range(0, 9), metavar="0..8",
                    help="quantized layers: the largest activations per row kept in float32 (default 1; 0 = none)")
    sp.add_argument("--reduce-range", action="store_true",
                    help="int8: 7-bit weight codes, faster on AVX2 CPUs without AVX-512 VNNI (docs/kernels.md)")
    sp.add_argument("--attention", choices=["f32", "bf16"],
                    help="precision of the fused attention's products (default: bf16 with --quant, else f32; "
                         "bf16 runs on AMX CPUs, fp32 elsewhere)")
    sp.add_argument("--recipe", metavar="R.json", help="per-layer recipe (lowbit compress writes one)")
    sp.add_argument("--calib", metavar="DATA.npz",
                    help="calibration inputs for static int8 activations (samples along the first axis; one array "
                         "per model input, named like it)")
    sp.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"],
                    help="how activation ranges come from the calibration histograms")
    sp.add_argument("--sparse", choices=["auto", "off", "csr", "bsr"],
                    help="sparse/low-rank encodings: auto = the faster of sparse and dense, timed per layer")
    sp.add_argument("--time-rows", metavar="1,16", help="row counts the per-layer encoding choice is timed at")
    sp.set_defaults(fn=cmd_convert)

    sp = add("run", "run a .qbin model on a .npy (one input) or .npz (named inputs)",
             "lowbit run model.qbin --input x.npy -o y.npy")
    sp.add_argument("model", help="the .qbin model")
    sp.add_argument("--input", required=True, metavar="X.npy|X.npz", help="the input(s)")
    sp.add_argument("-o", "--output", metavar="Y.npy|Y.npz", help="save the output(s) here")
    sp.add_argument("--threads", type=int, help="lowbit threads")
    sp.set_defaults(fn=cmd_run)

    sp = add("inspect", "per-layer table of a .qbin: op, shapes, encoding, bytes, sparsity, rank, kernel",
             "lowbit inspect model.qbin\nlowbit inspect model.qbin --json | jq '.totals'")
    sp.add_argument("model", help="the .qbin model")
    sp.add_argument("--no-verify", action="store_true", help="skip the data checksum")
    sp.set_defaults(fn=cmd_inspect)

    sp = add("bench", "latency percentiles (p50/p90/p99) and throughput, optionally next to onnxruntime",
             "lowbit bench model.qbin --threads 1 --compare-onnx model.onnx\n"
             "lowbit bench bert.qbin --batch 1 --dim sequence=128 --json")
    sp.add_argument("model", help="the .qbin model")
    input_args(sp)
    sp.add_argument("--compare-onnx", metavar="ORIG.onnx", help="also time onnxruntime on this model, same inputs")
    sp.add_argument("--seconds", type=float, default=2.0, help="timing budget per engine (default 2)")
    sp.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    sp.set_defaults(fn=cmd_bench)

    sp = add("sensitivity", "measure each layer's sensitivity to each compression option (needs torch)",
             "lowbit sensitivity config.json -o sensitivity.json", CONFIG_HELP)
    sp.add_argument("config", help="the config file (schema below)")
    sp.add_argument("-o", "--output", metavar="S.json", help="write the table here (default: output.sensitivity)")
    sp.set_defaults(fn=cmd_sensitivity)

    sp = add("compress", "sensitivity -> budget -> recipe -> compressed model, from a config file (needs torch)",
             "lowbit compress config.json\nlowbit compress config.json --bits 4.0 --no-convert", CONFIG_HELP)
    sp.add_argument("config", help="the config file (schema below)")
    sp.add_argument("--bits", dest="budget_bits", type=float, metavar="B",
                    help="budget: average bits per weight (overrides the config's budget)")
    sp.add_argument("--no-convert", action="store_true", help="stop after the recipe and the compressed torch model")
    sp.set_defaults(fn=cmd_compress)

    sp = add("report", "an HTML page: per-layer sizes, latency, recipe and sensitivity curves",
             "lowbit report model.qbin -o report.html\n"
             "lowbit report model.qbin --recipe recipe.json --sensitivity sensitivity.json -o report.html")
    sp.add_argument("model", help="the .qbin model")
    sp.add_argument("-o", "--output", metavar="OUT.html", help="default: MODEL.report.html")
    sp.add_argument("--sensitivity", metavar="S.json", help="sensitivity table (lowbit sensitivity)")
    sp.add_argument("--recipe", metavar="R.json", help="recipe (lowbit compress)")
    sp.add_argument("--config", help="take the sensitivity table and recipe from this config's outputs")
    input_args(sp)
    sp.add_argument("--repeat", type=int, default=20, help="timed runs per layer (default 20)")
    sp.add_argument("--no-latency", action="store_true", help="do not time the layers")
    sp.add_argument("--no-plots", action="store_true", help="tables only")
    sp.add_argument("--png-dir", metavar="DIR", help="write the PNGs here instead of embedding them")
    sp.set_defaults(fn=cmd_report)

    add("ops", "list the ONNX operators lowbit imports", "lowbit ops").set_defaults(fn=cmd_ops)
    add("info", "print the CPU features and the kernels lowbit selected", "lowbit info").set_defaults(fn=cmd_info)
    return p


def _version() -> str:
    try:
        from importlib.metadata import version
        return f"lowbit {version('lowbit')}"
    except Exception:  # noqa: BLE001 - metadata is missing in an uninstalled tree
        return "lowbit"


def _hint(e: BaseException) -> str:
    if isinstance(e, Failure):
        return e.hint
    if isinstance(e, FormatError):
        return "the file is not a valid .qbin (or is damaged); convert the model again with lowbit convert"
    if isinstance(e, UnsupportedOpError):
        return "lowbit ops lists the supported operators; replace the others before exporting, or file an issue"
    if isinstance(e, NotImplementedError):
        return "this option is not available in this version of lowbit"
    if isinstance(e, ImportError):
        return "install the missing package (see the message) and retry"
    if isinstance(e, MemoryError):
        return "use smaller inputs (--batch) or raise LOWBIT_MAX_MEMORY"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except UsageError as e:
        sub = f"{parser.prog} {args.command}"
        print(f"{sub}: error: {e}\nrun '{sub} --help' for the options and an example", file=sys.stderr)
        if args.json:
            _print_json({"ok": False, "error": str(e), "exit_code": 2})
        return 2
    except KeyboardInterrupt:
        print(f"lowbit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes exit code 1 with a message
        if os.environ.get("LOWBIT_DEBUG"):
            raise
        known = isinstance(e, (Failure, FormatError, UnsupportedOpError, NotImplementedError, ImportError, OSError,
                               ValueError, TypeError, MemoryError))
        msg = str(e) if known else f"unexpected {type(e).__name__}: {e} (rerun with LOWBIT_DEBUG=1 for a traceback)"
        hint = _hint(e)
        print(f"lowbit {args.command}: error: {msg}", file=sys.stderr)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        if args.json:
            _print_json({"ok": False, "error": msg, "hint": hint, "exit_code": 1})
        return 1


if __name__ == "__main__":
    sys.exit(main())
