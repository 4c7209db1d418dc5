"""``lowbit.compress``: pruning, quantization, distillation and low-rank
factorization of a ``torch.nn.Module``, a per-layer sensitivity sweep and a
budget solver that writes an editable JSON recipe. docs/compress.md has the
API and the annotation format the converter reads.

torch is imported on first use of a name from this package, so ``import lowbit``
works without torch installed.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers: these names are the functions, not the same-named submodules
    from .distill import distill as distill
    from .prune import prune as prune
    from .quantize import quantize as quantize
    from .sensitivity import sensitivity as sensitivity

# public name -> (submodule, attribute)
_EXPORTS = {
    # pruning
    "prune": ("prune", "prune"),
    "prune_gradual": ("prune", "prune_gradual"),
    "prune_channels": ("prune", "prune_channels"),
    "channel_groups": ("prune", "channel_groups"),
    "importance": ("prune", "importance"),
    "cubic_schedule": ("prune", "cubic_schedule"),
    "remove_masks": ("prune", "remove_masks"),
    "apply_masks": ("prune", "apply_masks"),
    "sparsity_of": ("prune", "sparsity_of"),
    # quantization
    "QuantSpec": ("quantize", "QuantSpec"),
    "quantize": ("quantize", "quantize"),
    "quantize_matrix": ("quantize", "quantize_matrix"),
    "gptq_matrix": ("quantize", "gptq_matrix"),
    "prepare_qat": ("quantize", "prepare_qat"),
    "finish_qat": ("quantize", "finish_qat"),
    "NF4_LEVELS": ("quantize", "NF4_LEVELS"),
    # distillation / training
    "distill": ("distill", "distill"),
    "distillation_loss": ("distill", "distillation_loss"),
    "finetune": ("distill", "finetune"),
    # low-rank
    "factorize": ("lowrank", "factorize"),
    "LowRankLinear": ("lowrank", "LowRankLinear"),
    "LowRankConv2d": ("lowrank", "LowRankConv2d"),
    "ranks_for_budget": ("lowrank", "ranks_for_budget"),
    # sensitivity, recipe, annotation
    "sensitivity": ("sensitivity", "sensitivity"),
    "lowbit_latency": ("latency", "lowbit_latency"),
    "Recipe": ("recipe", "Recipe"),
    "solve": ("recipe", "solve"),
    "annotation": ("annotate", "annotation"),
    "size_report": ("annotate", "size_report"),
    "fp32_bits": ("annotate", "fp32_bits"),
    "evaluate": ("_common", "evaluate"),
    "seed_everything": ("_common", "seed_everything"),
}

_SUBMODULES = ("prune", "quantize", "distill", "lowrank", "sensitivity", "recipe", "annotate", "latency")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # ``prune`` / ``quantize`` / ``distill`` / ``sensitivity`` name the functions;
    # _Package below keeps the same-named submodules from replacing them.
    if name in _EXPORTS:
        mod, attr = _EXPORTS[name]
        try:
            m = importlib.import_module(f".{mod}", __name__)
        except ImportError as e:
            if "torch" in str(e):
                raise ImportError("lowbit.compress needs PyTorch: pip install torch==2.13.0 "
                                  "(or pip install 'lowbit[torch]')") from e
            raise
        value = getattr(m, attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lowbit.compress' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(_EXPORTS) | set(globals()))


class _Package(types.ModuleType):
    """Python binds a submodule to its package's attribute when it is first
    imported, which would replace the function ``compress.prune`` by the module
    ``compress/prune.py``. This keeps the function; the modules stay importable
    by their full name (``import lowbit.compress.prune``, via sys.modules)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name, ("",))[0] == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
