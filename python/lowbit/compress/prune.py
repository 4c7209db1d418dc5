"""Pruning: unstructured and 1x4-block masks (magnitude, gradient or Taylor
importance; per layer or global), a gradual cubic schedule interleaved with
fine-tuning, and structured channel pruning that physically removes channels.

A masked layer carries ``lowbit_mask`` (a float 0/1 buffer shaped like the
weight) and a ``lowbit_sparsity`` dict; a forward pre-hook re-zeroes the masked
weights before every forward so training cannot revive them.
"""

from __future__ import annotations

import copy
import operator
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ._common import batches, compressible_layers, loss_for, progress, run_model, weight_matrix

IMPORTANCE = ("magnitude", "gradient", "taylor")
PATTERNS = ("unstructured", "block1x4")
BLOCK = 4  # 1x4 blocks: 4 consecutive weights along K in one output row


# ---------------------------------------------------------------------------------------------
# importance

def importance(model: nn.Module, kind: str = "magnitude", data: Any = None, *,
               layers: Iterable[str] | None = None, loss_fn: Callable | None = None,
               batch_size: int = 128, max_batches: int | None = None,
               progress_bar: bool = True) -> dict[str, torch.Tensor]:
    """Per-weight importance of each Linear / Conv layer, shaped like its weight.

    ``magnitude``: |w|. ``gradient``: sum over calibration batches of |dL/dw|.
    ``taylor``: first-order Taylor estimate of the loss change when the weight is
    removed, sum over batches of |w * dL/dw|. The last two need ``data``."""
    if kind not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, got {kind!r}")
    targets = compressible_layers(model, layers)
    if kind == "magnitude":
        return {n: m.weight.detach().abs().clone() for n, m in targets.items()}
    if data is None:
        raise ValueError(f"{kind} importance needs calibration data")
    lf = loss_for(loss_fn)
    acc = {n: torch.zeros_like(m.weight) for n, m in targets.items()}
    was = model.training
    model.eval()
    for i, b in enumerate(progress(batches(data, batch_size), progress_bar, f"{kind} importance")):
        if max_batches is not None and i >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        loss = lf(run_model(model, b[0]), b[1])
        loss.backward()
        for n, m in targets.items():
            g = m.weight.grad.detach()
            acc[n] += (g * m.weight.detach()).abs() if kind == "taylor" else g.abs()
    model.zero_grad(set_to_none=True)
    model.train(was)
    return acc


# ---------------------------------------------------------------------------------------------
# masks

def _apply_mask_hook(module: nn.Module, args):
    mask = getattr(module, "lowbit_mask", None)
    if mask is not None:
        from .quantize import _weight_param
        with torch.no_grad():
            _weight_param(module).mul_(mask)


def apply_masks(model: nn.Module) -> None:
    """Re-zeroes the masked weights of every masked layer (``train`` calls this
    after each optimizer step; the forward pre-hook does it before each forward)."""
    for m in model.modules():
        if "lowbit_mask" in m._buffers:
            _apply_mask_hook(m, ())


def set_mask(module: nn.Module, mask: torch.Tensor, pattern: str = "unstructured") -> None:
    """Attaches a 0/1 ``mask`` to ``module`` (zeroing the masked weights now and
    before every forward)."""
    w = module.weight
    if mask.shape != w.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(w.shape)}")
    mask = mask.to(w.dtype)
    if "lowbit_mask" in module._buffers:
        module._buffers["lowbit_mask"] = mask
    else:
        module.register_buffer("lowbit_mask", mask)
        module.register_forward_pre_hook(_apply_mask_hook)
    _apply_mask_hook(module, ())
    module.lowbit_sparsity = {"pattern": pattern, "block": [1, BLOCK] if pattern == "block1x4" else [1, 1],
                              "sparsity": float(1.0 - mask.mean().item())}


def _block_scores(score: torch.Tensor) -> torch.Tensor:
    """[N, K] -> [N, ceil(K/4)] summed over each 1x4 block (the last block may be shorter)."""
    n, k = score.shape
    pad = (-k) % BLOCK
    if pad:
        score = torch.cat([score, score.new_zeros(n, pad)], dim=1)
    return score.reshape(n, -1, BLOCK).sum(-1)


def _expand_blocks(bmask: torch.Tensor, k: int) -> torch.Tensor:
    return bmask.repeat_interleave(BLOCK, dim=1)[:, :k]


def _keep_top(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """0/1 masks keeping the largest (1 - sparsity) fraction of the concatenated scores
    (ties broken by position, so the result is deterministic)."""
    flat = torch.cat([s.reshape(-1) for s in scores])
    n_prune = int(round(sparsity * flat.numel()))
    keep = torch.ones_like(flat)
    if n_prune > 0:
        idx = torch.sort(flat, stable=True).indices[:n_prune]
        keep[idx] = 0.0
    out, o = [], 0
    for s in scores:
        out.append(keep[o:o + s.numel()].reshape(s.shape))
        o += s.numel()
    return out


def prune(model: nn.Module, sparsity: float | dict[str, float], *, importance_kind: str = "magnitude",
          data: Any = None, scope: str = "layer", pattern: str = "unstructured",
          layers: Iterable[str] | None = None, skip: Iterable[str] = (), scores: dict | None = None,
          loss_fn: Callable | None = None, inplace: bool = False, progress_bar: bool = True) -> nn.Module:
    """Masks the least important weights of each Linear / Conv layer.

    ``sparsity``: the fraction of weights to zero (one float, or ``layer -> float``).
    ``scope``: ``layer`` (each layer reaches the sparsity) or ``global`` (one
    threshold over all selected layers; scores are normalised per layer by their
    mean so layers of different scale compete fairly). ``pattern``:
    ``unstructured`` or ``block1x4`` (whole blocks of 4 consecutive weights along
    K, the block-sparse kernel's unit). ``importance_kind``: ``magnitude``,
    ``gradient`` or ``taylor`` (the last two use ``data``). Existing masks are
    respected: a pruned weight stays pruned. Returns the model (a copy unless ``inplace``)."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    if not inplace:
        model = copy.deepcopy(model)
    targets = compressible_layers(model, layers, skip)
    if isinstance(sparsity, dict):
        targets = {n: m for n, m in targets.items() if n in sparsity}
        scope = "layer"
    for n, s in (sparsity.items() if isinstance(sparsity, dict) else [("all", sparsity)]):
        if not 0.0 <= float(s) < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {s} for {n}")
    if scores is None:
        scores = importance(model, importance_kind, data, layers=list(targets), loss_fn=loss_fn,
                            progress_bar=progress_bar)
    mats = {}
    for n, m in targets.items():
        sc = scores[n].detach().reshape(m.weight.shape[0], -1).float().clone()
        old = getattr(m, "lowbit_mask", None)
        if old is not None:  # already-pruned weights rank lowest
            sc = torch.where(old.reshape(sc.shape) > 0, sc, torch.full_like(sc, -1.0))
        if pattern == "block1x4":
            sc = _block_scores(sc)
        if scope == "global":
            pos = sc[sc >= 0]
            sc = torch.where(sc >= 0, sc / pos.mean().clamp(min=1e-12), sc) if pos.numel() else sc
        mats[n] = sc
    if scope == "global":
        masks = dict(zip(mats, _keep_top(list(mats.values()), float(sparsity))))
    else:
        masks = {n: _keep_top([sc], float(sparsity[n] if isinstance(sparsity, dict) else sparsity))[0]
                 for n, sc in mats.items()}
    for n, m in targets.items():
        mk = masks[n]
        if pattern == "block1x4":
            mk = _expand_blocks(mk, weight_matrix(m).shape[1])
        set_mask(m, mk.reshape(m.weight.shape), pattern)
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    """Drops masks (the zeros stay in the weights) - e.g. before handing a model to code
    that does not know about them."""
    for m in model.modules():
        if "lowbit_mask" in m._buffers:
            del m._buffers["lowbit_mask"]
            for k, h in list(m._forward_pre_hooks.items()):
                if h is _apply_mask_hook:
                    del m._forward_pre_hooks[k]
    return model


def sparsity_of(model: nn.Module) -> dict[str, float]:
    """Fraction of exactly-zero weights per Linear / Conv layer."""
    return {n: float((m.weight == 0).float().mean()) for n, m in compressible_layers(model).items()}


# ---------------------------------------------------------------------------------------------
# gradual pruning

def cubic_schedule(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """Sparsity at ``step``: ``initial`` before ``begin``, ``final`` after ``end``,
    in between final + (initial - final) * (1 - progress)^3 (prunes fast while
    many redundant weights remain, slowly near the end)."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    p = (step - begin) / max(1, end - begin)
    return final + (initial - final) * (1.0 - p) ** 3


def prune_gradual(model: nn.Module, data: Any, sparsity: float, *, epochs: int = 10, ramp: float = 0.6,
                  every: int = 10, lr: float = 1e-3, batch_size: int = 64, scope: str = "global",
                  pattern: str = "unstructured", importance_kind: str = "magnitude",
                  layers: Iterable[str] | None = None, skip: Iterable[str] = (), teacher: nn.Module | None = None,
                  T: float = 4.0, alpha: float = 0.7, seed: int = 0, inplace: bool = False,
                  progress_bar: bool = True) -> nn.Module:
    """Prunes to ``sparsity`` while fine-tuning on ``data``: every ``every`` steps
    the masks are recomputed at the cubic schedule's sparsity, which reaches its
    final value after ``ramp`` of the training; the remaining steps recover the
    accuracy. With a ``teacher`` the fine-tuning is distillation. ``importance_kind``
    ``gradient`` / ``taylor`` uses the current batch stream's gradients (one
    calibration pass on ``data``) at each update."""
    from .distill import train
    if not inplace:
        model = copy.deepcopy(model)
    n = data[0].shape[0] if isinstance(data, (tuple, list)) and isinstance(data[0], torch.Tensor) else None
    if n is None:
        raise ValueError("prune_gradual needs (X, Y) tensors (to know the number of steps)")
    total = epochs * (-(-n // batch_size))
    end = max(1, int(ramp * total))
    sel = list(compressible_layers(model, layers, skip))

    def on_step(step: int) -> None:
        if step % every and step != end:
            return
        if step > end:
            return
        s = cubic_schedule(step, sparsity, 0, end)
        sc = None
        if importance_kind != "magnitude":
            sc = importance(model, importance_kind, data, layers=sel, max_batches=2, progress_bar=False)
        prune(model, s, importance_kind="magnitude", scope=scope, pattern=pattern, layers=sel,
              scores=sc, inplace=True, progress_bar=False)

    train(model, data, epochs=epochs, lr=lr, batch_size=batch_size, teacher=teacher, T=T, alpha=alpha,
          seed=seed, on_step=on_step, progress_bar=progress_bar)
    return model


# ---------------------------------------------------------------------------------------------
# structured channel pruning

# Ops that pass channels through one to one (channel c in -> channel c out).
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.Hardswish,
                 nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool2d, nn.MaxPool1d, nn.AvgPool1d)
_PASS_FUNCS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.gelu, torch.sigmoid, torch.tanh,
               torch.nn.functional.silu, torch.nn.functional.dropout, torch.nn.functional.max_pool2d,
               torch.nn.functional.avg_pool2d, torch.nn.functional.adaptive_avg_pool2d}
_ADD_FUNCS = {operator.add, torch.add, operator.iadd}


class _UnionFind:
    def __init__(self):
        self.p: dict = {}

    def find(self, a):
        self.p.setdefault(a, a)
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.p[max(ra, rb)] = min(ra, rb)


def channel_groups(model: nn.Module, example_input: torch.Tensor) -> list[dict]:
    """Finds the sets of channels that must be pruned together.

    Traces ``model`` with torch.fx. Each group is a dict: ``producers`` (Conv /
    Linear layers whose output channels form the group - several when their
    outputs are added, e.g. a residual block and its skip path), ``norms``
    (BatchNorm layers on those channels), ``consumers`` (layers reading them as
    input channels, with ``spatial`` > 1 when a flatten sits in between),
    ``channels`` and ``prunable`` (False when the channels reach the model output,
    the input, or an op this analysis does not understand)."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    gm = fx.symbolic_trace(model)
    ShapeProp(gm).propagate(example_input)
    mods = dict(gm.named_modules())
    uf = _UnionFind()
    src: dict[fx.Node, Any] = {}  # node -> group id whose channels its output (dim 1) carries
    info: dict[Any, dict] = {}
    blocked: set = set()

    def grp(key):
        info.setdefault(key, {"producers": [], "norms": [], "consumers": []})
        return key

    def block_input(node_arg):
        for a in node_arg if isinstance(node_arg, (list, tuple)) else [node_arg]:
            if isinstance(a, fx.Node) and a in src:
                blocked.add(src[a])

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            src[node] = grp(("input", node.name))
            blocked.add(src[node])
            continue
        if node.op == "output":
            block_input(node.args[0])
            continue
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if node.op == "call_module":
            m = mods[node.target]
            x = node.args[0]
            if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
                depthwise = isinstance(m, (nn.Conv2d, nn.Conv1d)) and m.groups > 1
                if depthwise:
                    block_input(x)
                    src[node] = grp(("layer", node.target))
                    blocked.add(src[node])
                    continue
                if x in src:
                    spatial = x.meta.get("lowbit_flatten", 1)
                    info[src[x]]["consumers"].append((node.target, spatial))
                src[node] = grp(("layer", node.target))
                info[src[node]]["producers"].append(node.target)
                out_meta = node.meta.get("tensor_meta")
                if isinstance(m, nn.Linear) and (out_meta is None or len(out_meta.shape) != 2):
                    blocked.add(src[node])  # channels of a 3-D Linear output are not on dim 1
                continue
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and x in src and "lowbit_flatten" not in x.meta:
                info[src[x]]["norms"].append(node.target)
                _pass(node, x, src)
                continue
            if isinstance(m, _PASS_MODULES) and x in src:
                _pass(node, x, src)
                continue
            if isinstance(m, nn.Flatten) and x in src:
                _flatten(node, x, src, blocked)
                continue
            block_input(list(node.args) + list(node.kwargs.values()))
            continue
        if node.op == "call_function" and node.target in _PASS_FUNCS and args and args[0] in src:
            _pass(node, args[0], src)
            continue
        if node.op == "call_function" and node.target in _ADD_FUNCS and len(args) == 2 and all(a in src for a in args):
            a, b = args
            sa, sb = a.meta["tensor_meta"].shape, b.meta["tensor_meta"].shape
            if sa == sb and "lowbit_flatten" not in a.meta and "lowbit_flatten" not in b.meta:
                uf.union(src[a], src[b])
                src[node] = src[a]
                continue
        if node.op == "call_function" and node.target is torch.flatten and args and args[0] in src:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start == 1:
                _flatten(node, args[0], src, blocked)
                continue
        if node.op == "call_method" and node.target in ("relu", "sigmoid", "tanh", "contiguous") and args[0] in src:
            _pass(node, args[0], src)
            continue
        if node.op == "call_method" and node.target in ("view", "reshape", "flatten") and args and args[0] in src:
            shape = node.meta.get("tensor_meta")
            if shape is not None and len(shape.shape) == 2 and args[0].meta["tensor_meta"].shape[0] == shape.shape[0]:
                _flatten(node, args[0], src, blocked)
                continue
        if node.op == "call_method" and node.target == "mean" and args and args[0] in src:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            dims = dims if isinstance(dims, (tuple, list)) else (dims,)
            if dims and all(isinstance(d, int) and d >= 2 for d in dims):
                src[node] = src[args[0]]
                continue
        block_input(list(node.args) + list(node.kwargs.values()))

    # merge the union-find classes
    merged: dict[Any, dict] = {}
    for key, g in info.items():
        root = uf.find(key)
        m = merged.setdefault(root, {"producers": [], "norms": [], "consumers": [], "prunable": True})
        for f in ("producers", "norms", "consumers"):
            m[f].extend(x for x in g[f] if x not in m[f])
        if key in blocked:
            m["prunable"] = False
    for key in blocked:
        root = uf.find(key)
        if root in merged:
            merged[root]["prunable"] = False
    out = []
    for _root, g in merged.items():
        if not g["producers"]:
            continue
        chans = {mods[p].weight.shape[0] for p in g["producers"]}
        if len(chans) != 1 or not g["consumers"]:
            g["prunable"] = False
        g["channels"] = chans.pop() if len(chans) == 1 else None
        out.append(g)
    return out


def _pass(node, x, src) -> None:
    """``node`` carries the same channels as its input ``x`` (keeping a flatten's layout)."""
    src[node] = src[x]
    if "lowbit_flatten" in x.meta:
        node.meta["lowbit_flatten"] = x.meta["lowbit_flatten"]


def _flatten(node, x, src, blocked) -> None:
    """A flatten of [B, C, *spatial] to [B, C * prod(spatial)]: consumers see each channel spatial times."""
    shp = x.meta["tensor_meta"].shape
    spatial = 1
    for d in shp[2:]:
        spatial *= int(d)
    # the flattened tensor's consumers read channel-major blocks of `spatial` features
    src[node] = src[x]
    node.meta["lowbit_flatten"] = spatial


def _slice_out(m: nn.Module, keep: torch.Tensor) -> None:
    m.weight = nn.Parameter(m.weight.data[keep].clone())
    if getattr(m, "bias", None) is not None:
        m.bias = nn.Parameter(m.bias.data[keep].clone())
    if isinstance(m, nn.Linear):
        m.out_features = int(keep.numel())
    else:
        m.out_channels = int(keep.numel())
    for b in ("lowbit_mask",):
        if b in m._buffers:
            m._buffers[b] = m._buffers[b][keep].clone()


def _slice_in(m: nn.Module, keep: torch.Tensor, spatial: int) -> None:
    if spatial > 1:
        keep = (keep[:, None] * spatial + torch.arange(spatial)[None, :]).reshape(-1)
    m.weight = nn.Parameter(m.weight.data[:, keep].clone())
    if isinstance(m, nn.Linear):
        m.in_features = int(keep.numel())
    else:
        m.in_channels = int(keep.numel())
    if "lowbit_mask" in m._buffers:
        m._buffers["lowbit_mask"] = m._buffers["lowbit_mask"][:, keep].clone()


def _slice_norm(bn: nn.Module, keep: torch.Tensor) -> None:
    if bn.affine:
        bn.weight = nn.Parameter(bn.weight.data[keep].clone())
        bn.bias = nn.Parameter(bn.bias.data[keep].clone())
    if bn.running_mean is not None:
        bn.running_mean = bn.running_mean[keep].clone()
        bn.running_var = bn.running_var[keep].clone()
    bn.num_features = int(keep.numel())


def prune_channels(model: nn.Module, amount: float, example_input: torch.Tensor, *,
                   importance_kind: str = "magnitude", data: Any = None, loss_fn: Callable | None = None,
                   skip: Iterable[str] = (), inplace: bool = False, progress_bar: bool = True) -> nn.Module:
    """Removes the fraction ``amount`` of output channels of every prunable channel
    group (see ``channel_groups``) and rewires the layers that read them: the
    weights shrink physically, so the model gets faster.

    Channel importance: ``magnitude`` = L1 norm of each producer's filter (each
    layer normalised by its mean, summed over the producers of a group, so a
    residual block and its skip path vote together); ``taylor`` / ``gradient``
    sums the weight importance from ``importance`` over each filter. Groups that
    touch a layer in ``skip`` are left alone. Returns the model (a copy unless
    ``inplace``)."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    if not inplace:
        model = copy.deepcopy(model)
    was = model.training
    model.eval()
    groups = channel_groups(model, example_input)
    mods = dict(model.named_modules())
    skip = set(skip)
    w_imp = None
    if importance_kind != "magnitude":
        w_imp = importance(model, importance_kind, data, loss_fn=loss_fn, progress_bar=progress_bar)
    for g in groups:
        if not g["prunable"] or skip & set(g["producers"] + [c for c, _ in g["consumers"]]):
            continue
        c = g["channels"]
        n_keep = max(1, c - int(round(amount * c)))
        if n_keep == c:
            continue
        score = torch.zeros(c)
        for p in g["producers"]:
            w = w_imp[p] if w_imp is not None else mods[p].weight.detach().abs()
            s = w.reshape(c, -1).sum(1).float()
            score += s / s.mean().clamp(min=1e-12)
        keep = torch.sort(torch.sort(score, descending=True, stable=True).indices[:n_keep]).values
        for p in g["producers"]:
            _slice_out(mods[p], keep)
        for bn in g["norms"]:
            _slice_norm(mods[bn], keep)
        for cname, spatial in g["consumers"]:
            _slice_in(mods[cname], keep, spatial)
    model.train(was)
    return model
