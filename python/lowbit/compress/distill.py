"""Knowledge distillation and plain fine-tuning: the recovery step after any
other technique (pruning, quantization-aware training, low-rank)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ._common import batches, logits_of, progress, run_model, seed_everything
from .prune import apply_masks


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                      T: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels).

    The T^2 factor keeps the soft-target gradients on the same scale as the
    hard-label ones when T changes. Without labels the CE term is dropped."""
    kl = F.kl_div(F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1),
                  reduction="batchmean", log_target=True) * (T * T)
    if labels is None or alpha >= 1.0:
        return kl
    return alpha * kl + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


class _FeatureTap:
    """Records the output of named submodules during a forward pass."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        mods = dict(model.named_modules())
        missing = [n for n in names if n not in mods]
        if missing:
            raise ValueError(f"no submodule named {missing}")
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def f(mod, args, out):
            self.out[name] = logits_of(out)
        return f

    def remove(self):
        for h in self.handles:
            h.remove()


def _match(fs: torch.Tensor, ft: torch.Tensor, proj: nn.Module | None) -> torch.Tensor:
    if proj is not None:
        fs = proj(fs.movedim(1, -1)).movedim(-1, 1) if fs.dim() > 2 else proj(fs)
    return F.mse_loss(fs, ft)


def train(model: nn.Module, data: Any, *, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64,
          teacher: nn.Module | None = None, T: float = 4.0, alpha: float = 0.7,
          features: Iterable[tuple[str, str]] | None = None, beta: float = 1.0,
          loss_fn: Callable | None = None, weight_decay: float = 0.0, seed: int = 0,
          on_step: Callable[[int], None] | None = None, progress_bar: bool = True,
          extra_params: Iterable[nn.Parameter] = ()) -> nn.Module:
    """Trains ``model`` in place with Adam on ``data`` (``(X, Y)`` tensors, or an
    iterable of ``(x, y)`` batches); with a ``teacher``, on the distillation
    loss (see ``distill``). ``on_step(step)`` runs after every optimizer step
    (the gradual pruning schedule hooks in there). Returns ``model``."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    features = list(features or [])
    s_tap = _FeatureTap(model, [s for s, _ in features]) if features else None
    t_tap = _FeatureTap(teacher, [t for _, t in features]) if features and teacher is not None else None
    if features and teacher is None:
        raise ValueError("feature matching needs a teacher")
    projections: dict[str, nn.Module] = {}
    params = list(model.parameters()) + list(extra_params)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    lr_sched = None
    if teacher is not None:
        teacher.eval()
    model.train()
    step = 0
    try:
        for _ep in progress(range(epochs), progress_bar, "train" if teacher is None else "distill"):
            if lr_sched is None and isinstance(data, (tuple, list)) and isinstance(data[0], torch.Tensor):
                steps_per_epoch = -(-data[0].shape[0] // batch_size)
                lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
            for b in batches(data, batch_size, shuffle=True, generator=gen):
                x = b[0]
                y = b[1] if len(b) > 1 else None
                out = logits_of(run_model(model, x))
                if teacher is None:
                    loss = loss_fn(out, y) if loss_fn is not None else F.cross_entropy(out, y)
                else:
                    with torch.no_grad():
                        t_out = logits_of(run_model(teacher, x))
                    loss = distillation_loss(out, t_out, y, T, alpha)
                    for s_name, t_name in features:
                        fs, ft = s_tap.out[s_name], t_tap.out[t_name].detach()
                        if s_name not in projections:
                            cs, ct = fs.shape[1], ft.shape[1]
                            # a learned projection when the student has fewer channels (pruned)
                            projections[s_name] = nn.Linear(cs, ct, bias=False) if cs != ct else None
                            if projections[s_name] is not None:
                                opt.add_param_group({"params": projections[s_name].parameters()})
                        loss = loss + beta * _match(fs, ft, projections[s_name])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                apply_masks(model)  # an optimizer step must not revive pruned weights
                if lr_sched is not None:
                    lr_sched.step()
                step += 1
                if on_step is not None:
                    on_step(step)
    finally:
        if s_tap:
            s_tap.remove()
        if t_tap:
            t_tap.remove()
    model.eval()
    return model


def distill(teacher: nn.Module, student: nn.Module, data: Any, T: float = 4.0, alpha: float = 0.7, *,
            epochs: int = 5, lr: float = 1e-3, batch_size: int = 64,
            features: Iterable[tuple[str, str]] | None = None, beta: float = 1.0, seed: int = 0,
            progress_bar: bool = True, on_step: Callable[[int], None] | None = None) -> nn.Module:
    """Trains ``student`` (in place) to match ``teacher`` on ``data``.

    Loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)``
    where ``_T`` is the softmax at temperature ``T``; ``features`` is an optional
    list of ``(student_layer, teacher_layer)`` names whose outputs are matched
    by mean squared error (weight ``beta``; a learned linear projection over
    channels bridges a student with fewer channels). Returns the student."""
    if not T > 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return train(student, data, epochs=epochs, lr=lr, batch_size=batch_size, teacher=teacher, T=T,
                 alpha=alpha, features=features, beta=beta, seed=seed, progress_bar=progress_bar,
                 on_step=on_step)


def finetune(model: nn.Module, data: Any, *, epochs: int = 3, lr: float = 1e-3, batch_size: int = 64,
             loss_fn: Callable | None = None, seed: int = 0, progress_bar: bool = True,
             on_step: Callable[[int], None] | None = None) -> nn.Module:
    """Plain fine-tuning on labels (cross-entropy unless ``loss_fn``), in place."""
    return train(model, data, epochs=epochs, lr=lr, batch_size=batch_size, loss_fn=loss_fn, seed=seed,
                 progress_bar=progress_bar, on_step=on_step)
