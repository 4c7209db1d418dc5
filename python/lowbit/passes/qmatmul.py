"""Pre-quantized ONNX models onto lowbit's integer Dense layers, without re-quantizing.

- ``quantize_dynamic`` output: ``DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q) ->
  Cast -> Mul(x_scale * w_scale)`` becomes ``Dense(x, W)`` with W's int8 codes (minus its
  zero point) and scales in ``qs8-n16k4``. The activations are quantized the lowbit way:
  per row, symmetric, with the outlier split, where onnxruntime uses one asymmetric uint8
  scale per tensor (docs/import.md gives the bound between the two).
- QDQ (``quantize_static(..., quant_format=QDQ)``): ``DequantizeLinear(W_q)`` feeding a
  MatMul (or a Gemm's transposed weight) becomes the Dense's int8 weight; an activation
  ``QuantizeLinear -> DequantizeLinear`` pair in front of it becomes the Dense's static
  input grid (x_scale, x_zero_point: the same codes onnxruntime computes); a pair after it
  becomes its output grid (y_scale, y_zero_point), as ``QLinearMatMul`` rounds its output.
- ``com.microsoft::MatMulNBits`` (4 bits): ``matmul_nbits_weight`` builds the q4 weight at
  import; the codes and zero points are carried over exactly, the scales rounded to f16.

Both ONNX spellings of a per-tensor quantize/dequantize are read: ``QuantizeLinear`` /
``DequantizeLinear`` (inputs scale, zero point) and the int8 CNN path's ``Quantize`` /
``Dequantize`` (attrs scale, zero_point on the int8 grid), so the pass order against that
path does not matter. uint8 codes are the int8 ones shifted by 128 (zero point too).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import _core
from ..errors import UnsupportedOpError
from ..ir import Graph, Node, Tensor
from .cleanup import eliminate_dead_code
from .fold import _dequantize_linear
from .quantize import int8_encoding

#: ops that mark a pre-quantized model (the passes below run only when one is present)
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger"}
_Q = ("QuantizeLinear", "Quantize")
_DQ = ("DequantizeLinear", "Dequantize")
_CONV_OPS = {"Conv", "ConvInteger", "QConv", "QDepthwiseConv"}


def _note(graph: Graph, text: str) -> None:
    graph.metadata.setdefault("convert_notes", []).append(text)


def _scalar_const(graph: Graph, name: str) -> np.ndarray | None:
    a = graph.const(name) if name else None
    return a if a is not None and a.size == 1 else None


def _code_offset(dtype: np.dtype) -> int | None:
    """What to add to a code of this dtype to put it on the int8 grid."""
    if dtype == np.int8:
        return 0
    if dtype == np.uint8:
        return -128
    return None


def _grid(graph: Graph, node: Node | None, prod: dict[str, Node]) -> tuple[float, int] | None:
    """(scale, zero point on the int8 grid) of a per-tensor quantize/dequantize node, or None."""
    if node is None:
        return None
    if node.op in ("Quantize", "Dequantize"):
        return float(node.attrs["scale"]), int(node.attrs["zero_point"])
    if node.op not in _Q + _DQ:
        return None
    s = _scalar_const(graph, node.inputs[1] if len(node.inputs) > 1 else "")
    if s is None or s.dtype != np.float32 or not (np.isfinite(s).all() and float(s.reshape(-1)[0]) > 0):
        return None
    zname = node.inputs[2] if len(node.inputs) > 2 else ""
    if zname:
        z = _scalar_const(graph, zname)
        off = None if z is None else _code_offset(z.dtype)
        if z is None or off is None:
            return None
        zp = int(z.reshape(-1)[0]) + off
    elif node.op == "QuantizeLinear":
        zp = -128  # no zero point: uint8 codes, zero point 0
    else:  # DequantizeLinear without a zero point: the codes' own type decides
        src = prod.get(node.inputs[0])
        if node.inputs[0] in graph.tensors:
            off = _code_offset(graph.tensors[node.inputs[0]].array().dtype)
        elif src is not None and src.op == "Quantize":
            off = 0
        elif src is not None and src.op == "QuantizeLinear":
            g = _grid(graph, src, prod)
            off = None if g is None or (len(src.inputs) > 2 and src.inputs[2]) else -128
            if off is None and g is not None:
                zsrc = graph.const(src.inputs[2])
                off = _code_offset(zsrc.dtype) if zsrc is not None else None
        else:
            off = None
        if off is None:
            return None
        zp = off
    return float(s.reshape(-1)[0]), int(zp)


# ---- weights ---------------------------------------------------------------------------------

def qs8_weight(name: str, codes: np.ndarray, scales: np.ndarray, meta: dict) -> Tensor:
    """Int8 codes [K, N] in [-127, 127] and per-column scales [N] as a ``qs8-n16k4`` tensor
    (``qs7-n16k4`` when every code is in [-64, 64], as onnxruntime's ``reduce_range`` gives)."""
    k, n = codes.shape
    q = np.ascontiguousarray(codes, dtype=np.int8)
    packed = _core.pack_qs8(q, np.ascontiguousarray(scales, np.float32))
    return Tensor(name, packed, "float32", (int(k), int(n)), int8_encoding(q), dict(meta))


def _dq_weight(graph: Graph, dq: Node | None, transposed: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """DequantizeLinear of a constant 2-D int8/uint8 matrix, per tensor or per output column:
    (codes minus zero point as int32 [K, N], scales float32 [N]); None if it is not one."""
    if dq is None or dq.op != "DequantizeLinear":
        return None
    q = graph.const(dq.inputs[0])
    s = graph.const(dq.inputs[1]) if len(dq.inputs) > 1 else None
    if q is None or s is None or q.ndim != 2 or _code_offset(q.dtype) is None or s.dtype != np.float32:
        return None
    zname = dq.inputs[2] if len(dq.inputs) > 2 else ""
    z = graph.const(zname) if zname else np.zeros(s.shape, q.dtype)
    if z is None or z.dtype != q.dtype or z.shape != s.shape or not np.isfinite(s).all():
        return None
    out_axis = 0 if transposed else 1
    if s.size != 1:
        axis = int(dq.attrs.get("axis", 1)) % 2
        if s.ndim != 1 or axis != out_axis or s.size != q.shape[out_axis]:
            return None  # per input channel (or blocked): no per-column form
    shape = (1, -1) if out_axis == 1 else (-1, 1)
    codes = q.astype(np.int32) - z.reshape(shape).astype(np.int32)
    scales = np.broadcast_to(s.reshape(shape), q.shape)[0 if out_axis == 1 else slice(None),
                                                          slice(None) if out_axis == 1 else 0]
    if transposed:
        codes = codes.T
    return np.ascontiguousarray(codes), np.ascontiguousarray(scales, dtype=np.float32).reshape(-1)


def _dequantize_const(graph: Graph, dq: Node) -> np.ndarray | None:
    """ONNX DequantizeLinear of constants (per tensor or per axis) in float32, or None when its
    inputs are not constants of a shape the op allows (the node is then left as it is)."""
    x = graph.const(dq.inputs[0])
    s = graph.const(dq.inputs[1]) if len(dq.inputs) > 1 else None
    if x is None or s is None or s.dtype != np.float32 or x.dtype.kind not in "iu":
        return None
    z = graph.const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else np.zeros((), x.dtype)
    if z is None or z.size not in (1, s.size):
        return None
    if s.size > 1 and (x.ndim == 0 or s.ndim != 1 or s.size != x.shape[int(dq.attrs.get("axis", 1)) % x.ndim]):
        return None
    if s.size > 1 and z.size == 1:
        z = np.broadcast_to(z.reshape(-1), s.shape)
    return _dequantize_linear([x, s, z], dq.attrs)


def matmul_nbits_weight(name: str, node_name: str, a: dict[str, Any], b: np.ndarray | None, scales: np.ndarray | None,
                        zeros: np.ndarray | None, g_idx: np.ndarray | None, opset: int) -> Tensor:
    """com.microsoft MatMulNBits' constant inputs as a lowbit q4 weight [K, N]:
    B [N, ceil(K / bs), bs / 2] uint8 (two codes a byte, low nibble first), scales [N * nb],
    zero points uint8 [N * ceil(nb / 2)] (two a byte, low first; absent = 8).
    Codes and zero points are carried over; scales are rounded to f16."""
    def unsupported(what: str, key: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"MatMulNBits '{node_name}': {what}", {f"com.microsoft::MatMulNBits({key})": [node_name]},
                                  opset)

    bits, bs = int(a.get("bits", 4)), int(a.get("block_size", 0))
    k, n = int(a.get("K", 0)), int(a.get("N", 0))
    if bits != 4:
        raise unsupported(f"bits={bits}; lowbit's 4-bit encodings take bits=4", f"bits={bits}")
    if bs not in (32, 64, 128):
        raise unsupported(f"block_size={bs}; lowbit's groups are 32, 64 or 128 along K", f"block_size={bs}")
    if not (0 < k <= 131072 and 0 < n <= (1 << 24)):
        raise unsupported(f"K={k}, N={n} out of range (K <= 131072)", "shape")
    nb = -(-k // bs)
    if b is None or scales is None:
        raise unsupported("B and scales must be constants (initializers)", "runtime weight")
    if b.dtype != np.uint8 or b.size != n * nb * bs // 2:
        raise unsupported(f"B must be uint8 [N, {nb}, {bs // 2}], got {b.dtype} {list(b.shape)}", "B")
    if scales.dtype != np.float32 or scales.size != n * nb:
        raise unsupported(f"scales must be float32 with N * {nb} entries, got {scales.dtype} {list(scales.shape)}",
                          "scales")
    if g_idx is not None and not np.array_equal(g_idx.reshape(-1), np.arange(k) // bs):
        raise unsupported("a g_idx that reorders K (act-order) is not supported", "g_idx")
    s = scales.reshape(n, nb).astype(np.float32)
    if not np.isfinite(s).all() or np.abs(s).max(initial=0) > 65504:
        raise unsupported("scales beyond the f16 range lowbit stores them in", "scales")
    raw = b.reshape(n, nb * bs // 2)
    codes = np.empty((n, nb * bs), np.uint8)
    codes[:, 0::2] = raw & 15
    codes[:, 1::2] = raw >> 4
    codes = np.ascontiguousarray(codes[:, :k].T)  # [K, N]
    if zeros is None:
        z = None
    elif zeros.dtype == np.uint8 and zeros.size == n * (-(-nb // 2)):
        zr = zeros.reshape(n, -1)
        z = np.empty((n, 2 * zr.shape[1]), np.uint8)
        z[:, 0::2] = zr & 15
        z[:, 1::2] = zr >> 4
        z = np.ascontiguousarray(z[:, :nb].T)  # [nb, N]
    elif zeros.dtype == np.float32 and zeros.size == n * nb and np.array_equal(zeros, np.rint(zeros)) \
            and zeros.min() >= 0 and zeros.max() <= 15:
        z = np.ascontiguousarray(zeros.reshape(n, nb).T.astype(np.uint8))
    else:
        raise unsupported(f"zero points must be packed uint8 [N * {-(-nb // 2)}] (or integral floats in [0, 15]), "
                          f"got {zeros.dtype} {list(zeros.shape)}", "zero_points")
    symmetric = z is None or bool((z == 8).all())
    s16 = s.T.astype(np.float16)  # [nb, N]
    kind = "sym" if symmetric else "asym"
    packed = _core.pack_q4(codes, np.ascontiguousarray(s16).view(np.uint16), None if symmetric else z, None, kind, bs)
    rel = np.abs(s16.astype(np.float32) - s.T) / np.maximum(np.abs(s.T), np.float32(1e-30))
    meta = {"quant": "int4", "group": bs, "symmetric": symmetric, "source": "onnx MatMulNBits",
            "scale_f16_max_rel_error": float(rel.max(initial=0.0))}
    return Tensor(name, packed, "float32", (k, n), f"q4-g{bs}-{kind}-n16k8", meta)


# ---- the passes ------------------------------------------------------------------------------

def lower_quantized_matmuls(outliers: int = 1) -> Callable[[Graph], Graph]:
    """Returns the pass that maps the quantized MatMul patterns above onto Dense layers
    (``outliers`` for those with dynamic activations), folds the remaining dequantized
    constants that no convolution reads, and sets ``outliers`` on imported 4-bit layers."""

    def lower_quantized_matmuls(graph: Graph) -> Graph:
        _lower_dynamic(graph, outliers)
        _lower_qdq(graph, outliers)
        _dequantize_gathers(graph)
        _fold_dequantized_constants(graph)
        for n in graph.nodes:  # MatMulNBits layers (built at import): dynamic activations
            t = graph.tensors.get(n.inputs[1]) if n.op == "Dense" and len(n.inputs) > 1 else None
            if t is not None and t.encoding.startswith("q4") and outliers and "x_scale" not in n.attrs:
                n.attrs.setdefault("outliers", outliers)
        return graph

    return lower_quantized_matmuls


def _replace(graph: Graph, replaced: dict[int, Node], removed: set[int]) -> None:
    graph.nodes = [replaced.get(i, n) for i, n in enumerate(graph.nodes) if i not in removed or i in replaced]


def _lower_dynamic(graph: Graph, outliers: int) -> None:
    prod, cons, outs = graph.producers(), graph.consumers(), graph.output_names()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    replaced: dict[int, Node] = {}
    removed: set[int] = set()

    def sole(v: str, op: str) -> Node | None:
        c = cons.get(v, [])
        return c[0] if len(c) == 1 and c[0].op == op and v not in outs else None

    for mm in graph.nodes:
        if mm.op != "MatMulInteger":
            continue
        dql = prod.get(mm.inputs[0])
        if dql is None or dql.op != "DynamicQuantizeLinear" or dql.outputs[0] != mm.inputs[0]:
            continue
        if len(mm.inputs) < 3 or mm.inputs[2] != dql.outputs[2]:
            continue  # the activation zero point must be the one DynamicQuantizeLinear computed
        w = graph.const(mm.inputs[1])
        if w is None or w.ndim != 2 or _code_offset(w.dtype) is None:
            continue
        wz = graph.const(mm.inputs[3]) if len(mm.inputs) > 3 and mm.inputs[3] else np.zeros(1, w.dtype)
        if wz is None or wz.dtype != w.dtype or wz.size not in (1, w.shape[1]):
            continue
        cast = sole(mm.outputs[0], "Cast")
        if cast is None or cast.attrs.get("to") != "float32":
            continue
        mul = sole(cast.outputs[0], "Mul")
        if mul is None or len(mul.inputs) != 2:
            continue
        smul = prod.get(mul.inputs[1] if mul.inputs[0] == cast.outputs[0] else mul.inputs[0])
        if smul is None or smul.op != "Mul" or dql.outputs[1] not in smul.inputs:
            continue
        ws = graph.const(smul.inputs[1] if smul.inputs[0] == dql.outputs[1] else smul.inputs[0])
        if ws is None or ws.dtype != np.float32 or ws.size not in (1, w.shape[1]) or not np.isfinite(ws).all():
            continue
        codes = w.astype(np.int32) - wz.reshape(1, -1).astype(np.int32)
        scales = np.broadcast_to(ws.reshape(-1), (w.shape[1],)).astype(np.float32)
        wname = graph.unique_name(f"{mm.name}.weight")
        x = dql.inputs[0]
        if codes.min(initial=0) < -127 or codes.max(initial=0) > 127:
            graph.tensors[wname] = Tensor.from_array(wname, (codes.astype(np.float32) * scales).astype(np.float32))
            node = Node("Dense", [x, wname], list(mul.outputs), {"activation": 0}, mm.name)
            _note(graph, f"{mm.name}: int8 weight codes minus zero point leave [-127, 127]: kept as float32 "
                         "(quant='int8' re-quantizes it)")
        else:
            graph.tensors[wname] = qs8_weight(wname, codes, scales, {"quant": "int8", "source": "onnx MatMulInteger"})
            attrs = {"activation": 0, **({"outliers": outliers} if outliers else {})}
            node = Node("Dense", [x, wname], list(mul.outputs), attrs, mm.name)
        replaced[index[id(mul)]] = node
        removed.update({index[id(mm)], index[id(cast)], index[id(mul)]})
    _replace(graph, replaced, removed)


def _lower_qdq(graph: Graph, outliers: int) -> None:
    prod = graph.producers()
    for i, mm in enumerate(graph.nodes):
        if mm.op != "MatMul" or len(mm.inputs) != 2:
            continue
        a, b = mm.inputs
        bp = prod.get(b)
        if bp is None:
            continue
        transposed = bp.op == "Transpose" and list(bp.attrs.get("perm", [1, 0])) == [1, 0]
        dq = prod.get(bp.inputs[0]) if transposed else bp
        wt = _dq_weight(graph, dq, transposed)
        if wt is None:
            continue
        codes, scales = wt
        x = a
        attrs: dict[str, Any] = {"activation": 0}
        adq = prod.get(a)
        g = None
        if adq is not None and adq.op in _DQ and adq.inputs[0] not in graph.tensors:
            g = _grid(graph, adq, prod)
        if adq is not None and g is not None:
            q = prod.get(adq.inputs[0])
            if q is not None and q.op in _Q and _grid(graph, q, prod) == g and q.inputs[0] not in graph.tensors:
                x = q.inputs[0]  # quantizing x with the same grid gives the same codes: skip the pair
            attrs.update(x_scale=g[0], x_zero_point=g[1])
        elif outliers:
            attrs["outliers"] = outliers
        wname = graph.unique_name(f"{mm.name}.weight")
        if codes.min(initial=0) < -127 or codes.max(initial=0) > 127:
            graph.tensors[wname] = Tensor.from_array(wname, (codes.astype(np.float32) * scales).astype(np.float32))
            x, attrs = a, {"activation": 0}
            _note(graph, f"{mm.name}: int8 weight codes minus zero point leave [-127, 127]: kept as float32 "
                         "(quant='int8' re-quantizes it)")
        else:
            graph.tensors[wname] = qs8_weight(wname, codes, scales, {"quant": "int8", "source": "onnx QDQ"})
        graph.nodes[i] = Node("Dense", [x, wname], list(mm.outputs), attrs, mm.name)


#: Quantized lookup tables at least this large keep their 8-bit codes (smaller ones become float).
MIN_CODE_TABLE_ELEMENTS = 1 << 14


def _dequantize_gathers(graph: Graph) -> None:
    """``DequantizeLinear(Gather(table_q, ids))`` with a per-tensor grid (quantize_dynamic's
    embeddings): a large table keeps its 8-bit codes and the rows are dequantized after the
    lookup, ``Mul(Sub(Cast(Gather(table_q, ids)), zero_point), scale)`` (the Sub only for a
    nonzero zero point); a small one becomes ``Gather(dequantized table, ids)``. Both give
    DequantizeLinear's values bit for bit: float(q) - float(zp) is exact for 8-bit codes,
    then the same multiply by the float32 scale."""
    prod, cons = graph.producers(), graph.consumers()
    removed: set[int] = set()
    added: dict[int, list[Node]] = {}
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    for dq in graph.nodes:
        if dq.op != "DequantizeLinear" or dq.inputs[0] in graph.tensors:
            continue
        g = prod.get(dq.inputs[0])
        if g is None or g.op != "Gather" or len(cons.get(dq.inputs[0], [])) != 1 or dq.inputs[0] in graph.output_names():
            continue
        if any(graph.const(i) is None for i in dq.inputs[1:] if i) or graph.const(g.inputs[0]) is None:
            continue
        s = graph.const(dq.inputs[1])
        if s is None or s.size != 1:
            continue
        codes = graph.const(g.inputs[0])
        zp = graph.const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else None
        if (codes is not None and codes.dtype in (np.int8, np.uint8) and codes.size >= MIN_CODE_TABLE_ELEMENTS
                and int(g.attrs.get("axis", 0)) == 0 and (zp is None or (zp.size == 1 and zp.dtype == codes.dtype))
                and s.dtype == np.float32):
            base = dq.outputs[0]
            f, c = graph.unique_name(f"{base}.codes_f32"), graph.unique_name(f"{base}.centered")
            sname = graph.unique_name(f"{base}.scale")
            graph.tensors[sname] = Tensor.from_array(sname, s.reshape(()).astype(np.float32))
            g.outputs = [graph.unique_name(f"{base}.codes")]
            chain = [Node("Cast", [g.outputs[0]], [f], {"to": "float32", "bool": 0}, f"{dq.name}/cast")]
            if zp is not None and int(zp.reshape(-1)[0]) != 0:
                zname = graph.unique_name(f"{base}.zero_point")
                graph.tensors[zname] = Tensor.from_array(zname, np.array(float(zp.reshape(-1)[0]), np.float32))
                chain.append(Node("Sub", [f, zname], [c], {}, f"{dq.name}/zero_point"))
            else:
                c = f
            chain.append(Node("Mul", [c, sname], list(dq.outputs), {}, dq.name))
            added[index[id(dq)]] = chain
            continue
        table = _dequantize_const(graph, Node("DequantizeLinear", [g.inputs[0]] + dq.inputs[1:], ["-"], dq.attrs))
        if table is None:
            continue
        tname = graph.unique_name(f"{g.inputs[0]}.dequantized")
        graph.tensors[tname] = Tensor.from_array(tname, table)
        g.inputs[0] = tname
        g.outputs = list(dq.outputs)
        removed.add(index[id(dq)])
    nodes: list[Node] = []
    for i, n in enumerate(graph.nodes):
        if i in added:
            nodes.extend(added[i])
        elif i not in removed:
            nodes.append(n)
    graph.nodes = nodes


def _fold_dequantized_constants(graph: Graph) -> None:
    """DequantizeLinear of constants read by no convolution (biases, fallbacks) -> float
    constants; a MatMul whose weight became constant this way -> Dense."""
    cons = graph.consumers()
    outs = graph.output_names()
    kept = []
    for n in graph.nodes:
        if n.op == "DequantizeLinear" and n.outputs[0] not in outs and \
                not any(c.op in _CONV_OPS for c in cons.get(n.outputs[0], [])):
            v = _dequantize_const(graph, n)
            if v is not None:
                graph.tensors[n.outputs[0]] = Tensor.from_array(n.outputs[0], v)
                continue
        kept.append(n)
    graph.nodes = kept
    for n in graph.nodes:
        if n.op == "MatMul" and len(n.inputs) == 2 and n.inputs[0] not in graph.tensors:
            w = graph.const(n.inputs[1])
            if w is not None and w.ndim == 2 and w.dtype == np.float32:
                n.op, n.attrs = "Dense", {"activation": 0}


def absorb_output_grids(graph: Graph) -> Graph:
    """``Dense (int8 or 4-bit) -> QuantizeLinear -> DequantizeLinear`` with one per-tensor
    grid: the rounding becomes the Dense's output grid (y_scale, y_zero_point). Then any
    quantize/dequantize op this build cannot run is reported."""
    prod, cons, outs = graph.producers(), graph.consumers(), graph.output_names()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    removed: set[int] = set()
    for d in graph.nodes:
        if d.op != "Dense" or "y_scale" in d.attrs or len(d.inputs) < 2:
            continue
        t = graph.tensors.get(d.inputs[1])
        if t is None or t.encoding in ("raw", "f32-n16"):
            continue
        c = cons.get(d.outputs[0], [])
        if len(c) != 1 or c[0].op not in _Q or d.outputs[0] in outs:
            continue
        q = c[0]
        c2 = cons.get(q.outputs[0], [])
        if len(c2) != 1 or c2[0].op not in _DQ or q.outputs[0] in outs:
            continue
        g = _grid(graph, q, prod)
        if g is None or _grid(graph, c2[0], prod) != g:
            continue
        d.attrs.update(y_scale=g[0], y_zero_point=g[1])
        d.outputs = list(c2[0].outputs)
        removed.update({index[id(q)], index[id(c2[0])]})
    graph.nodes = [n for i, n in enumerate(graph.nodes) if i not in removed]
    graph = eliminate_dead_code(graph)  # what the patterns replaced (scale products, dead quantizers)
    left: dict[str, list[str]] = {}
    for n in graph.nodes:
        if n.op in QUANT_OPS:
            left.setdefault(n.op, []).append(n.name)
    if left:
        why = {"MatMulInteger": "outside the DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale) pattern",
               "DynamicQuantizeLinear": "feeding something other than MatMulInteger",
               "QuantizeLinear": "on a run-time value not next to a MatMul/Gemm",
               "DequantizeLinear": "not next to a MatMul/Gemm (int8 convolutions map elsewhere)"}
        raise UnsupportedOpError("quantized ops lowbit cannot map: " + "; ".join(
            f"{op} {why[op]} (node{'s' if len(ns) > 1 else ''} {', '.join(repr(x) for x in ns[:5])})"
            for op, ns in sorted(left.items())), left)
    return graph
