"""Low-rank factorization: a Linear / Conv weight W [N, K] becomes two layers,
``first`` (K -> r) then ``second`` (r -> N), from the truncated SVD
W ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T). The pair is one module (``LowRankLinear``
/ ``LowRankConv2d``) that the converter exports as the fused low-rank op."""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from ._common import compressible_layers, weight_matrix


class LowRankLinear(nn.Module):
    """y = second(first(x)); first: Linear(K, r, no bias), second: Linear(r, N, bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x):
        return self.second(self.first(x))


class LowRankConv2d(nn.Module):
    """first: Conv2d(Cin, r, the original kernel / stride / padding / dilation, no bias);
    second: 1x1 Conv2d(r, Cout, bias)."""

    def __init__(self, conv: nn.Conv2d, rank: int):
        super().__init__()
        if conv.groups != 1:
            raise ValueError("low-rank factorization of grouped convolutions is not supported")
        self.rank = rank
        self.first = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                               dilation=conv.dilation, bias=False, padding_mode=conv.padding_mode)
        self.second = nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None)

    def forward(self, x):
        return self.second(self.first(x))


def _params(module: nn.Module) -> int:
    n, k = weight_matrix(module).shape
    return n * k


def singular_values(module: nn.Module) -> torch.Tensor:
    return torch.linalg.svdvals(weight_matrix(module).float())


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """Smallest rank keeping ``energy`` of sum(sigma^2)."""
    e = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum().clamp(min=1e-30)
    return int(min(len(s), int(torch.searchsorted(e, torch.tensor(energy, dtype=e.dtype)).item()) + 1))


def max_useful_rank(module: nn.Module) -> int:
    """The largest rank whose two factors hold fewer weights than the dense layer."""
    n, k = weight_matrix(module).shape
    return max(0, (n * k - 1) // (n + k))


def ranks_for_budget(model: nn.Module, fraction: float, layers: Iterable[str] | None = None,
                     skip: Iterable[str] = ()) -> dict[str, int]:
    """Ranks meeting a parameter budget: the factorized layers together hold at most
    ``fraction`` of the weights the selected layers hold now. Singular values are
    kept greedily by (share of the layer's energy) / (weights they cost), so every
    layer loses the directions that matter least to it first."""
    targets = compressible_layers(model, layers, skip)
    total = sum(_params(m) for m in targets.values())
    budget = fraction * total
    cand = []
    for n, m in targets.items():
        s = singular_values(m)
        e = (s.double() ** 2) / (s.double() ** 2).sum().clamp(min=1e-30)
        nn_, kk = weight_matrix(m).shape
        for i in range(min(len(s), max_useful_rank(m))):
            cand.append((float(e[i]) / (nn_ + kk), n, i))
    cand.sort(key=lambda t: (-t[0], t[1], t[2]))
    # start from rank 0 everywhere (dense layers cost nothing until picked as factorized)
    ranks = {n: 0 for n in targets}
    used = 0.0
    for _, n, i in cand:
        m = targets[n]
        nn_, kk = weight_matrix(m).shape
        if i != ranks[n]:
            continue
        if used + nn_ + kk > budget:
            continue
        ranks[n] += 1
        used += nn_ + kk
    return {n: max(1, r) for n, r in ranks.items()}


@torch.no_grad()
def _factor(module: nn.Module, rank: int) -> nn.Module:
    W = weight_matrix(module).double()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    r = int(rank)
    sq = S[:r].sqrt()
    A = (sq[:, None] * Vh[:r]).float()          # [r, K]
    B = (U[:, :r] * sq[None, :]).float()        # [N, r]
    if isinstance(module, nn.Linear):
        lr = LowRankLinear(module.in_features, module.out_features, r, bias=module.bias is not None)
        lr.first.weight.copy_(A)
    elif isinstance(module, nn.Conv2d):
        lr = LowRankConv2d(module, r)
        lr.first.weight.copy_(A.reshape(r, *module.weight.shape[1:]))
    else:
        raise TypeError(f"cannot factorize {type(module).__name__}")
    lr.second.weight.copy_(B.reshape(lr.second.weight.shape))
    if module.bias is not None:
        lr.second.bias.copy_(module.bias)
    lr.to(module.weight.device)
    lr.lowbit_lowrank = {"rank": r, "original_matrix": list(W.shape), "first": "first", "second": "second"}
    return lr


def _set_child(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def factorize(model: nn.Module, *, rank: int | dict[str, int] | None = None, energy: float | None = None,
              param_fraction: float | None = None, layers: Iterable[str] | None = None,
              skip: Iterable[str] = (), inplace: bool = False) -> nn.Module:
    """Replaces Linear / Conv2d layers by low-rank pairs.

    Exactly one of: ``rank`` (an int for all, or ``layer -> rank``; a rank
    fraction in (0, 1) means that fraction of min(N, K)), ``energy`` (keep that
    share of sum(sigma^2) per layer), ``param_fraction`` (the selected layers end
    with at most that fraction of their weights; see ``ranks_for_budget``).
    Layers where the pair would not be smaller than the dense layer stay dense,
    unless their rank was given explicitly in a ``layer -> rank`` dict.
    For a rank chosen by sensitivity, run ``sensitivity(options=['rank0.5', ...])``
    and ``solve`` (recipe.py), which calls this with a per-layer ``rank`` dict.
    Returns the model (a copy unless ``inplace``)."""
    if sum(x is not None for x in (rank, energy, param_fraction)) != 1:
        raise ValueError("give exactly one of rank=, energy=, param_fraction=")
    if not inplace:
        model = copy.deepcopy(model)
    targets = compressible_layers(model, layers if not isinstance(rank, dict) else list(rank), skip)
    targets = {n: m for n, m in targets.items() if not isinstance(m, nn.Conv1d)}
    if param_fraction is not None:
        ranks = ranks_for_budget(model, param_fraction, list(targets))
    elif energy is not None:
        ranks = {n: rank_for_energy(singular_values(m), energy) for n, m in targets.items()}
    elif isinstance(rank, dict):
        ranks = dict(rank)
    else:
        ranks = {n: rank for n in targets}
    for n, m in targets.items():
        r = ranks[n]
        full = min(weight_matrix(m).shape)
        if isinstance(r, float) and 0 < r < 1:
            r = max(1, int(round(r * full)))
        r = int(r)
        if r < 1:
            raise ValueError(f"rank must be >= 1, got {r} for {n}")
        if r > max_useful_rank(m) and not isinstance(rank, dict):
            continue  # the factors would hold more weights than the layer (an explicit per-layer rank is honoured)
        _set_child(model, n, _factor(m, r))
    return model
