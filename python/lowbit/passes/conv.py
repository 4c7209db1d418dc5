"""Convolution passes: BatchNorm folding, activation fusion, weight packing."""

from __future__ import annotations

import numpy as np

from .. import _core
from ..ir import Graph, Tensor

#: activations a Conv applies in its epilogue (C++: runtime/ops/activation.h), with
#: the attributes each carries over as act_alpha / act_beta.
CONV_ACTS = {"Relu": (), "Clip": ("min", "max"), "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
             "HardSwish": (), "Sigmoid": (), "Tanh": ()}


def fold_batchnorm(graph: Graph) -> Graph:
    """Folds ``BatchNormalization(Conv(x, W, b))`` into the Conv when the BN's
    parameters are constants and the Conv output is read only by the BN:
    ``W' = W * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``
    per output channel (computed in float64). A BN that cannot be folded stays
    and runs as its own op."""
    cons = graph.consumers()
    prod = graph.producers()
    outputs = graph.output_names()
    removed = set()
    for i, bn in enumerate(graph.nodes):
        if bn.op != "BatchNormalization":
            continue
        conv = prod.get(bn.inputs[0])
        if conv is None or conv.op != "Conv" or conv.attrs.get("act") or bn.inputs[0] in outputs:
            continue
        if len(cons.get(bn.inputs[0], [])) != 1:
            continue
        params = [graph.const(n) for n in bn.inputs[1:5]]
        w = graph.const(conv.inputs[1])
        if w is None or any(p is None for p in params):
            continue
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params if p is not None)
        cout = w.shape[0]
        if any(p.size != cout for p in (gamma, beta, mean, var)):
            continue
        s = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        b = graph.const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
        b64 = np.zeros(cout) if b is None else b.astype(np.float64).reshape(-1)
        wname = graph.unique_name(f"{conv.name}.w_bn")
        graph.tensors[wname] = Tensor.from_array(wname, (w.astype(np.float64) * s[:, None, None, None]).astype(np.float32))
        bname = graph.unique_name(f"{conv.name}.b_bn")
        graph.tensors[bname] = Tensor.from_array(bname, ((b64 - mean) * s + beta).astype(np.float32))
        conv.inputs = [conv.inputs[0], wname, bname]
        conv.outputs = list(bn.outputs)
        removed.add(i)
    graph.nodes = [n for i, n in enumerate(graph.nodes) if i not in removed]
    return graph


def fuse_conv_activation(graph: Graph) -> Graph:
    """Folds an activation (Relu, Clip, LeakyRelu, HardSigmoid, HardSwish,
    Sigmoid, Tanh) that is the only reader of a Conv output into the Conv (attr
    ``act``, parameters in ``act_alpha`` / ``act_beta``)."""
    cons = graph.consumers()
    outputs = graph.output_names()
    removed = set()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    for c in graph.nodes:
        if c.op != "Conv" or c.attrs.get("act"):
            continue
        readers = cons.get(c.outputs[0], [])
        if len(readers) != 1 or readers[0].op not in CONV_ACTS or c.outputs[0] in outputs:
            continue
        act = readers[0]
        c.attrs["act"] = act.op
        for key, attr in zip(("act_alpha", "act_beta"), CONV_ACTS[act.op]):
            if attr in act.attrs:
                c.attrs[key] = float(act.attrs[attr])
        c.outputs = list(act.outputs)
        removed.add(index[id(act)])
    graph.nodes = [n for i, n in enumerate(graph.nodes) if i not in removed]
    return graph


def fuse_conv_residual(graph: Graph) -> Graph:
    """Folds ``Add(Conv(x), r)`` into ``Conv(x, W, b, r)`` when the Conv has no
    activation yet and its output is read only by that Add, and r is a run-time
    value (a residual branch): the add happens in the Conv's epilogue. Run
    ``fuse_conv_activation`` after it to fold a following ReLU as well."""
    prod = graph.producers()
    cons = graph.consumers()
    outputs = graph.output_names()
    removed = set()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    position = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs}
    for add in graph.nodes:
        if add.op != "Add" or len(add.inputs) != 2:
            continue
        for c_in, r_in in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
            c = prod.get(c_in)
            if (c is None or c.op != "Conv" or c.attrs.get("act") or len(c.inputs) > 3 or c_in in outputs
                    or len(cons.get(c_in, [])) != 1 or r_in in graph.tensors or r_in == c_in):
                continue
            # the residual must already exist when the Conv runs
            if position.get(r_in, -1) > index[id(c)]:
                continue
            c.inputs = (c.inputs + [""])[:3] + [r_in]
            c.outputs = list(add.outputs)
            removed.add(index[id(add)])
            break
    graph.nodes = [n for i, n in enumerate(graph.nodes) if i not in removed]
    return graph


def pack_conv_weights(graph: Graph) -> Graph:
    """Lays out NHWC Conv weights for their kernels: a depthwise conv (one input
    and one output channel per group) becomes ``DepthwiseConv`` with a raw
    ``[kh, kw, C]`` weight; any other conv gets one ``f32-n16`` GEMM matrix per
    group, logical shape ``[G, kh*kw*Cin/G, Cout/G]`` with rows ordered
    (ky, kx, ci) -- the order of an NHWC im2col row."""
    for n in graph.nodes:
        if n.op != "Conv" or n.attrs.get("layout") != "NHWC":
            continue
        t = graph.tensors[n.inputs[1]]
        if t.encoding != "raw":
            continue
        w = t.array().astype(np.float32, copy=False)
        cout, cg, kh, kw = w.shape
        g = int(n.attrs.get("group", 1))
        if g < 1 or cout % g:
            raise ValueError(f"Conv '{n.name}': {cout} output channels do not split into {g} groups")
        name = graph.unique_name(f"{n.name}.weight")
        if cg == 1 and g == cout:
            n.op = "DepthwiseConv"
            graph.tensors[name] = Tensor.from_array(name, np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)))
            n.attrs.pop("group", None)
        else:
            nper = cout // g
            mats = [np.ascontiguousarray(w[k * nper:(k + 1) * nper].transpose(2, 3, 1, 0).reshape(kh * kw * cg, nper))
                    for k in range(g)]
            packed = np.concatenate([_core.pack_f32_n16(m) for m in mats])
            graph.tensors[name] = Tensor(name, packed, "float32", (g, kh * kw * cg, nper), "f32-n16", {})
        n.inputs[1] = name
    return graph
