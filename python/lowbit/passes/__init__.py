"""Graph rewrites. Each pass is a small function ``Graph -> Graph`` with a
docstring saying what it rewrites; ``DEFAULT_PIPELINE`` is the order convert
uses, and ``run_passes`` applies a list of them."""

from __future__ import annotations

from typing import Callable, Iterable

from ..ir import Graph
from .cleanup import eliminate_dead_code, eliminate_identity
from .conv import fold_batchnorm, fuse_conv_activation, fuse_conv_residual, pack_conv_weights
from .layout import to_nhwc
from .fold import fold_constants
from .fuse import (fuse_add_layernorm, fuse_attention, fuse_dense_activation, fuse_dense_bias, fuse_gelu,
                   fuse_layernorm)
from .pack import check_runtime_dtypes, pack_dense_weights
from .qconv import lower_qdq, pack_qconv_weights, static_quantize_convs

Pass = Callable[[Graph], Graph]

DEFAULT_PIPELINE: list[Pass] = [
    fold_constants,
    eliminate_identity,
    fuse_gelu,
    fuse_layernorm,
    fuse_dense_bias,
    fuse_dense_activation,
    fuse_attention,
    fuse_add_layernorm,
    fold_batchnorm,
    fuse_conv_activation,
    fuse_conv_residual,
    fuse_conv_activation,
    eliminate_dead_code,
    to_nhwc,
    check_runtime_dtypes,
    pack_dense_weights,
    pack_conv_weights,
    eliminate_dead_code,  # packing a conv weight renames it: drop the unpacked copy
]


def run_passes(graph: Graph, passes: Iterable[Pass] = DEFAULT_PIPELINE) -> tuple[Graph, list[str]]:
    """Applies ``passes`` in order; returns the graph and the names of the passes run."""
    done = []
    for p in passes:
        graph = p(graph)
        graph.check()
        done.append(p.__name__)
    return graph, done


__all__ = ["DEFAULT_PIPELINE", "run_passes", "fold_constants", "eliminate_identity", "fuse_gelu",
           "fuse_dense_bias", "fuse_dense_activation", "eliminate_dead_code", "check_runtime_dtypes",
           "pack_dense_weights", "fuse_layernorm", "fold_batchnorm", "fuse_conv_activation", "fuse_conv_residual", "to_nhwc",
           "pack_conv_weights", "lower_qdq", "pack_qconv_weights", "static_quantize_convs", "fuse_attention",
           "fuse_add_layernorm"]
