"""Weight quantization of Linear / Conv layers on the torch side.

Every quantized layer keeps an ordinary float ``weight`` holding the
*dequantized* values (so the torch model computes exactly what the quantized
model computes) plus the integer codes and scales as buffers, and a
``lowbit_quant`` dict saying how to read them (see docs/compress.md):

- ``lowbit_codes``  int8 [N, K]  (uint8 indices for ``kmeans`` / ``nf4``)
- ``lowbit_scale``  float32 [N, G]   (G = 1 per channel, ceil(K / group) group-wise, [1, 1] per tensor)
- ``lowbit_zero``   int32 [N, G]     asymmetric only: w = scale * (code - zero)
- ``lowbit_codebook`` float32 [2**bits]  ``kmeans`` / ``nf4``: w = scale * codebook[code]

The weight is viewed as a matrix [N, K] = ``weight.reshape(N, -1)``; groups are
``group_size`` consecutive entries along K within one row (the last group of a
row is shorter when K is not a multiple of the group size).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from ._common import batches, compressible_layers, progress, run_model, weight_matrix

SCHEMES = ("linear", "ternary", "binary", "kmeans", "nf4")
GRANULARITIES = ("tensor", "channel", "group")
SCALE_METHODS = ("minmax", "percentile", "mse")

# The 16 NF4 levels (quantiles of a unit normal, rescaled to [-1, 1], with an exact 0),
# as published with QLoRA; they are data, recomputing them gives the same numbers.
NF4_LEVELS = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
              -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
              0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
              0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0)


@dataclass
class QuantSpec:
    """How one layer's weight is quantized.

    ``scheme``: ``linear`` (uniform grid), ``ternary`` ({-1, 0, 1} x scale),
    ``binary`` ({-1, 1} x scale), ``kmeans`` (a codebook of 2**bits values learned
    from the weight histogram, per tensor) or ``nf4`` (the NF4 levels x an absmax
    scale per group). ``granularity``: one scale per ``tensor``, per output
    ``channel`` or per ``group`` of ``group_size`` weights along K. ``symmetric``:
    codes in [-2**(b-1), 2**(b-1)-1] and w = s*q, else codes in [0, 2**b-1] and
    w = s*(q - zero). ``scale_method``: ``minmax``, ``percentile`` (clip at that
    percentile of |w|) or ``mse`` (grid search for the clipping with the least
    squared error). ``method``: ``rtn`` (round to nearest) or ``gptq`` (error
    compensation from calibration inputs, see ``quantize(calib=...)``);
    ``act_order``: GPTQ visits the columns by decreasing input energy.
    """

    bits: int = 8
    scheme: str = "linear"
    symmetric: bool = True
    granularity: str = "channel"
    group_size: int = 32
    scale_method: str = "minmax"
    percentile: float = 99.9
    method: str = "rtn"
    act_order: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.scale_method not in SCALE_METHODS:
            raise ValueError(f"scale_method must be one of {SCALE_METHODS}, got {self.scale_method!r}")
        if self.method not in ("rtn", "gptq"):
            raise ValueError(f"method must be 'rtn' or 'gptq', got {self.method!r}")
        if self.scheme == "ternary":
            self.bits, self.symmetric = 2, True
        elif self.scheme == "binary":
            self.bits, self.symmetric = 1, True
        elif self.scheme == "nf4":
            self.bits, self.symmetric = 4, True
        elif not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise ValueError(f"bits must be an int in 2..8 for scheme {self.scheme!r}, got {self.bits!r}")
        if self.granularity == "group" and not (isinstance(self.group_size, int) and self.group_size >= 1):
            raise ValueError(f"group_size must be a positive int, got {self.group_size!r}")
        if self.method == "gptq" and self.scheme != "linear":
            raise ValueError("GPTQ error compensation is implemented for the linear scheme only")

    @classmethod
    def parse(cls, spec: "QuantSpec | str | dict") -> "QuantSpec":
        """Accepts a QuantSpec, a dict of its fields, or a short name:
        ``int8`` (per channel), ``int4_g32`` / ``int4_g64_asym`` / ``int2_g32``
        (group-wise), ``int4`` (per channel), ``ternary``, ``binary``, ``nf4``
        (group 64, or ``nf4_g32``), ``kmeans4`` / ``kmeans3``. A ``_mse`` /
        ``_pct`` suffix picks the scale method, ``_gptq`` the GPTQ method,
        ``_act`` GPTQ's activation order, e.g. ``int4_g32_asym_mse_gptq_act``."""
        if isinstance(spec, QuantSpec):
            return copy.copy(spec)
        if isinstance(spec, dict):
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in spec.items() if k in known})
        if not isinstance(spec, str):
            raise TypeError(f"a quantization spec is a QuantSpec, dict or str, got {type(spec).__name__}")
        parts = spec.lower().split("_")
        head, kw = parts[0], {}
        for p in parts[1:]:
            if p.startswith("g") and p[1:].isdigit():
                kw.update(granularity="group", group_size=int(p[1:]))
            elif p == "asym":
                kw["symmetric"] = False
            elif p == "sym":
                kw["symmetric"] = True
            elif p == "mse":
                kw["scale_method"] = "mse"
            elif p in ("pct", "percentile"):
                kw["scale_method"] = "percentile"
            elif p == "gptq":
                kw["method"] = "gptq"
            elif p == "act":
                kw["act_order"] = True
            elif p == "tensor":
                kw["granularity"] = "tensor"
            else:
                raise ValueError(f"cannot parse quantization spec {spec!r} (unknown part {p!r})")
        if head.startswith("int") and head[3:].isdigit():
            return cls(bits=int(head[3:]), **kw)
        if head in ("ternary", "binary"):
            return cls(scheme=head, **kw)
        if head == "nf4":
            kw.setdefault("granularity", "group")
            kw.setdefault("group_size", 64)
            return cls(scheme="nf4", **kw)
        if head.startswith("kmeans") and head[6:].isdigit():
            kw.setdefault("granularity", "tensor")
            return cls(scheme="kmeans", bits=int(head[6:]), **kw)
        raise ValueError(f"cannot parse quantization spec {spec!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def qrange(self) -> tuple[int, int]:
        """The inclusive range of the stored integer codes."""
        if self.scheme == "binary":
            return -1, 1
        if self.scheme == "ternary":
            return -1, 1
        if self.scheme in ("kmeans", "nf4"):
            return 0, 2 ** self.bits - 1
        if self.symmetric:
            return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return 0, 2 ** self.bits - 1


# ---------------------------------------------------------------------------------------------
# grouping: [N, K] <-> [N, G, g]

def _group_len(spec: QuantSpec, k: int) -> int:
    if spec.granularity == "group":
        return min(spec.group_size, k)
    return k


def _to_groups(wm: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """[N, K] -> [N, G, g], the last group edge-padded (repeating the row's last
    weight leaves that group's min / max / absmax unchanged)."""
    n, k = wm.shape
    if spec.granularity == "tensor":
        return wm.reshape(1, 1, n * k)
    g = _group_len(spec, k)
    pad = (-k) % g
    if pad:
        wm = torch.cat([wm, wm[:, -1:].expand(n, pad)], dim=1)
    return wm.reshape(n, -1, g)


def _from_groups(wg: torch.Tensor, n: int, k: int) -> torch.Tensor:
    return wg.reshape(n, -1)[:, :k] if wg.shape[0] == n else wg.reshape(n, k)


# ---------------------------------------------------------------------------------------------
# linear grid: scale / zero choice, then round

def _fake(wg: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, lo: int, hi: int):
    """Rounds ``wg`` [.., g] on the grid given by scale / zero [.., 1]; returns (codes, dequantized)."""
    if zero is None:
        q = torch.clamp(torch.round(wg / scale), lo, hi)
        return q, q * scale
    q = torch.clamp(torch.round(wg / scale) + zero, lo, hi)
    return q, (q - zero) * scale


def _grid_params(lo_v: torch.Tensor, hi_v: torch.Tensor, spec: QuantSpec):
    """Scale (and zero) mapping [lo_v, hi_v] onto the code range."""
    qlo, qhi = spec.qrange()
    tiny = torch.finfo(torch.float32).tiny * 1e6
    if spec.symmetric:
        amax = torch.maximum(lo_v.abs(), hi_v.abs())
        return torch.clamp(amax / max(qhi, 1), min=tiny), None
    lo_v = torch.clamp(lo_v, max=0.0)  # 0 must be exactly representable (pruned weights stay 0)
    hi_v = torch.clamp(hi_v, min=0.0)
    scale = torch.clamp((hi_v - lo_v) / (qhi - qlo), min=tiny)
    zero = torch.clamp(torch.round(-lo_v / scale) + qlo, qlo, qhi)
    return scale, zero


def choose_scale(wg: torch.Tensor, spec: QuantSpec):
    """Scale [.., 1] (and zero point, asymmetric) for grouped weights [.., g]
    by ``spec.scale_method``."""
    lo, hi = spec.qrange()
    if spec.scale_method == "percentile":
        q = spec.percentile / 100.0
        if spec.symmetric:
            a = torch.quantile(wg.abs(), q, dim=-1, keepdim=True)
            return _grid_params(-a, a, spec)
        return _grid_params(torch.quantile(wg, 1 - q, dim=-1, keepdim=True),
                            torch.quantile(wg, q, dim=-1, keepdim=True), spec)
    mn = wg.amin(dim=-1, keepdim=True)
    mx = wg.amax(dim=-1, keepdim=True)
    if spec.scale_method == "minmax":
        return _grid_params(mn, mx, spec)
    # mse: shrink the clipping range, keep the best per group
    best_err = best_s = best_z = None
    low = 0.2 if spec.bits <= 3 else 0.45
    for f in torch.linspace(1.0, low, 33).tolist():
        s, z = _grid_params(mn * f, mx * f, spec)
        _, d = _fake(wg, s, z, lo, hi)
        err = (d - wg).pow(2).sum(dim=-1, keepdim=True)
        if best_err is None:
            best_err, best_s, best_z = err, s, z
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s = torch.where(better, s, best_s)
            if z is not None:
                best_z = torch.where(better, z, best_z)
    return best_s, best_z


# ---------------------------------------------------------------------------------------------
# one weight matrix -> codes, scales, dequantized

@dataclass
class QuantResult:
    codes: torch.Tensor                  # [N, K] int8 / uint8
    scale: torch.Tensor                  # [N, G] float32
    zero: torch.Tensor | None            # [N, G] int32 or None
    codebook: torch.Tensor | None        # [2**bits] float32 or None
    dequant: torch.Tensor                # [N, K] float32
    extra: dict = field(default_factory=dict)


def _kmeans_1d(x: torch.Tensor, k: int, iters: int = 25) -> torch.Tensor:
    """Deterministic 1-D k-means (centroids initialised at evenly spaced quantiles)."""
    if x.numel() > 200_000:  # a fixed strided subsample keeps it fast and reproducible
        x_fit = x[:: x.numel() // 200_000 + 1]
    else:
        x_fit = x
    c = torch.quantile(x_fit, torch.linspace(0, 1, k + 2)[1:-1].to(x_fit.dtype))
    for _ in range(iters):
        a = (x_fit[:, None] - c[None, :]).abs().argmin(dim=1)
        sums = torch.zeros(k, dtype=x.dtype).index_add_(0, a, x_fit)
        cnt = torch.bincount(a, minlength=k).to(x.dtype)
        c = torch.where(cnt > 0, sums / cnt.clamp(min=1), c)
    return torch.sort(c).values


def quantize_matrix(wm: torch.Tensor, spec: QuantSpec) -> QuantResult:
    """Round-to-nearest quantization of one weight matrix [N, K]."""
    spec = QuantSpec.parse(spec)
    wm = wm.detach().float()
    n, k = wm.shape
    wg = _to_groups(wm, spec)
    codebook = None
    zero = None
    if spec.scheme == "linear":
        lo, hi = spec.qrange()
        scale, zero = choose_scale(wg, spec)
        q, d = _fake(wg, scale, zero, lo, hi)
    elif spec.scheme == "binary":
        # sign x mean |w| minimises the L2 error of a {-a, a} grid (XNOR-Net)
        scale = wg.abs().mean(dim=-1, keepdim=True).clamp(min=1e-12)
        q = torch.where(wg >= 0, 1.0, -1.0)
        d = q * scale
    elif spec.scheme == "ternary":
        # threshold 0.7 mean|w|, scale = mean |w| above it (ternary weight networks)
        delta = 0.7 * wg.abs().mean(dim=-1, keepdim=True)
        q = torch.where(wg > delta, 1.0, torch.where(wg < -delta, -1.0, 0.0))
        nz = q.abs().sum(dim=-1, keepdim=True).clamp(min=1)
        scale = ((wg.abs() * q.abs()).sum(dim=-1, keepdim=True) / nz).clamp(min=1e-12)
        d = q * scale
    elif spec.scheme == "nf4":
        codebook = torch.tensor(NF4_LEVELS, dtype=torch.float32)
        scale = wg.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
        q = ((wg / scale)[..., None] - codebook).abs().argmin(dim=-1).float()
        d = codebook[q.long()] * scale
    else:  # kmeans: one codebook per tensor, learned on w / scale
        scale = torch.ones(wg.shape[0], wg.shape[1], 1)
        if spec.granularity != "tensor":
            scale = wg.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
        codebook = _kmeans_1d((wg / scale).reshape(-1), 2 ** spec.bits)
        q = ((wg / scale)[..., None] - codebook).abs().argmin(dim=-1).float()
        d = codebook[q.long()] * scale
    codes = _from_groups(q, n, k)
    deq = _from_groups(d, n, k)
    code_dtype = torch.uint8 if spec.scheme in ("kmeans", "nf4") else torch.int8
    scale = scale.reshape(wg.shape[0], wg.shape[1]).float()
    if zero is not None:
        zero = zero.reshape(wg.shape[0], wg.shape[1]).to(torch.int32)
    return QuantResult(codes.to(code_dtype), scale, zero, codebook, deq)


# ---------------------------------------------------------------------------------------------
# GPTQ: quantize column by column, pushing each column's rounding error onto the
# columns not yet quantized, weighted by the inverse Hessian of the layer's inputs.

def gptq_matrix(wm: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec, block: int = 128,
                damp: float = 0.01, act_order: bool = False) -> QuantResult:
    """GPTQ-style quantization of [N, K] given H = E[x x^T] [K, K] of the layer's inputs."""
    spec = QuantSpec.parse(spec)
    if spec.scheme != "linear":
        raise ValueError("gptq_matrix handles the linear scheme only")
    W = wm.detach().float().clone()
    n, k = W.shape
    H = hessian.detach().double().clone()
    if H.shape != (k, k):
        raise ValueError(f"hessian shape {tuple(H.shape)} does not match K={k}")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = None
    if act_order:  # quantize the columns with the largest input energy first
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(k, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()

    lo, hi = spec.qrange()
    g = _group_len(spec, k) if spec.granularity == "group" else k
    if spec.granularity == "group":
        block = max(g, (block // g) * g)  # a group never straddles two blocks
    ng = -(-k // g) if spec.granularity == "group" else 1
    # Scales: per tensor / channel from the whole matrix; per group either found when the
    # column loop reaches the group (dynamic, sees the compensated weights) or, with
    # act_order, fixed up front from the original weights (static: the permuted order
    # visits a group's columns out of sequence).
    static = spec.granularity != "group" or act_order
    W_orig = W if perm is None else W[:, torch.argsort(perm)]
    if static:
        s, z = choose_scale(_to_groups(W_orig, spec), spec)
        if spec.granularity == "tensor":
            scales = s.reshape(1, 1).expand(n, 1).clone()
            zeros = None if z is None else z.reshape(1, 1).expand(n, 1).clone()
        else:
            scales = s.reshape(n, ng)
            zeros = None if z is None else z.reshape(n, ng)
        col_group = (torch.arange(k) // g) if spec.granularity == "group" else torch.zeros(k, dtype=torch.long)
        if perm is not None:
            col_group = col_group[perm]
        s_col = scales[:, col_group]
        z_col = None if zeros is None else zeros[:, col_group]
    else:
        scales = torch.zeros(n, ng)
        zeros = torch.zeros(n, ng) if not spec.symmetric else None
    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    cur_s = cur_z = None
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if static:
                cur_s = s_col[:, col:col + 1]
                cur_z = None if z_col is None else z_col[:, col:col + 1]
            elif col % g == 0:
                seg = W1[:, i:i + g].reshape(n, 1, -1)
                s, z = choose_scale(seg, spec)
                cur_s, cur_z = s.reshape(n, 1), (None if z is None else z.reshape(n, 1))
                scales[:, col // g] = cur_s[:, 0]
                if zeros is not None:
                    zeros[:, col // g] = cur_z[:, 0]
            w = W1[:, i:i + 1]
            q, d = _fake(w, cur_s, cur_z, lo, hi)
            codes[:, col] = q[:, 0]
            Q[:, col] = d[:, 0]
            err = (w - d)[:, 0] / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if perm is not None:
        inv = torch.argsort(perm)
        Q, codes = Q[:, inv], codes[:, inv]
    return QuantResult(codes.to(torch.int8), scales.float(),
                       None if zeros is None else zeros.to(torch.int32), None, Q)


# ---------------------------------------------------------------------------------------------
# attaching results to modules

def _weight_param(module: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def _set_buffer(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if value is None:
        if name in module._buffers:
            del module._buffers[name]
        return
    if name in module._buffers:
        module._buffers[name] = value
    else:
        module.register_buffer(name, value)


def attach(module: nn.Module, res: QuantResult, spec: QuantSpec) -> None:
    """Writes the dequantized weight into ``module`` and stores codes / scales / annotation."""
    w = _weight_param(module)
    deq = res.dequant.reshape(w.shape).to(w.dtype)
    mask = getattr(module, "lowbit_mask", None)
    if mask is not None:  # pruned weights stay exactly zero
        deq = deq * mask
    with torch.no_grad():
        w.copy_(deq)
    _set_buffer(module, "lowbit_codes", res.codes.contiguous())
    _set_buffer(module, "lowbit_scale", res.scale.contiguous())
    _set_buffer(module, "lowbit_zero", None if res.zero is None else res.zero.contiguous())
    _set_buffer(module, "lowbit_codebook", None if res.codebook is None else res.codebook.contiguous())
    n, k = weight_matrix(module).shape
    module.lowbit_quant = dict(spec.to_dict(), code_range=list(spec.qrange()), matrix=[n, k],
                               groups=int(res.scale.shape[1]))


class _StopForward(Exception):
    pass


def _layer_inputs_matrix(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of the K dimension its weight matrix multiplies."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError("GPTQ on grouped convolutions is not supported")
        if isinstance(module.padding, str):
            raise ValueError("GPTQ needs numeric conv padding")
        cols = nn.functional.unfold(x, module.kernel_size, dilation=module.dilation,
                                    padding=module.padding, stride=module.stride)  # [B, K, L]
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if isinstance(module, nn.Conv1d):
        if module.groups != 1 or isinstance(module.padding, str):
            raise ValueError("GPTQ on grouped / string-padded Conv1d is not supported")
        x4 = x.unsqueeze(2)
        cols = nn.functional.unfold(x4, (1, module.kernel_size[0]), dilation=(1, module.dilation[0]),
                                    padding=(0, module.padding[0]), stride=(1, module.stride[0]))
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    raise TypeError(f"unsupported layer {type(module).__name__}")


@torch.no_grad()
def collect_hessian(model: nn.Module, module: nn.Module, calib: Any, batch_size: int = 64,
                    siblings: Iterable[nn.Module] = ()) -> tuple[torch.Tensor, list[nn.Module]]:
    """H = mean over calibration rows of x x^T for the inputs of ``module``, and
    which of the later layers ``siblings`` are Linear layers reading the very same
    input tensor (q / k / v projections do): they share H. The forward stops at
    ``module`` when there are no siblings, else at the first sibling that reads
    anything else. A batch given as a dict with an ``attention_mask`` [B, T]
    (Hugging Face style) contributes only its unmasked token rows to a Linear's H."""
    k = weight_matrix(module).shape[1]
    H = torch.zeros(k, k, dtype=torch.float64)
    count = [0]
    state: dict[str, Any] = {}
    shared: list[nn.Module] = []
    candidates = [m for m in siblings if m is not module]
    compatible = {id(m) for m in candidates if isinstance(module, nn.Linear) and isinstance(m, nn.Linear)
                  and m.in_features == module.in_features}

    def own_hook(mod, args):
        x = args[0]
        m = state.get("mask")
        if isinstance(mod, nn.Linear) and m is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(m.shape):
            xm = x.detach()[m.bool()].float().double()  # padding tokens say nothing about real inputs
        else:
            xm = _layer_inputs_matrix(mod, x.detach().float()).double()
        H.add_(xm.T @ xm)
        count[0] += xm.shape[0]
        state["x"] = x
        if not candidates:
            raise _StopForward

    def sibling_hook(mod, args):
        if "x" not in state:
            return  # runs before ``module`` does: not a sibling
        if args[0] is state["x"] and id(mod) in compatible:
            if first_batch[0] and mod not in shared:
                shared.append(mod)
            return
        raise _StopForward

    first_batch = [True]
    hooks = [module.register_forward_pre_hook(own_hook)]
    hooks += [m.register_forward_pre_hook(sibling_hook) for m in candidates]
    try:
        for b in batches(calib, batch_size):
            state.clear()
            if isinstance(b[0], dict) and isinstance(b[0].get("attention_mask"), torch.Tensor):
                state["mask"] = b[0]["attention_mask"]
            try:
                run_model(model, b[0])
            except _StopForward:
                pass
            first_batch[0] = False
    finally:
        for h in hooks:
            h.remove()
    if count[0] == 0:
        raise ValueError("calibration data never reached layer; check calib")
    return (H / count[0]).float(), shared


def _spec_for(name: str, spec: Any) -> QuantSpec | None:
    if isinstance(spec, dict) and not set(spec) <= set(QuantSpec.__dataclass_fields__):
        s = spec.get(name)
        return None if s is None else QuantSpec.parse(s)
    return QuantSpec.parse(spec)


def quantize(model: nn.Module, spec: Any = "int8", calib: Any = None, *, layers: Iterable[str] | None = None,
             skip: Iterable[str] = (), inplace: bool = False, act_order: bool = False,
             batch_size: int = 64, progress_bar: bool = True) -> nn.Module:
    """Quantizes the weights of the Linear / Conv layers of ``model``.

    ``spec``: one spec for all layers (``QuantSpec``, dict or a name such as
    ``"int8"``, ``"int4_g32"``, ``"int2_g32_asym"``, ``"ternary"``, ``"nf4"``,
    ``"kmeans4"``; see ``QuantSpec.parse``) or a dict ``layer name -> spec``
    (layers absent from it stay float). Specs with ``method="gptq"`` (or any
    spec when ``calib`` is given for ``"..._gptq"``) use GPTQ error compensation
    with inputs from ``calib`` (tensor, ``(X,)`` tuple or iterable of batches);
    layers are processed in order, each one calibrated on the outputs of the
    layers already quantized. ``act_order`` quantizes the columns with the
    largest input energy first (group scales are then fixed up front). Returns the quantized model (a copy unless
    ``inplace``). Each layer gets the buffers and ``lowbit_quant`` dict
    described in this module's docstring.
    """
    if not inplace:
        model = copy.deepcopy(model)
    targets = compressible_layers(model, layers, skip)
    items = [(n, m, _spec_for(n, spec)) for n, m in targets.items()]
    items = [(n, m, s) for n, m, s in items if s is not None]
    was = model.training
    model.eval()
    done: set[int] = set()
    for i, (name, mod, s) in enumerate(progress(items, progress_bar, "quantize")):
        if id(mod) in done:
            continue
        if s.method != "gptq":
            attach(mod, quantize_matrix(weight_matrix(mod), s), s)
            continue
        if calib is None:
            raise ValueError(f"layer {name}: GPTQ needs calibration inputs (calib=...)")
        later = [m for _, m, ls in items[i + 1:] if id(m) not in done]
        H, shared = collect_hessian(model, mod, calib, batch_size, siblings=later)
        # stacking rows is exact for per-channel / per-group scales, not for one scale per tensor
        shared = [m for m in shared if s.granularity != "tensor" and
                  next(ls for _, mm, ls in items if mm is m) == s]
        # layers reading the same input with the same spec are one GPTQ problem: stack their rows
        group = [mod] + shared
        mats = [weight_matrix(m) for m in group]
        res = gptq_matrix(torch.cat(mats, 0), H, s, act_order=act_order or s.act_order)
        o = 0
        for m, w in zip(group, mats):
            n = w.shape[0]
            part = QuantResult(res.codes[o:o + n], res.scale[o:o + n],
                               None if res.zero is None else res.zero[o:o + n], None, res.dequant[o:o + n])
            attach(m, part, s)
            done.add(id(m))
            o += n
    model.train(was)
    return model


# ---------------------------------------------------------------------------------------------
# quantization-aware training: straight-through rounding, learned step size (LSQ)

def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def _scale_grad(x: torch.Tensor, g: float) -> torch.Tensor:
    """Identity in the forward pass, gradient multiplied by ``g`` (LSQ's step-size gradient scale)."""
    return (x - x * g).detach() + x * g


class LSQWeight(nn.Module):
    """A parametrization that fake-quantizes a weight on a linear grid whose step
    (one per channel / group) is a trained parameter; rounding passes gradients
    straight through."""

    def __init__(self, weight: torch.Tensor, spec: QuantSpec, mask: torch.Tensor | None = None):
        super().__init__()
        if spec.scheme != "linear" or not spec.symmetric:
            raise ValueError("QAT (LSQ) supports the symmetric linear scheme")
        self.spec = spec
        self.shape = tuple(weight.shape)
        wm = weight.detach().reshape(weight.shape[0], -1).float()
        s, _ = choose_scale(_to_groups(wm, spec), QuantSpec.parse(dict(spec.to_dict(), scale_method="mse")))
        self.step = nn.Parameter(s.clone())
        self.lo, self.hi = spec.qrange()
        self.gscale = 1.0 / math.sqrt(_to_groups(wm, spec).shape[-1] * max(self.hi, 1))
        self.register_buffer("mask", None if mask is None else mask.detach().clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            w = w * self.mask
        n = w.shape[0]
        wm = w.reshape(n, -1)
        k = wm.shape[1]
        wg = _to_groups(wm, self.spec)
        s = _scale_grad(self.step.abs() + 1e-12, self.gscale)
        q = _round_ste(torch.clamp(wg / s, self.lo, self.hi))
        return _from_groups(q * s, n, k).reshape(w.shape)


def prepare_qat(model: nn.Module, spec: Any = "int4_g32", *, layers: Iterable[str] | None = None,
                skip: Iterable[str] = (), inplace: bool = False) -> nn.Module:
    """Makes ``model`` ready for quantization-aware fine-tuning: each selected
    layer's weight is fake-quantized by an ``LSQWeight`` parametrization (its step
    size is a trainable parameter). Train as usual, then call ``finish_qat``."""
    if not inplace:
        model = copy.deepcopy(model)
    for name, mod in compressible_layers(model, layers, skip).items():
        s = _spec_for(name, spec)
        if s is None:
            continue
        parametrize.register_parametrization(mod, "weight",
                                             LSQWeight(mod.weight, s, getattr(mod, "lowbit_mask", None)))
    return model


@torch.no_grad()
def finish_qat(model: nn.Module) -> nn.Module:
    """Removes the QAT parametrizations (in place): each layer keeps its
    fake-quantized weight and gets codes / learned scales / ``lowbit_quant``."""
    for _name, mod in list(model.named_modules()):
        if not parametrize.is_parametrized(mod, "weight"):
            continue
        p = [m for m in mod.parametrizations.weight if isinstance(m, LSQWeight)]
        if not p:
            continue
        lsq = p[0]
        step = (lsq.step.detach().abs() + 1e-12)
        parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
        wm = weight_matrix(mod).float()
        n, k = wm.shape
        wg = _to_groups(wm, lsq.spec)
        q, d = _fake(wg, step, None, lsq.lo, lsq.hi)
        res = QuantResult(_from_groups(q, n, k).to(torch.int8), step.reshape(wg.shape[0], wg.shape[1]).float(),
                          None, None, _from_groups(d, n, k))
        s = QuantSpec.parse(lsq.spec)
        attach(mod, res, s)
        mod.lowbit_quant.update(method="qat_lsq", scale_method="learned")
    return model
