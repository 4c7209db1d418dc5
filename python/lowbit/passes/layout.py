"""The NHWC layout pass for convolutional networks.

lowbit's convolution lowers onto its GEMM with output pixels as rows and output
channels as columns, which is NHWC; 1x1 convolutions then read their input in
place. This pass moves whole conv regions to NHWC and puts a Transpose only
where a value enters or leaves such a region (typically once at the model input
and once before the classifier, or not at all after a global pool)."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Tensor

_TO_NHWC, _TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]
_NCHW_AXIS_IN_NHWC = [0, 3, 1, 2]  # where NCHW axis a lives in NHWC
_ALWAYS_NHWC = {"Conv", "MaxPool", "AveragePool", "QConv", "QMaxPool"}  # run only in NHWC
_EITHER = {"GlobalAveragePool", "GlobalMaxPool", "BatchNormalization"}  # take a layout attr
_UNARY = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "Exp", "Neg", "Abs",
          "Sqrt", "Reciprocal", "Gelu", "Erf", "Identity", "Quantize", "Dequantize"}
_BINARY = {"Add", "Sub", "Mul", "Div"}


def to_nhwc(graph: Graph) -> Graph:
    """Rewrites 2-D Conv / MaxPool / AveragePool to NHWC (attr ``layout``) and
    carries the layout through elementwise ops, residual adds, per-channel
    constants, channel Concats, global pools and batch norms; inserts the
    Transposes needed where NCHW consumers (or graph outputs) read NHWC values."""
    if not any(n.op in _ALWAYS_NHWC for n in graph.nodes):
        return graph
    outputs = graph.output_names()
    nhwc: set[str] = set()       # values stored NHWC
    spatial1: set[str] = set()   # NHWC values with H = W = 1 (same bytes as NCHW)
    to_nchw: dict[str, str] = {}
    to_nhwc_cache: dict[str, str] = {}
    nodes: list[Node] = []
    used = set(graph.tensors) | {o for n in graph.nodes for o in n.outputs} | {i.name for i in graph.inputs}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    def nchw_of(v: str) -> str:
        if v not in nhwc:
            return v
        if v not in to_nchw:
            to_nchw[v] = fresh(f"{v}.nchw")
            nodes.append(Node("Transpose", [v], [to_nchw[v]], {"perm": _TO_NCHW}, f"{v}/to_nchw"))
        return to_nchw[v]

    def nhwc_of(v: str) -> str:
        if v in nhwc:
            return v
        if v not in to_nhwc_cache:
            to_nhwc_cache[v] = fresh(f"{v}.nhwc")
            nodes.append(Node("Transpose", [v], [to_nhwc_cache[v]], {"perm": _TO_NHWC}, f"{v}/to_nhwc"))
            nhwc.add(to_nhwc_cache[v])
        return to_nhwc_cache[v]

    def per_channel_const(v: str) -> str | None:
        """A constant broadcasting against NCHW, re-laid out to broadcast against NHWC."""
        arr = graph.const(v)
        if arr is None or arr.ndim > 4:
            return None
        if arr.size == 1:
            return v
        a4 = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
        name = fresh(f"{v}.nhwc")
        graph.tensors[name] = Tensor.from_array(name, np.ascontiguousarray(a4.transpose(_TO_NHWC)))
        return name

    def emit_nhwc(n: Node) -> None:
        """Appends n (already rewritten to NHWC); graph outputs get NCHW back under their name."""
        out = n.outputs[0]
        if out in outputs:
            inner = fresh(f"{out}.nhwc")
            n.outputs[0] = inner
            nodes.append(n)
            nodes.append(Node("Transpose", [inner], [out], {"perm": _TO_NCHW}, f"{out}/to_nchw"))
            return
        nodes.append(n)
        nhwc.add(out)

    for n in graph.nodes:
        ins = n.inputs
        if n.op in _ALWAYS_NHWC and len(n.attrs.get("kernel_shape", [])) == 2:
            r = 4 if n.op == "QConv" else 3  # where the residual input sits
            n.inputs = [nhwc_of(ins[0])] + ins[1:r] + [nhwc_of(i) if i else i for i in ins[r:r + 1]]  # x and the residual
            n.attrs["layout"] = "NHWC"
            emit_nhwc(n)
            continue
        if n.op in _EITHER and ins[0] in nhwc:
            n.attrs["layout"] = "NHWC"
            emit_nhwc(n)
            if n.op.startswith("Global") and n.outputs[0] in nhwc:
                spatial1.add(n.outputs[0])
            continue
        if n.op in _UNARY and len(n.outputs) == 1 and ins and ins[0] in nhwc:
            emit_nhwc(n)
            if ins[0] in spatial1 and n.outputs[0] in nhwc:
                spatial1.add(n.outputs[0])
            continue
        if n.op in _BINARY and len(ins) == 2 and (ins[0] in nhwc or ins[1] in nhwc):
            a, b = ins
            if a in nhwc and b in nhwc:
                emit_nhwc(n)
                continue
            other = b if a in nhwc else a
            c = per_channel_const(other)
            if c is not None:
                n.inputs = [a, c] if a in nhwc else [c, b]
                emit_nhwc(n)
                continue
        if n.op == "Concat" and ins and all(i in nhwc for i in ins) and n.attrs.get("axis") in (1, -3):
            n.attrs["axis"] = 3
            emit_nhwc(n)
            continue
        if n.op == "Slice" and ins[0] in nhwc:
            starts = graph.const(ins[1])
            axes = graph.const(ins[3]) if len(ins) > 3 and ins[3] else (
                np.arange(starts.size) if starts is not None else None)
            if axes is not None:
                name = fresh(f"{n.name}.axes_nhwc")
                graph.tensors[name] = Tensor.from_array(name, np.array([_NCHW_AXIS_IN_NHWC[int(a) % 4] for a in
                                                                        axes.reshape(-1)], np.int64))
                n.inputs = (ins + ["", ""])[:5]
                n.inputs[3] = name
                n.inputs = n.inputs if n.inputs[4] else n.inputs[:4]
                emit_nhwc(n)
                continue
        if n.op == "Flatten" and ins[0] in spatial1 and n.attrs.get("axis", 1) == 1:
            nodes.append(n)  # N x 1 x 1 x C flattens to the same bytes as N x C x 1 x 1
            continue
        n.inputs = [nchw_of(i) if i else i for i in ins]
        nodes.append(n)
    graph.nodes = nodes
    return graph
