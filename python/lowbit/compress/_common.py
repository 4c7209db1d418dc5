"""Helpers shared by the compression passes: data batching, seeding, progress
bars, which layers are compressible and how their weights are viewed as a matrix."""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

# Layers whose weight every technique can act on. A weight is always viewed as a
# matrix [N, K]: N output channels, K = everything that is summed over (for a conv,
# Cin/groups * kh * kw in the (cin, kh, kw) order of weight.reshape(N, -1)).
COMPRESSIBLE = (nn.Linear, nn.Conv2d, nn.Conv1d)


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def progress(it: Iterable, enabled: bool, desc: str = "", total: int | None = None) -> Iterable:
    """Wraps ``it`` in a tqdm bar when ``enabled`` (and tqdm is installed)."""
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a progress bar is a nicety, never a requirement
        return it
    return tqdm(it, desc=desc, total=total, leave=False)


def batches(data: Any, batch_size: int = 128, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[tuple]:
    """Yields ``(x, y)`` (or ``(x,)``) batches from ``data``: a tuple of tensors
    ``(X, Y)`` / ``(X,)`` / a single tensor ``X`` (split into batches), or any
    iterable of batches (a ``DataLoader``), passed through unchanged."""
    if isinstance(data, torch.Tensor):
        data = (data,)
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        n = data[0].shape[0]
        for t in data:
            if t.shape[0] != n:
                raise ValueError(f"data tensors disagree on the number of samples: {[t.shape[0] for t in data]}")
        idx = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            j = idx[i:i + batch_size]
            yield tuple(t[j] for t in data)
        return
    if data is None:
        raise ValueError("this step needs data: pass (X, Y) tensors or an iterable of batches")
    for b in data:
        yield b if isinstance(b, (tuple, list)) else (b,)


def run_model(model: nn.Module, x: Any) -> torch.Tensor:
    """Calls ``model`` on ``x``: a tensor, a tuple of positional tensors or a dict of keyword tensors."""
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


def logits_of(out: Any) -> torch.Tensor:
    """The main output tensor of a model call (first element / ``logits`` / ``last_hidden_state``)."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        if hasattr(out, key):
            return getattr(out, key)
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"cannot find the output tensor in a {type(out).__name__}")


def compressible_layers(model: nn.Module, layers: Iterable[str] | None = None,
                        skip: Iterable[str] = ()) -> dict[str, nn.Module]:
    """``name -> module`` of the Linear / Conv layers of ``model`` (in module
    order), restricted to ``layers`` when given, minus ``skip``."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, COMPRESSIBLE)}
    if layers is not None:
        layers = list(layers)
        missing = [n for n in layers if n not in found]
        if missing:
            raise ValueError(f"no Linear/Conv layer named {missing}; the model has {list(found)}")
        found = {n: found[n] for n in layers}
    skip = set(skip)
    return {n: m for n, m in found.items() if n not in skip}


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight viewed as [N, K] (a view: writing it writes the weight)."""
    w = module.weight
    return w.data.reshape(w.shape[0], -1)


def loss_for(loss_fn: Callable | None) -> Callable:
    """The loss used for gradients and sensitivity: cross-entropy unless given."""
    if loss_fn is not None:
        return loss_fn
    return lambda out, y: nn.functional.cross_entropy(logits_of(out), y)


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent of a classifier on ``(X, Y)``."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in batches(data, batch_size):
        pred = logits_of(run_model(model, x)).argmax(-1)
        correct += int((pred == y).sum())
        total += int(y.numel())
    model.train(was)
    return 100.0 * correct / max(1, total)
