"""Fusions: the GELU erf pattern into one op, and bias / activation into Dense."""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node, Tensor


def _scalar(graph: Graph, name: str) -> float | None:
    arr = graph.const(name)
    if arr is None or arr.size != 1 or arr.dtype != np.float32:
        return None
    return float(arr.reshape(-1)[0])


def _other(node: Node, name: str) -> str | None:
    """The other input of a binary node, given one of them."""
    if len(node.inputs) != 2:
        return None
    if node.inputs[0] == name:
        return node.inputs[1]
    if node.inputs[1] == name:
        return node.inputs[0]
    return None


def _close(v: float | None, want: float, rtol: float = 1e-3) -> bool:
    return v is not None and abs(v - want) <= rtol * abs(want)


def fuse_gelu(graph: Graph) -> Graph:
    """Rewrites the exact-GELU subgraph that exporters emit,
    ``0.5 * x * (1 + erf(x / sqrt(2)))`` (with x / sqrt(2) written as a Div or a
    Mul by 1/sqrt(2), and the 0.5 applied to x first or to the product last),
    into one ``Gelu(x)`` node. Intermediates read elsewhere block the rewrite."""
    prod = graph.producers()
    cons = graph.consumers()
    outputs = graph.output_names()
    remove: set[int] = set()
    replace: dict[int, Node] = {}

    def sole(name: str) -> Node | None:
        c = cons.get(name, [])
        return c[0] if len(c) == 1 and name not in outputs else None

    for erf in graph.nodes:
        if erf.op != "Erf":
            continue
        scale = prod.get(erf.inputs[0])
        if scale is None or scale.op not in ("Div", "Mul") or sole(scale.outputs[0]) is not erf:
            continue
        x = scale.inputs[0]
        c = _scalar(graph, scale.inputs[1])
        if scale.op == "Mul" and c is None:  # constant may come first in a Mul
            x, c = scale.inputs[1], _scalar(graph, scale.inputs[0])
        if not (_close(c, math.sqrt(2)) if scale.op == "Div" else _close(c, 1 / math.sqrt(2))):
            continue
        add = sole(erf.outputs[0])
        if add is None or add.op != "Add" or not _close(_scalar(graph, _other(add, erf.outputs[0]) or ""), 1.0):
            continue
        mul = sole(add.outputs[0])
        if mul is None or mul.op != "Mul":
            continue
        other = _other(mul, add.outputs[0])
        chain = [scale, erf, add, mul]
        if other == x:  # (x * (1 + erf)) * 0.5
            half = sole(mul.outputs[0])
            if half is None or half.op != "Mul" or not _close(_scalar(graph, _other(half, mul.outputs[0]) or ""), 0.5):
                continue
            chain.append(half)
            last = half
        else:  # (x * 0.5) * (1 + erf)
            pre = prod.get(other or "")
            if pre is None or pre.op != "Mul" or sole(pre.outputs[0]) is not mul:
                continue
            if _other(pre, x) is None or not _close(_scalar(graph, _other(pre, x) or ""), 0.5):
                continue
            chain.append(pre)
            last = mul
        ids = [graph.nodes.index(n) for n in chain]
        if any(i in remove for i in ids):
            continue
        remove.update(ids)
        replace[graph.nodes.index(last)] = Node("Gelu", [x], list(last.outputs), {}, erf.name + "/gelu")
    graph.nodes = [replace.get(i, n) for i, n in enumerate(graph.nodes) if i not in remove or i in replace]
    return graph


def fuse_dense_bias(graph: Graph) -> Graph:
    """Folds ``Add(Dense(x, W), b)`` into ``Dense(x, W, b)`` when b is a float32
    constant with N elements broadcasting along the last axis and the Dense
    output is read only by that Add."""
    cons = graph.consumers()
    outputs = graph.output_names()
    removed: set[int] = set()
    by_out = {n.outputs[0]: n for n in graph.nodes if n.op == "Dense"}
    for idx, add in enumerate(graph.nodes):
        if add.op != "Add" or len(add.inputs) != 2:
            continue
        for dense_in, b_in in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
            d = by_out.get(dense_in)
            b = graph.const(b_in)
            if d is None or b is None or len(d.inputs) > 2 or d.attrs.get("activation", 0):
                continue
            n_out = graph.tensors[d.inputs[1]].shape[1]
            if b.dtype != np.float32 or b.size != n_out or any(s != 1 for s in b.shape[:-1]) or \
                    (b.ndim and b.shape[-1] != n_out):
                continue
            if len(cons.get(dense_in, [])) != 1 or dense_in in outputs:
                continue
            bname = graph.unique_name(f"{d.name}.bias")
            graph.tensors[bname] = Tensor.from_array(bname, b.reshape(-1))
            d.inputs.append(bname)
            d.outputs = list(add.outputs)
            removed.add(idx)
            break
    graph.nodes = [n for i, n in enumerate(graph.nodes) if i not in removed]
    return graph


_ACTS = {"Relu": 1, "Gelu": 2}


def fuse_dense_activation(graph: Graph) -> Graph:
    """Folds a Relu or Gelu that is the only reader of a Dense output into the
    Dense node (the GEMM applies it while the tile is still in registers)."""
    cons = graph.consumers()
    outputs = graph.output_names()
    removed: set[int] = set()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    for d in graph.nodes:
        if d.op != "Dense" or d.attrs.get("activation", 0):
            continue
        c = cons.get(d.outputs[0], [])
        if len(c) != 1 or c[0].op not in _ACTS or d.outputs[0] in outputs:
            continue
        act = c[0]
        d.attrs["activation"] = _ACTS[act.op]
        d.outputs = list(act.outputs)
        removed.add(index[id(act)])
    graph.nodes = [n for i, n in enumerate(graph.nodes) if i not in removed]
    return graph


def fuse_layernorm(graph: Graph) -> Graph:
    """Rewrites the decomposed layer norm that exporters emit below opset 17,
    ``d = x - ReduceMean(x); y = d / Sqrt(ReduceMean(d ** 2) + eps) * gamma + beta``
    (reductions over the last axis; gamma and beta constants), into one
    ``LayerNormalization(x, gamma, beta)``. Intermediates read elsewhere block it."""
    cons = graph.consumers()
    outputs = graph.output_names()
    remove: set[int] = set()
    replace: dict[int, Node] = {}
    index = {id(n): i for i, n in enumerate(graph.nodes)}

    def only(name: str, op: str) -> Node | None:
        c = cons.get(name, [])
        return c[0] if len(c) == 1 and c[0].op == op and name not in outputs else None

    def last_axis(n: Node) -> bool:
        return n.attrs.get("axes") == [-1] and n.attrs.get("keepdims", 1) == 1

    for mean in graph.nodes:
        if mean.op != "ReduceMean" or not last_axis(mean):
            continue
        x = mean.inputs[0]
        sub = only(mean.outputs[0], "Sub")
        if sub is None or sub.inputs != [x, mean.outputs[0]]:
            continue
        d = sub.outputs[0]
        readers = cons.get(d, [])
        if d in outputs or len(readers) != 2 or {r.op for r in readers} != {"Pow", "Div"}:
            continue
        pw = next(r for r in readers if r.op == "Pow")
        div = next(r for r in readers if r.op == "Div")
        if pw.inputs[0] != d or not _close(_scalar(graph, pw.inputs[1]), 2.0) or div.inputs[0] != d:
            continue
        var = only(pw.outputs[0], "ReduceMean")
        if var is None or not last_axis(var):
            continue
        add = only(var.outputs[0], "Add")
        eps = _scalar(graph, _other(add, var.outputs[0]) or "") if add else None
        if add is None or eps is None:
            continue
        sq = only(add.outputs[0], "Sqrt")
        if sq is None or div.inputs[1] != sq.outputs[0] or len(cons.get(sq.outputs[0], [])) != 1:
            continue
        mul = only(div.outputs[0], "Mul")
        gamma = _other(mul, div.outputs[0]) if mul else None
        if gamma is None or graph.const(gamma) is None:
            continue
        assert mul is not None  # gamma was found through it
        chain = [mean, sub, pw, var, add, sq, div, mul]
        last = mul
        inputs = [x, gamma]
        badd = only(mul.outputs[0], "Add")
        beta = _other(badd, mul.outputs[0]) if badd else None
        if badd is not None and beta is not None and graph.const(beta) is not None:
            chain.append(badd)
            last = badd
            inputs.append(beta)
        ids = [index[id(n)] for n in chain]
        if any(i in remove for i in ids):
            continue
        remove.update(ids)
        replace[index[id(last)]] = Node("LayerNormalization", inputs, list(last.outputs),
                                        {"axis": -1, "epsilon": float(eps)}, mean.name + "/layernorm")
    graph.nodes = [replace.get(i, n) for i, n in enumerate(graph.nodes) if i not in remove or i in replace]
    return graph


def attention_in_bf16(graph: Graph) -> Graph:
    """Marks every fused ``Attention`` node ``precision=1``: its Q Kᵀ and P V run on the
    bf16 GEMM (Q, K, V and the softmax's exponentials rounded to bfloat16, fp32 sums, the
    softmax's division applied to the output rows) on CPUs whose kernel table has a fast
    one (AMX), fp32 elsewhere; the scale, mask and exp stay fp32. Convert runs it
    for ``attention="bf16"`` (the default of quantized conversions)."""
    for n in graph.nodes:
        if n.op == "Attention":
            n.attrs["precision"] = 1
    return graph


def fuse_attention(graph: Graph) -> Graph:
    """Rewrites multi-head attention as exporters write it into one ``Attention`` node:

        Qt = Transpose(Reshape(q, sq), [0,2,1,3]); Kt = Transpose(Reshape(k, sk), [0,2,3,1])
             (or [0,2,1,3] then [0,1,3,2]); Vt = Transpose(Reshape(v, sv), [0,2,1,3])
        S = MatMul(Qt, Kt) [then Mul / Div by a scalar constant] [then Add(mask)]
        y = Transpose(MatMul(Softmax(S, axis=-1), Vt), [0,2,1,3])  [then Reshape(y, sy)]

    The node reads q, k, v in place (no transposed copies) and keeps the scores in a
    per-thread buffer; it computes the same operations in the same order, so the
    results are bit-identical. A Reshape that merges the heads back (the next op of
    every exporter's attention) becomes the node's ``y_shape``: the same bytes, so no
    copy. Intermediates read elsewhere block the rewrite."""
    prod = graph.producers()
    cons = graph.consumers()
    outputs = graph.output_names()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    remove: set[int] = set()
    replace: dict[int, Node] = {}

    def sole(name: str) -> Node | None:
        c = cons.get(name, [])
        return c[0] if len(c) == 1 and name not in outputs else None

    def made_by(name: str, op: str) -> Node | None:
        """The producer of `name` if it is `op` and `name` has no other reader."""
        n = prod.get(name)
        return n if n is not None and n.op == op and sole(name) is not None else None

    def split_heads(name: str, perm: list[int]) -> tuple[list[Node], str, str | None, list[int] | None] | None:
        """name = Transpose(Reshape(x, target), perm): (nodes, x, target input, target attr)."""
        tr = made_by(name, "Transpose")
        if tr is None or tr.attrs.get("perm") != perm:
            return None
        rs = made_by(tr.inputs[0], "Reshape")
        if rs is None or rs.attrs.get("allowzero", 0):
            return None
        target = rs.attrs.get("shape")
        if target is None and (len(rs.inputs) < 2 or not rs.inputs[1]):
            return None
        const_target = graph.const(rs.inputs[1]) if target is None else None
        if const_target is not None:  # a constant target becomes an attr
            target = [int(d) for d in const_target.reshape(-1)]
        return [tr, rs], rs.inputs[0], (rs.inputs[1] if target is None else None), target

    for sm in graph.nodes:
        if sm.op != "Softmax" or sm.attrs.get("legacy", 0) or sm.attrs.get("axis", -1) not in (-1, 3):
            continue
        chain: list[Node] = [sm]
        mask = ""
        s = sm.inputs[0]
        add = made_by(s, "Add")
        if add is not None:
            scores = next((i for i in add.inputs if prod.get(i) is not None and prod[i].op in ("Mul", "Div", "MatMul")
                           and sole(i) is add), None)
            if scores is None:
                continue
            mask = _other(add, scores) or ""
            if not mask or (graph.is_const(mask) and graph.tensors[mask].dtype != "float32"):
                continue
            chain.append(add)
            s = scores
        scale_op, scale = 0, 1.0
        sc = prod.get(s)
        if sc is not None and sc.op in ("Mul", "Div") and sole(s) is not None:
            operand = sc.inputs[0]
            c = _scalar(graph, sc.inputs[1])
            if c is None and sc.op == "Mul":  # the constant may come first in a Mul
                operand, c = sc.inputs[1], _scalar(graph, sc.inputs[0])
            if c is None:
                continue
            scale_op, scale = (1 if sc.op == "Mul" else 2), c
            chain.append(sc)
            s = operand
        qk = made_by(s, "MatMul")
        if qk is None:
            continue
        chain.append(qk)
        q = split_heads(qk.inputs[0], [0, 2, 1, 3])
        k = split_heads(qk.inputs[1], [0, 2, 3, 1])
        if k is None:  # K^T as two transposes: heads first, then the last two axes swapped
            t2 = made_by(qk.inputs[1], "Transpose")
            if t2 is not None and t2.attrs.get("perm") == [0, 1, 3, 2]:
                k = split_heads(t2.inputs[0], [0, 2, 1, 3])
                if k is not None:
                    k = ([t2] + k[0], k[1], k[2], k[3])
        pv = sole(sm.outputs[0])
        if q is None or k is None or pv is None or pv.op != "MatMul" or pv.inputs[0] != sm.outputs[0]:
            continue
        v = split_heads(pv.inputs[1], [0, 2, 1, 3])
        out = sole(pv.outputs[0])
        if v is None or out is None or out.op != "Transpose" or out.attrs.get("perm") != [0, 2, 1, 3]:
            continue
        chain += q[0] + k[0] + v[0] + [pv, out]
        last, y_target, y_input = out, None, ""
        rs = sole(out.outputs[0])
        if rs is not None and rs.op == "Reshape" and rs.inputs[0] == out.outputs[0] and not rs.attrs.get("allowzero", 0):
            t = rs.attrs.get("shape")
            if t is None and len(rs.inputs) > 1 and rs.inputs[1]:
                yc = graph.const(rs.inputs[1])
                t = None if yc is None else [int(d) for d in yc.reshape(-1)]
                y_input = rs.inputs[1] if yc is None else ""
            if t is not None or y_input:
                chain.append(rs)
                last, y_target = rs, t
        ids = [index[id(n)] for n in chain]
        if len(set(ids)) != len(ids) or any(i in remove for i in ids):
            continue
        attrs: dict = {"scale_op": scale_op, "scale": float(scale)}
        inputs = [q[1], k[1], v[1], mask]
        for key, part in (("q_shape", q), ("k_shape", k), ("v_shape", v)):
            inputs.append(part[2] or "")
            if part[3] is not None:
                attrs[key] = [int(d) for d in part[3]]
        inputs.append(y_input)
        if y_target is not None:
            attrs["y_shape"] = y_target
        while inputs and not inputs[-1]:
            inputs.pop()
        remove.update(ids)
        replace[index[id(last)]] = Node("Attention", inputs, list(last.outputs), attrs, qk.name + "/attention")
    graph.nodes = [replace.get(i, n) for i, n in enumerate(graph.nodes) if i not in remove or i in replace]
    return graph


def fuse_add_layernorm(graph: Graph) -> Graph:
    """Folds a residual ``s = Add(a, b)`` read only by a ``LayerNormalization`` (one
    output) into ``AddLayerNormalization(a, b, scale[, bias])``: the kernel adds the two
    rows on its first pass instead of a separate op writing s and the norm reading it
    back. The float operations are the Add's and the norm's, so the bits are the same."""
    prod = graph.producers()
    cons = graph.consumers()
    outputs = graph.output_names()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    remove: set[int] = set()
    replace: dict[int, Node] = {}
    for ln in graph.nodes:
        if ln.op != "LayerNormalization" or len(ln.outputs) != 1 or len(ln.inputs) < 2:
            continue
        s = ln.inputs[0]
        add = prod.get(s)
        if (add is None or add.op != "Add" or len(add.inputs) != 2 or not all(add.inputs) or s in outputs
                or len(cons.get(s, [])) != 1 or index[id(add)] in remove):
            continue
        if any(i in graph.tensors and graph.tensors[i].dtype != "float32" for i in add.inputs):
            continue
        remove.add(index[id(add)])
        replace[index[id(ln)]] = Node("AddLayerNormalization", list(add.inputs) + ln.inputs[1:], list(ln.outputs),
                                      dict(ln.attrs), ln.name)
    graph.nodes = [replace.get(i, n) for i, n in enumerate(graph.nodes) if i not in remove]
    return graph
