"""Per-layer sensitivity: how much the loss (or output error) grows when one
layer alone gets one compression option, and what that option costs in bits
(and, through a pluggable ``latency_fn``, in time)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from ._common import batches, compressible_layers, logits_of, loss_for, progress, run_model, weight_matrix
from .annotate import weight_bits
from .lowrank import max_useful_rank
from .quantize import QuantSpec, quantize_matrix

DEFAULT_OPTIONS = ("int8", "int4_g32", "int2_g32", "sparse0.5", "sparse0.75", "sparse0.9", "rank0.5", "rank0.25")


def parse_option(option: str) -> dict[str, Any]:
    """``"int4_g32+sparse0.75"`` -> ``{"quant": {...}, "sparsity": 0.75, "rank": None}``.
    Parts: a quantization spec name (QuantSpec.parse), ``sparseF`` (unstructured
    magnitude sparsity F), ``blockF`` (1x4 block sparsity F), ``rankF`` (rank =
    F * min(N, K)); ``fp32`` is no compression."""
    out: dict[str, Any] = {"quant": None, "sparsity": None, "pattern": "unstructured", "rank": None}
    if option in ("fp32", "", None):
        return out
    for part in option.split("+"):
        if part.startswith("sparse"):
            out["sparsity"] = float(part[6:])
        elif part.startswith("block"):
            out["sparsity"], out["pattern"] = float(part[5:]), "block1x4"
        elif part.startswith("rank"):
            out["rank"] = float(part[4:])
        else:
            out["quant"] = QuantSpec.parse(part).to_dict()
    return out


def _magnitude_mask(wm: torch.Tensor, sparsity: float, pattern: str) -> torch.Tensor:
    from .prune import _block_scores, _expand_blocks, _keep_top
    sc = wm.abs()
    if pattern == "block1x4":
        return _expand_blocks(_keep_top([_block_scores(sc)], sparsity)[0], wm.shape[1])
    return _keep_top([sc], sparsity)[0]


@torch.no_grad()
def apply_option(wm: torch.Tensor, option: str, accounting: str = "toolkit", op: str = "Dense",
                 groups: int = 1) -> tuple[torch.Tensor, int]:
    """The weight matrix [N, K] after ``option`` (as the torch model would compute with it),
    and the option's size in bits (``accounting``, ``op``, ``groups``: see ``weight_bits``)."""
    o = parse_option(option)
    acc = dict(accounting=accounting, op=op, groups=groups)
    n, k = wm.shape
    w = wm.float()
    if o["rank"] is not None:
        r = max(1, int(round(o["rank"] * min(n, k))))
        U, S, Vh = torch.linalg.svd(w.double(), full_matrices=False)
        w = ((U[:, :r] * S[:r]) @ Vh[:r]).float()
        # two factors [N, r] and [r, K], each quantized like the option says
        bits = weight_bits(n, r, o["quant"], **acc) + weight_bits(r, k, o["quant"], **acc)
        if o["quant"] is not None:
            a = quantize_matrix((U[:, :r] * S[:r].sqrt()).float(), QuantSpec.parse(o["quant"])).dequant
            b = quantize_matrix((S[:r].sqrt()[:, None] * Vh[:r]).float(), QuantSpec.parse(o["quant"])).dequant
            w = a @ b
        return w, bits
    mask = None
    if o["sparsity"] is not None:
        mask = _magnitude_mask(w, o["sparsity"], o["pattern"])
        w = w * mask
    if o["quant"] is not None:
        w = quantize_matrix(w, QuantSpec.parse(o["quant"])).dequant
        if mask is not None:
            w = w * mask
    return w, weight_bits(n, k, o["quant"], mask, o["pattern"], **acc)


def option_bits(module: nn.Module, option: str) -> int:
    return apply_option(weight_matrix(module), option)[1]


def _output(model: nn.Module, x: Any, output_fn: Callable | None) -> torch.Tensor:
    out = run_model(model, x)
    return logits_of(out) if output_fn is None else output_fn(out, x)


@torch.no_grad()
def _score(model: nn.Module, data: Any, metric: str, loss_fn, ref: list | None, batch_size: int,
           max_batches: int | None, output_fn: Callable | None = None) -> float:
    total, count = 0.0, 0
    for i, b in enumerate(batches(data, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        out = _output(model, b[0], output_fn)
        if metric == "loss":
            total += float(loss_fn(out, b[1])) * out.shape[0]
            count += out.shape[0]
        else:
            total += float((out.float() - ref[i]).pow(2).sum())
            count += ref[i].numel()
    return total / max(1, count)


@torch.no_grad()
def sensitivity(model: nn.Module, data: Any, options: Iterable[str] = DEFAULT_OPTIONS, *,
                metric: str = "loss", layers: Iterable[str] | None = None, skip: Iterable[str] = (),
                loss_fn: Callable | None = None, latency_fn: Callable[[str, nn.Module, str], float] | None = None,
                output_fn: Callable[[Any, Any], torch.Tensor] | None = None,
                batch_size: int = 256, max_batches: int | None = None, accounting: str = "toolkit",
                progress_bar: bool = True) -> dict[str, Any]:
    """Measures each option on each layer alone (every other layer stays fp32).

    ``metric``: ``loss`` (task loss on ``(X, Y)``; cross-entropy unless
    ``loss_fn``) or ``output_mse`` (mean squared error of the model output
    against the fp32 output; needs only inputs; ``output_fn(model_output,
    batch_input)`` picks / transforms what is compared, e.g. pooled sentence
    embeddings). ``latency_fn(layer_name,
    module, option)`` (optional) returns the layer's latency in seconds under
    the option - lowbit's own per-layer timing plugs in here. ``accounting``: how
    ``bits`` are counted, ``"toolkit"`` (values, fp32 scales, sparse indices) or
    ``"qbin"`` (the bytes of the converted file's encoding, see ``weight_bits``).

    Returns ``{"metric", "baseline", "options", "layers": {name: {"params",
    "fp32_bits", "options": {option: {"delta", "bits", "latency"}}}}}`` where
    ``delta`` is the metric increase over the fp32 model."""
    if metric not in ("loss", "output_mse"):
        raise ValueError(f"metric must be 'loss' or 'output_mse', got {metric!r}")
    options = list(options)
    for o in options:
        parse_option(o)  # fail early on a typo
    was = model.training
    model.eval()
    lf = loss_for(loss_fn)
    ref = None
    if metric == "output_mse":
        ref = [_output(model, b[0], output_fn).float()
               for i, b in zip(range(max_batches or 10 ** 9), batches(data, batch_size))]
    base = _score(model, data, metric, lf, ref, batch_size, max_batches, output_fn)
    targets = compressible_layers(model, layers, skip)
    table: dict[str, Any] = {}
    work = [(n, o) for n in targets for o in options]
    for name, opt in progress(work, progress_bar, "sensitivity"):
        m = targets[name]
        r = parse_option(opt)["rank"]
        if r is not None and max(1, int(round(r * min(weight_matrix(m).shape)))) > max_useful_rank(m):
            continue  # the two factors would not be smaller than the layer: not an option here
        orig = m.weight.data.clone()
        wm, bits = apply_option(orig.reshape(orig.shape[0], -1), opt, accounting,
                                "Dense" if isinstance(m, nn.Linear) else "Conv", getattr(m, "groups", 1))
        m.weight.data.copy_(wm.reshape(orig.shape))
        try:
            s = _score(model, data, metric, lf, ref, batch_size, max_batches, output_fn)
        finally:
            m.weight.data.copy_(orig)
        n_, k_ = weight_matrix(m).shape
        if name not in table:  # the "keep it fp32" choice, so the solver may leave a layer alone
            fp32 = apply_option(orig.reshape(orig.shape[0], -1), "fp32", accounting,
                                "Dense" if isinstance(m, nn.Linear) else "Conv", getattr(m, "groups", 1))[1]
            table[name] = {"params": n_ * k_, "fp32_bits": n_ * k_ * 32, "options": {"fp32": {
                "delta": 0.0, "bits": fp32,
                "latency": None if latency_fn is None else float(latency_fn(name, m, "fp32"))}}}
        entry = table[name]
        entry["options"][opt] = {"delta": s - base, "bits": int(bits),
                                 "latency": None if latency_fn is None else float(latency_fn(name, m, opt))}
    model.train(was)
    return {"metric": metric, "baseline": base, "options": options, "accounting": accounting, "layers": table}
