"""lowbit: compress PyTorch/ONNX models into one .qbin file and run them fast on the CPU.

    import lowbit
    lowbit.convert("model.onnx", "model.qbin")
    y = lowbit.load("model.qbin").run(x)

This module is the public API; everything else is an implementation detail.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from . import _core
from . import compress  # torch is imported lazily, on first use of a compress function
from .convert import ConvertReport, convert
from .errors import FormatError, UnsupportedOpError
from .runtime import Model, format_profile, load


def cpu_info() -> dict[str, Any]:
    """What this CPU offers and what lowbit picked: ``features`` (list),
    ``isa`` (the selected dispatch level), ``supported_isas``, ``kernels``
    (op family -> kernel name), ``num_threads``, ``vendor`` and ``avx512_emulated`` (True only
    in a development build made with -DLOWBIT_EMULATE_AVX512=ON, where the avx512vnni table runs
    through SIMDe on a CPU without AVX-512; never in a release)."""
    return {
        "features": list(_core.cpu_features()),
        "isa": _core.selected_isa(),
        "supported_isas": list(_core.supported_isas()),
        "kernels": dict(_core.kernel_names()),
        "num_threads": _core.get_num_threads(),
        "vendor": _core.cpu_vendor(),
        "avx512_emulated": _core.avx512_emulated(),
    }


def set_num_threads(n: int) -> None:
    """Sets the size of lowbit's thread pool (the calling thread included)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads expects an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads lowbit runs kernels on (default: the CPU count, or
    the environment variable LOWBIT_NUM_THREADS)."""
    return int(_core.get_num_threads())


__all__ = ["convert", "load", "Model", "ConvertReport", "FormatError", "UnsupportedOpError", "cpu_info",
           "set_num_threads", "get_num_threads", "format_profile", "__version__", "compress"]
