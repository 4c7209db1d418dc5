"""``convert``: a model in, a .qbin file out, and a report of what was done."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from .format import save
from .ir import Graph
from .passes import run_passes


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

    @property
    def compression_ratio(self) -> float:
        return self.source_weight_bytes / max(1, self.file_bytes)

    def __str__(self) -> str:
        lines = [f"converted {self.src} -> {self.dst} in {self.seconds * 1000:.0f} ms",
                 f"  passes: {', '.join(self.passes)}"]
        w = max([len(str(l["name"])) for l in self.layers] + [4])
        lines.append(f"  {'name':<{w}}  {'op':<18} {'weight':<14} {'encoding':<9} {'bytes':>10}  kernel")
        for l in self.layers:
            ws = "x".join(str(d) for d in l["weight_shape"]) if l["weight_shape"] else "-"
            op = l["op"] + (f"+{l['activation']}" if l.get("activation") else "")
            lines.append(f"  {l['name']:<{w}}  {op:<18} {ws:<14} {l['encoding'] or '-':<9} {l['bytes']:>10}  {l['kernel']}")
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


def convert(src: Any, dst: str | os.PathLike, *, quant: str | None = None, group_size: int = 32,
            example_inputs: Any = None, calib: Any = None, recipe: Any = None) -> ConvertReport:
    """Imports ``src`` (an ``.onnx`` path, an ``onnx.ModelProto``, or a live
    ``torch.nn.Module`` traced with ``example_inputs``), runs the
    graph passes (constant folding, GELU/bias/activation fusion, dead-code
    elimination, weight packing) and writes ``dst`` (a ``.qbin`` file).

    Returns a ``ConvertReport`` with each layer's encoding and kernel. Raises
    ``UnsupportedOpError`` listing every operator it cannot import. ``quant``,
    ``group_size``, ``calib``, and ``recipe`` are reserved for the
    quantized and compressed paths and raise ``NotImplementedError`` in this
    version.
    """
    t0 = time.perf_counter()
    if quant is not None:
        raise NotImplementedError(f"quant={quant!r}: quantized encodings are not available in this version yet; "
                                  "convert with quant=None for the fp32 path")
    if recipe is not None or calib is not None:
        raise NotImplementedError("recipe= and calib= are not available in this version yet")
    graph, src_name = _import(src, example_inputs)
    src_bytes = int(graph.metadata.get("source_weight_bytes", 0))
    graph, done = run_passes(graph)
    size = save(graph, dst, producer={"source": os.path.basename(src_name)})
    from .runtime import load
    model = load(dst, verify=False)
    return ConvertReport(src_name, os.fspath(dst), done, model.layers(), size, src_bytes,
                         time.perf_counter() - t0)
