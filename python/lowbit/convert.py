"""``convert``: a model in, a .qbin file out, and a report of what was done."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from . import _core
from .format import save
from .ir import Graph
from .passes import (DEFAULT_PIPELINE, eliminate_dead_code, fuse_attention, pack_conv_weights, pack_dense_weights,
                     run_passes, to_nhwc)


@dataclass
class ConvertReport:
    """What ``convert`` did: the passes run, each layer's encoding and kernel,
    and the file size next to the fp32 size of the source weights."""

    src: str
    dst: str
    passes: list[str]
    layers: list[dict[str, Any]]
    file_bytes: int
    source_weight_bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    #: one entry per layer whose encoding was chosen among dense / sparse / low-rank:
    #: {"layer", "chosen", "why", "times_us": {encoding: {rows: microseconds}}}
    choices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def compression_ratio(self) -> float:
        return self.source_weight_bytes / max(1, self.file_bytes)

    def __str__(self) -> str:
        lines = [f"converted {self.src} -> {self.dst} in {self.seconds * 1000:.0f} ms",
                 f"  passes: {', '.join(self.passes)}"]
        w = max([len(str(l["name"])) for l in self.layers] + [4])
        lines.append(f"  {'name':<{w}}  {'op':<18} {'weight':<14} {'encoding':<18} {'bytes':>10}  kernel")
        for l in self.layers:
            ws = "x".join(str(d) for d in l["weight_shape"]) if l["weight_shape"] else "-"
            op = l["op"] + (f"+{l['activation']}" if l.get("activation") else "")
            lines.append(f"  {l['name']:<{w}}  {op:<18} {ws:<14} {l['encoding'] or '-':<18} {l['bytes']:>10}  {l['kernel']}")
        lines.append(f"  file: {self.file_bytes} bytes (source weights: {self.source_weight_bytes} bytes fp32)")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _source_bytes(graph: Graph) -> int:
    return sum(t.nbytes for t in graph.tensors.values())


def _import(src: Any, example_inputs: Any) -> tuple[Graph, str]:
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not path.lower().endswith(".onnx"):
            raise ValueError(f"{path}: expected an .onnx file (or an onnx.ModelProto)")
        from .frontends.onnx import import_onnx
        return import_onnx(path), path
    mod = type(src).__module__
    if mod.startswith("onnx"):
        from .frontends.onnx import import_onnx
        return import_onnx(src), "<onnx.ModelProto>"
    if mod.startswith("torch") or hasattr(src, "state_dict"):
        from .frontends.torch import import_torch
        return import_torch(src, example_inputs), f"<torch {type(src).__name__}>"
    raise TypeError(f"convert() takes an .onnx path, an onnx.ModelProto or a torch.nn.Module, got {type(src).__name__}")


def _as_recipe(recipe: Any) -> Any:
    """A ``Recipe`` from a Recipe, a dict (the recipe JSON document) or a path to a JSON file."""
    from .compress import Recipe  # lazy (torch); not the submodule path, which would shadow compress.sensitivity
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        import json
        return Recipe.from_json(json.dumps(recipe))
    if isinstance(recipe, (str, os.PathLike)):
        if not os.path.isfile(recipe):
            raise FileNotFoundError(f"recipe={os.fspath(recipe)!r}: no such file (pass a path to a recipe JSON, "
                                    "a dict or a lowbit.compress.Recipe)")
        return Recipe.load(recipe)
    raise TypeError(f"recipe= takes a lowbit.compress.Recipe, a dict or a path to a recipe JSON, got {type(recipe).__name__}")


def _pre_quantized(graph: Graph) -> bool:
    from .passes.qmatmul import QUANT_OPS
    return any(n.op in QUANT_OPS for n in graph.nodes) or any(
        n.op == "Dense" and graph.tensors[n.inputs[1]].encoding != "raw" for n in graph.nodes)


def convert(src: Any, dst: str | os.PathLike, *, quant: str | None = None, group_size: int = 32,
            symmetric: bool = False, codebook: str = "nf4", outliers: int = 1, reduce_range: bool = False,
            example_inputs: Any = None,
            calib: Any = None, calib_method: str = "percentile", calib_percentile: float = 99.99, recipe: Any = None,
            sparse: str = "auto", batch: Any = (1, 16), attention: str | None = None) -> ConvertReport:
    """Imports ``src`` (an ``.onnx`` path, an ``onnx.ModelProto``, or a live
    ``torch.nn.Module`` traced with ``example_inputs``), runs the
    graph passes (constant folding, GELU/bias/activation fusion, dead-code
    elimination, weight quantization or packing) and writes ``dst`` (a
    ``.qbin`` file).

    A torch module compressed by ``lowbit.compress`` converts as it is: each
    annotated layer keeps its codes, scales, zero points and codebook (int8 per
    channel, 2/3/4-bit, ternary and binary as 4-bit codes, NF4 and k-means as a
    4-bit table; see docs/compress.md), pruned layers keep their zeros, low-rank
    layers stay two layers, structurally pruned layers are just smaller. A layer
    whose annotation has no exact .qbin encoding keeps its exact f32 values and the
    report's notes say why. ``recipe`` (a ``lowbit.compress.Recipe``, its JSON
    dict or the path of a recipe file) is applied to the torch module first
    (low-rank, pruning masks, quantization; GPTQ specs calibrate on ``calib``),
    seeded by the recipe's seed: the same module, recipe and calib give the
    same file bytes.

    ``quant``: None keeps fp32 weights; ``"int8"`` stores every MatMul/Gemm
    weight as symmetric per-output-channel int8; ``"int4"`` as 4-bit groups of
    ``group_size`` (32, 64 or 128) along K, asymmetric with a zero point per
    group unless ``symmetric=True``; ``"nf4"`` as 4-bit codes into a 16-entry
    table per layer (``codebook="nf4"``: the NormalFloat-4 levels;
    ``"kmeans"``: levels learned from the layer's weights) with a scale per
    group. Scales come from a per-channel/per-group clipping search that
    minimizes the squared weight error. Layers compressed by ``lowbit.compress``
    keep their own encoding. Activations are quantized to int8 per
    row at run time; the ``outliers`` largest-magnitude values of each row
    (default 1, at most 8; 0 turns it off) are left out of the row's int8 range
    and multiplied in float32 instead, so one outlier channel does not coarsen
    the whole row's grid (see docs/kernels.md, "outlier split").

    ``reduce_range`` (int8): store 7-bit weight codes in [-64, 64] (encoding
    ``qs7-n16k4``) instead of [-127, 127]. On CPUs with AVX2 but no AVX-512
    VNNI the int8 GEMM then multiplies u8 activations by the codes with the
    3-instruction vpmaddubsw cell, which cannot saturate (the full int8 range
    needs a 4-instruction exact cell): about 1.2-1.6x faster int8 layers at
    M >= 4 for one bit less weight precision, the trade onnxruntime documents
    for its ``reduce_range`` on these CPUs (all-MiniLM-L6-v2: mean cosine 0.9982
    instead of 0.9994). Off by default; AVX-512 VNNI, NEON and scalar run such
    files with their int8 GEMM at the usual speed. Weights whose codes already
    lie in [-64, 64] (an onnxruntime ``reduce_range`` model, a 7-bit or smaller
    ``lowbit.compress`` layer) get ``qs7-n16k4`` either way, at no cost.

    An ONNX model already quantized by onnxruntime's tools (``quantize_dynamic``,
    ``quantize_static`` in QDQ form, ``MatMulNBitsQuantizer``) keeps its integer
    weights, zero points and scales (4-bit scales stored as f16) and needs no
    ``quant=``; static activation scales of QDQ models are kept too
    (docs/import.md gives the mapping and the bounds). ``quant=`` then only
    affects layers that are still float.

    ``calib`` (with ``quant="int8"``): an iterable of calibration inputs (arrays
    for single-input models, else dicts name -> array). Convolutions then run int8
    end to end with static activation scales: each activation's range comes from
    a histogram over the calibration outputs, picked by ``calib_method``:
    ``"minmax"``, ``"percentile"`` (two-sided, ``calib_percentile``, default
    99.99) or ``"entropy"`` (TensorRT-style KL minimization). The scales are
    stored in the file (docs/format.md, ``QConv``). An ONNX model already
    quantized in QDQ form (onnxruntime's ``quantize_static``) keeps its own
    integer weights and scales and needs neither.

    ``sparse``: how weights with zeros and factored layers are stored.
    ``"auto"`` (default): two Dense layers in a row with nothing between them and
    a small inner dimension become one ``LowRank`` layer, and every weight with at
    least 30% zeros (and every LowRank) is timed on this CPU in its dense form and
    its sparse (or factored) forms at each row count in ``batch``; the fastest is
    kept, and never one slower than dense at any of them (``batch=(1,)`` for
    decode-style use). A form chosen at small row counts can lose at larger ones
    (80% 1x4 blocks against AMX int8, 4096 x 4096: 1.6-1.7x dense at 16 rows, but
    only 1.1x at 64 and 1.0x at 128), so list the row counts the model will run with. ``"csr"`` / ``"bsr"``: store every weight with a zero in
    that sparse form without timing (``"bsr"``: int8 only); ``"off"``: dense only,
    no low-rank fusion. The choice and its measured times are in the report.

    ``attention``: the precision of the fused attention's two products (Q Kᵀ and
    P V; they have no weights). ``"f32"``: fp32, with the unfused graph's bits.
    ``"bf16"``: Q, K, V and the softmax's exponentials rounded to bfloat16 with
    fp32 sums (the softmax's division applied to the output rows), on CPUs with
    AMX-BF16 tiles (Intel Sapphire Rapids and later; elsewhere these nodes run
    fp32); the scale, mask and exp stay fp32. Default: ``"bf16"`` with
    ``quant=``, else ``"f32"`` (all-MiniLM-L6-v2 int8: mean cosine 0.9994 either
    way, the attention's share of the run from ~25% to ~17%; docs/kernels.md,
    "bf16-gemm").

    Returns a ``ConvertReport`` with each layer's encoding and kernel. Raises
    ``UnsupportedOpError`` listing every operator it cannot import.
    """
    t0 = time.perf_counter()
    if isinstance(outliers, bool) or not isinstance(outliers, int) or not 0 <= outliers <= 8:
        raise ValueError(f"outliers={outliers!r}: expected an integer in [0, 8]")
    if not isinstance(reduce_range, bool):
        raise ValueError(f"reduce_range={reduce_range!r}: expected True or False")
    if reduce_range and quant != "int8":
        raise ValueError(f"reduce_range=True stores 7-bit int8 weight codes: it needs quant='int8', got quant={quant!r}")
    spec = None
    if quant is not None:
        from .passes.quantize import QuantSpec
        spec = QuantSpec(str(quant), int(group_size), bool(symmetric), str(codebook), outliers,
                         reduce_range)
    if calib is not None and recipe is None and (spec is None or spec.mode != "int8"):
        raise ValueError(f"calib= calibrates int8 activations: it needs quant='int8' (or recipe=), got quant={quant!r}")
    from .passes.sparse import SPARSE_MODES, choose_encodings, fuse_lowrank
    if sparse not in SPARSE_MODES:
        raise ValueError(f"sparse={sparse!r}: expected one of {', '.join(SPARSE_MODES)}")
    if sparse == "bsr" and (spec is None or spec.mode != "int8"):
        raise ValueError("sparse='bsr' stores int8 1x4 blocks: it needs quant='int8'")
    batch = (int(batch),) if isinstance(batch, int) else tuple(int(b) for b in batch)
    if attention is None:
        attention = "bf16" if spec is not None else "f32"
    if attention not in ("f32", "bf16"):
        raise ValueError(f"attention={attention!r}: expected 'f32' or 'bf16'")
    is_torch = not isinstance(src, (str, os.PathLike)) and hasattr(src, "state_dict")
    notes: list[str] = []
    if reduce_range:
        notes.append("reduce_range: int8 weights as 7-bit codes in [-64, 64] (qs7-n16k4; "
                     f"on this CPU {_core.kernel_names()['qs7-gemm']})")
    if recipe is not None:
        if not is_torch:
            raise TypeError("recipe= applies to a torch.nn.Module (compression runs where gradients exist); "
                            f"got {type(src).__name__}")
        from .compress import seed_everything
        rec = _as_recipe(recipe)
        seed_everything(rec.seed)
        src = rec.apply(src, calib=calib, progress_bar=False)
        notes.append(f"recipe applied to {len(rec.layers)} layers (seed {rec.seed})")
    specs = []
    if is_torch:  # what lowbit.compress left on the module (codes, scales, masks, low-rank pairs)
        from .frontends.torch import compressed_weights
        specs = compressed_weights(src)
    graph, src_name = _import(src, example_inputs)
    notes.extend(graph.metadata.pop("import_notes", []))  # torch: which path imported it, int8 codes moved
    src_bytes = int(graph.metadata.get("source_weight_bytes", 0))
    passes = list(DEFAULT_PIPELINE)
    from .passes import qconv
    if any(n.op in ("QuantizeLinear", "DequantizeLinear") for n in graph.nodes):
        passes.insert(0, qconv.lower_qdq)
    if calib is not None and spec is not None and spec.mode == "int8":
        passes.insert(passes.index(to_nhwc) + 1, qconv.static_quantize_convs(
            calib, calib_method, calib_percentile, qmax=spec.int8_qmax))
    passes.insert(passes.index(pack_conv_weights) + 1, qconv.pack_qconv_weights)
    # Before the packers, in this order: the toolkit's exact encodings first (the passes
    # after it leave non-raw weights alone), then low-rank fusion and the timed sparse
    # choice over the weights still raw, then quant= for what is left.
    if specs:
        from .passes.encode import encode_compressed_weights
        passes.insert(passes.index(pack_dense_weights), encode_compressed_weights(specs, notes))
    choices: list[dict[str, Any]] = []
    if sparse != "off":
        passes.insert(passes.index(pack_dense_weights), fuse_lowrank)
    passes.insert(passes.index(pack_dense_weights), choose_encodings(spec, sparse, batch, choices))
    if _pre_quantized(graph):  # onnxruntime-quantized MatMuls: integer weights carried over (passes/qmatmul.py);
        # before qconv.lower_qdq, which maps the remaining Q/DQ of convolutions and run-time values
        from .passes.qmatmul import absorb_output_grids, lower_quantized_matmuls
        passes.insert(0, lower_quantized_matmuls(spec.outliers if spec is not None else int(outliers)))
        passes.insert(passes.index(eliminate_dead_code), absorb_output_grids)
    if spec is not None:
        from .passes.quantize import quantize_dense_weights, quantize_gather_tables
        passes.insert(passes.index(pack_dense_weights), quantize_dense_weights(spec))
        passes.insert(passes.index(pack_dense_weights), quantize_gather_tables)
    if attention == "bf16":
        from .passes.fuse import attention_in_bf16
        passes.insert(passes.index(fuse_attention) + 1, attention_in_bf16)
    graph, done = run_passes(graph, passes)
    notes += list(graph.metadata.pop("convert_notes", []))
    size = save(graph, dst, producer={"source": os.path.basename(src_name)})
    from .runtime import load
    model = load(dst, verify=False)
    notes += [f"{c['layer']}: {c['chosen']} ({c['why']}); times in us by rows: {c['times_us']}" for c in choices]
    return ConvertReport(src_name, os.fspath(dst), done, model.layers(), size, src_bytes,
                         time.perf_counter() - t0, notes, choices)
