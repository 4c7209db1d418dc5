"""ONNX importer: an ``onnx.ModelProto`` (or a path) to a lowbit ``Graph``.

Each supported op has a small handler that emits lowbit IR nodes. Every
unsupported op in the model is collected first and reported in one
``UnsupportedOpError``. ``onnx`` is imported lazily (it is an optional extra).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Graph, Node, Tensor, ValueInfo

MIN_OPSET, MAX_OPSET = 11, 23
MAX_GRAPH_NODES = 1 << 20


def _require_onnx():
    try:
        import onnx  # noqa: F401
        from onnx import numpy_helper  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("importing ONNX models needs the 'onnx' package: pip install 'lowbit[onnx]'") from None
    import onnx
    return onnx


class _Ctx:
    """State of one import: the graph being built and the ONNX opset."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[Node] = []
        self.tensors: dict[str, Tensor] = {}
        self._names: set[str] = set()

    def const(self, name: str) -> np.ndarray | None:
        t = self.tensors.get(name)
        return None if t is None else t.array()

    def add_const(self, base: str, arr: np.ndarray | np.generic) -> str:
        name = self.fresh(base)
        self.tensors[name] = Tensor.from_array(name, arr)
        return name

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._names or name in self.tensors:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def emit(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> None:
        self.nodes.append(Node(op, list(inputs), list(outputs), attrs, name))


#: AttributeProto type of every attribute the handlers read (the ONNX spec's, for each op that
#: has it): a model that stores, say, a tensor where a float belongs, or an attribute of no type
#: (UNDEFINED), is refused by name instead of reaching int().
_ATTR_TYPES = {"alpha": "FLOAT", "beta": "FLOAT", "transA": "INT", "transB": "INT", "approximate": "STRING",
               "axis": "INT", "epsilon": "FLOAT", "allowzero": "INT", "perm": "INTS", "value": "TENSOR",
               "value_float": "FLOAT", "value_floats": "FLOATS", "value_int": "INT", "value_ints": "INTS",
               "bits": "INT", "block_size": "INT", "K": "INT", "N": "INT", "accuracy_level": "INT",
               "auto_pad": "STRING", "kernel_shape": "INTS", "strides": "INTS", "pads": "INTS", "dilations": "INTS",
               "group": "INT", "ceil_mode": "INT", "count_include_pad": "INT", "training_mode": "INT",
               "keepdims": "INT", "noop_with_empty_axes": "INT", "axes": "INTS", "split": "INTS", "start": "INT",
               "end": "INT", "to": "INT"}


def _storable(arr: np.ndarray) -> np.ndarray:
    """Maps numpy dtypes to the ones lowbit stores: float64 -> float32, bool -> uint8 (0/1)."""
    if arr.dtype == np.float64:
        return arr.astype(np.float32)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    return arr


def _attrs(node: Any) -> dict[str, Any]:
    import onnx
    out = {}
    for a in node.attribute:
        want = _ATTR_TYPES.get(a.name)
        got = onnx.AttributeProto.AttributeType.Name(a.type) if a.type in onnx.AttributeProto.AttributeType.values() \
            else str(a.type)
        if want is not None and got != want:
            raise ValueError(f"node '{node.name}' ({node.op_type}): attribute '{a.name}' must be {want}, got {got}")
        if a.type == onnx.AttributeProto.UNDEFINED:
            raise ValueError(f"node '{node.name}' ({node.op_type}): attribute '{a.name}' has no type (UNDEFINED)")
        try:
            out[a.name] = onnx.helper.get_attribute_value(a)
        except ValueError as e:  # a reference attribute (functions only) or an unknown type number
            raise ValueError(f"node '{node.name}' ({node.op_type}): attribute '{a.name}' of type {got} "
                             f"cannot be read: {str(e).splitlines()[0]}") from None
    return out


#: (min inputs, max inputs, min outputs, max outputs, optional input positions) per ONNX op.
_ARITY = {"MatMul": (2, 2, 1, 1, ()), "Gemm": (2, 3, 1, 1, (2,)), "LayerNormalization": (2, 3, 1, 3, (2,)),
          "Reshape": (2, 2, 1, 1, ()), "Constant": (0, 0, 1, 1, ())}
for _op in ("Add", "Sub", "Mul", "Div", "Pow"):
    _ARITY[_op] = (2, 2, 1, 1, ())
for _op in ("Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Reciprocal", "Exp", "Neg", "Abs", "Identity", "Gelu",
            "Softmax", "Flatten", "Transpose"):
    _ARITY[_op] = (1, 1, 1, 1, ())


def _text_or_replace(value: Any) -> str:
    """Informational strings (producer name): invalid UTF-8 is replaced, not fatal."""
    return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")


def _check_text(value: Any, what: str) -> None:
    # protobuf hands back bytes for a string field that is not valid UTF-8
    if not isinstance(value, str):
        raise ValueError(f"{what} {value!r} is not valid UTF-8")


def _schema_arity(op_type: str, opset: int) -> tuple[int, int, int, int, tuple[int, ...]]:
    """Arity of an op without an _ARITY entry, from ONNX's own schema at this opset."""
    import onnx
    try:
        s = onnx.defs.get_schema(op_type, opset)
    except Exception:  # not defined at this opset: the handler validates what it reads
        return 0, 1 << 30, 1, 1 << 30, tuple(range(64))
    opt = onnx.defs.OpSchema.FormalParameterOption.Optional
    optional = tuple(i for i, f in enumerate(s.inputs) if f.option == opt)
    return s.min_input, s.max_input, s.min_output, s.max_output, optional


def _check_arity(node: Any, opset: int = 17) -> None:
    """Rejects a node whose input/output count or required names do not fit its op
    (from _ARITY, else from ONNX's schema of the op at this opset)."""
    _check_text(node.name, "node name")
    where = f"node '{node.name}' ({node.op_type})"
    for name in list(node.input) + list(node.output):
        _check_text(name, f"{where}: value name")
    if not node.output or not node.output[0]:
        raise ValueError(f"{where} has no (named) output")
    arity = _ARITY.get(node.op_type)
    lo, hi, olo, ohi, optional = arity if arity is not None else _schema_arity(node.op_type, opset)
    if not lo <= len(node.input) <= hi:
        raise ValueError(f"{where} has {len(node.input)} inputs, expected "
                         + (f"{lo}" if lo == hi else f"{lo} to {hi}"))
    if not olo <= len(node.output) <= ohi:
        raise ValueError(f"{where} has {len(node.output)} outputs, expected "
                         + (f"{olo}" if olo == ohi else f"{olo} to {ohi}"))
    for i, name in enumerate(node.input):
        if not name and i not in optional:
            raise ValueError(f"{where}: input {i} is required but empty")


def _check_dataflow(g: Any, defined: set[str]) -> None:
    """Every node input must be a graph input, an initializer or the output of an
    earlier node, and every value is defined once. Tells a missing value (e.g. a
    missing initializer) apart from one produced later (cycle or unsorted graph)."""
    producer: dict[str, str] = {}
    for n in g.node:
        for o in n.output:
            if not o:
                continue
            if o in producer or o in defined:
                first = f"node '{producer[o]}'" if o in producer else "a graph input or initializer"
                raise ValueError(f"value '{o}' is defined twice: by {first} and by node '{n.name}' ({n.op_type})")
            producer[o] = n.name
    seen = set(defined)
    for n in g.node:
        for i in n.input:
            if i and i not in seen:
                if i in producer:
                    raise ValueError(f"node '{n.name}' ({n.op_type}) reads '{i}', which node '{producer[i]}' produces "
                                     "later: the graph is cyclic or not in topological order")
                raise ValueError(f"node '{n.name}' ({n.op_type}) reads '{i}', which is not a graph input, an "
                                 "initializer or any node's output (a missing initializer?)")
        seen.update(o for o in n.output if o)
    for o in g.output:
        if o.name not in seen:
            raise ValueError(f"graph output '{o.name}' is not produced by any node, input or initializer")


# -- handlers: (ctx, node, attrs, inputs, outputs) -> None --------------------

def _h_matmul(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    w = ctx.const(ins[1])
    if w is not None and w.ndim == 2 and w.dtype == np.float32 and ctx.const(ins[0]) is None:
        wname = ctx.add_const(f"{node.name or outs[0]}.weight", w)
        ctx.emit("Dense", [ins[0], wname], outs, node.name, activation=0)
    else:
        ctx.emit("MatMul", ins[:2], outs, node.name)


def _h_gemm(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    trans_a, trans_b = int(a.get("transA", 0)), int(a.get("transB", 0))
    base = node.name or outs[0]
    x = ins[0]
    if trans_a:
        t = ctx.fresh(f"{base}.At")
        ctx.emit("Transpose", [x], [t], f"{base}/transA", perm=[1, 0])
        x = t
    c_name = ins[2] if len(ins) > 2 and ins[2] else None
    w = ctx.const(ins[1])
    if w is not None and w.ndim == 2:
        w = (w.T if trans_b else w) * np.float32(alpha)
        n = w.shape[1]
        bias = None
        if c_name is not None:
            c = ctx.const(c_name)
            if c is not None and c.size in (1, n) and (c.ndim <= 1 or (c.ndim == 2 and c.shape[0] == 1 and c.size == n)
                                                       or c.size == 1):
                bias = np.broadcast_to(c.reshape(-1) * np.float32(beta), (n,)).astype(np.float32)
        wname = ctx.add_const(f"{base}.weight", np.ascontiguousarray(w, dtype=np.float32))
        inputs = [x, wname]
        if bias is not None:
            inputs.append(ctx.add_const(f"{base}.bias", bias))
        if c_name is not None and bias is None:
            y = ctx.fresh(f"{base}.ab")
            ctx.emit("Dense", inputs, [y], base, activation=0)
            cc = c_name
            if beta != 1.0:
                cc = ctx.fresh(f"{base}.betaC")
                ctx.emit("Mul", [c_name, ctx.add_const(f"{base}.beta", np.float32(beta))], [cc], f"{base}/beta")
            ctx.emit("Add", [y, cc], outs, f"{base}/addC")
        else:
            ctx.emit("Dense", inputs, outs, base, activation=0)
        return
    b = ins[1]
    if trans_b:
        t = ctx.fresh(f"{base}.Bt")
        ctx.emit("Transpose", [b], [t], f"{base}/transB", perm=[1, 0])
        b = t
    y = ctx.fresh(f"{base}.ab") if (alpha != 1.0 or c_name) else outs[0]
    ctx.emit("MatMul", [x, b], [y], base)
    if alpha != 1.0:
        y2 = ctx.fresh(f"{base}.alpha") if c_name else outs[0]
        ctx.emit("Mul", [y, ctx.add_const(f"{base}.alpha_c", np.float32(alpha))], [y2], f"{base}/alpha")
        y = y2
    if c_name:
        cc = c_name
        if beta != 1.0:
            cc = ctx.fresh(f"{base}.betaC")
            ctx.emit("Mul", [c_name, ctx.add_const(f"{base}.beta", np.float32(beta))], [cc], f"{base}/beta")
        ctx.emit("Add", [y, cc], outs, f"{base}/addC")


def _simple(op: str) -> Callable:
    def h(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
        ctx.emit(op, ins, outs[:1], node.name)
    return h


def _h_gelu(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    approx = a.get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    if approx != "none":
        raise UnsupportedOpError(f"Gelu(approximate='{approx}') is not supported (node '{node.name}')",
                                 {"Gelu(approximate=tanh)": [node.name]}, ctx.opset)
    ctx.emit("Gelu", ins[:1], outs[:1], node.name)


def _h_softmax(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    if ctx.opset >= 13:
        ctx.emit("Softmax", ins[:1], outs[:1], node.name, axis=int(a.get("axis", -1)), legacy=0)
    else:  # before opset 13, Softmax normalizes over all axes from `axis` on
        ctx.emit("Softmax", ins[:1], outs[:1], node.name, axis=int(a.get("axis", 1)), legacy=1)


def _h_layernorm(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    ctx.emit("LayerNormalization", ins[:3], [o for o in outs if o] if all(outs) else outs[:1], node.name,
             axis=int(a.get("axis", -1)), epsilon=float(a.get("epsilon", 1e-5)))


def _h_reshape(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    shape = _const_ints(ctx, ins[1])
    if shape is not None:
        ctx.emit("Reshape", ins[:1], outs, node.name, shape=shape, allowzero=int(a.get("allowzero", 0)))
    else:
        ctx.emit("Reshape", ins[:2], outs, node.name, allowzero=int(a.get("allowzero", 0)))


def _h_flatten(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    ctx.emit("Flatten", ins[:1], outs, node.name, axis=int(a.get("axis", 1)))


def _h_transpose(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    attrs = {"perm": [int(p) for p in a["perm"]]} if "perm" in a else {}
    ctx.emit("Transpose", ins[:1], outs, node.name, **attrs)


def _h_constant(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    from onnx import numpy_helper
    if "value" in a:
        try:
            arr = numpy_helper.to_array(a["value"])
        except Exception as e:  # malformed TensorProto: onnx raises KeyError/ValueError/TypeError
            raise ValueError(f"Constant node '{node.name}': value cannot be read: {type(e).__name__}: {e}") from None
    elif "value_float" in a:
        arr = np.array(a["value_float"], np.float32)
    elif "value_floats" in a:
        arr = np.array(a["value_floats"], np.float32)
    elif "value_int" in a:
        arr = np.array(a["value_int"], np.int64)
    elif "value_ints" in a:
        arr = np.array(a["value_ints"], np.int64)
    else:
        raise UnsupportedOpError(f"Constant node '{node.name}' uses an unsupported value attribute",
                                 {"Constant(sparse/string)": [node.name]}, ctx.opset)
    ctx.tensors[outs[0]] = Tensor.from_array(outs[0], _storable(arr))
    ctx._names.add(outs[0])



# -- CNN ops ------------------------------------------------------------------

def _window_attrs(a: dict) -> dict:
    """Sliding-window attributes common to Conv and the pools (2-D)."""
    out: dict[str, Any] = {}
    for k in ("kernel_shape", "strides", "pads", "dilations"):
        if k in a:
            out[k] = [int(v) for v in a[k]]
    ap = a.get("auto_pad", b"NOTSET")
    out["auto_pad"] = ap.decode() if isinstance(ap, bytes) else str(ap)
    return out


def _h_conv(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    w = ctx.const(ins[1])
    if w is None:  # a QDQ model: the weight is DequantizeLinear of constant integer codes
        w = _dequantized_const(ctx, ins[1])
    if w is None or w.ndim != 4:
        raise UnsupportedOpError(f"Conv '{node.name}': only 2-D convolutions with a constant weight are supported",
                                 {"Conv(non-2D or runtime weight)": [node.name]}, ctx.opset)
    attrs = _window_attrs(a)
    attrs["kernel_shape"] = [int(w.shape[2]), int(w.shape[3])]
    attrs["group"] = int(a.get("group", 1))
    ctx.emit("Conv", [i for i in ins[:3]], outs[:1], node.name, **attrs)


def _dequantized_const(ctx: _Ctx, name: str) -> np.ndarray | None:
    """The integer codes behind ``name`` when an earlier DequantizeLinear of a constant produces it."""
    for n in reversed(ctx.nodes):
        if name in n.outputs:
            return ctx.const(n.inputs[0]) if n.op == "DequantizeLinear" else None
    return None


def _h_qdq(op: str) -> Callable:
    """QuantizeLinear / DequantizeLinear, kept as they are in the IR; the passes
    (passes/qconv.py: lower_qdq) map them onto lowbit's int8 ops, and constant
    folding dequantizes constant weights that no int8 op takes."""
    def h(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
        if int(a.get("block_size", 0)):
            raise UnsupportedOpError(f"{op} '{node.name}': blocked quantization is not supported",
                                     {f"{op}(block_size)": [node.name]}, ctx.opset)
        ctx.emit(op, ins[:3], outs[:1], node.name, axis=int(a.get("axis", 1)))
    return h


def _h_pool(op: str) -> Callable:
    def h(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
        attrs = _window_attrs(a)
        if len(attrs.get("kernel_shape", [])) != 2:
            raise UnsupportedOpError(f"{op} '{node.name}': only 2-D pooling is supported",
                                     {f"{op}(non-2D)": [node.name]}, ctx.opset)
        if len(outs) > 1 and outs[1]:
            raise UnsupportedOpError(f"MaxPool '{node.name}': the Indices output is not supported",
                                     {"MaxPool(Indices)": [node.name]}, ctx.opset)
        attrs["ceil_mode"] = int(a.get("ceil_mode", 0))
        if op == "AveragePool":
            attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
        ctx.emit(op, ins[:1], outs[:1], node.name, **attrs)
    return h


def _h_batchnorm(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    if int(a.get("training_mode", 0)) or (len(outs) > 1 and any(outs[1:])):
        raise UnsupportedOpError(f"BatchNormalization '{node.name}': training mode is not supported",
                                 {"BatchNormalization(training)": [node.name]}, ctx.opset)
    ctx.emit("BatchNormalization", ins[:5], outs[:1], node.name, epsilon=float(a.get("epsilon", 1e-5)))


def _h_clip(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    lo, hi = float("-inf"), float("inf")
    for k, name in ((1, "min"), (2, "max")):
        if len(ins) > k and ins[k]:
            v = ctx.const(ins[k])
            if v is None or v.size != 1:
                raise UnsupportedOpError(f"Clip '{node.name}': {name} must be a constant scalar",
                                         {"Clip(runtime bounds)": [node.name]}, ctx.opset)
            if k == 1:
                lo = float(v.reshape(-1)[0])
            else:
                hi = float(v.reshape(-1)[0])
    bounds = {k: v for k, v in (("min", lo), ("max", hi)) if np.isfinite(v)}  # absent = unbounded (JSON has no inf)
    ctx.emit("Clip", ins[:1], outs[:1], node.name, **bounds)


def _h_param_act(op: str, defaults: dict[str, float]) -> Callable:
    def h(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
        ctx.emit(op, ins[:1], outs[:1], node.name, **{k: float(a.get(k, d)) for k, d in defaults.items()})
    return h


# -- tensor / shape ops ---------------------------------------------------------

_ONNX_TO_DTYPE = {1: "float32", 11: "float32", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "uint8"}


def _const_ints(ctx: _Ctx, name: str) -> list[int] | None:
    if not name:
        return None
    v = ctx.const(name)
    return None if v is None else [int(x) for x in v.reshape(-1)]


def _h_axes_op(op: str) -> Callable:
    """Squeeze / Unsqueeze / ReduceMean / ReduceSum: constant axes become an attribute."""
    def h(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
        attrs: dict[str, Any] = {}
        if op.startswith("Reduce"):
            attrs["keepdims"] = int(a.get("keepdims", 1))
            attrs["noop_with_empty_axes"] = int(a.get("noop_with_empty_axes", 0))
        inputs = ins[:1]
        if "axes" in a:
            attrs["axes"] = [int(x) for x in a["axes"]]
        elif len(ins) > 1 and ins[1]:
            axes = _const_ints(ctx, ins[1])
            if axes is not None:
                attrs["axes"] = axes
            else:
                inputs = ins[:2]
        ctx.emit(op, inputs, outs[:1], node.name, **attrs)
    return h


def _h_split(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    attrs: dict[str, Any] = {"axis": int(a.get("axis", 0))}
    inputs = ins[:1]
    if "split" in a:
        attrs["split"] = [int(x) for x in a["split"]]
    elif len(ins) > 1 and ins[1]:
        sizes = _const_ints(ctx, ins[1])
        if sizes is not None:
            attrs["split"] = sizes
        else:
            inputs = ins[:2]
    ctx.emit("Split", inputs, outs, node.name, **attrs)


def _h_with_attrs(op: str, keys: dict[str, Any]) -> Callable:
    """Integer attributes `keys` with their defaults; a default of None marks a required one."""
    def h(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
        for k, d in keys.items():
            if d is None and k not in a:
                raise ValueError(f"node '{node.name}' ({node.op_type}): attribute '{k}' is required")
        ctx.emit(op, ins, outs[:1], node.name, **{k: int(a.get(k, d)) for k, d in keys.items()})
    return h


def _h_shape(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    attrs = {"start": int(a.get("start", 0))}
    if "end" in a:
        attrs["end"] = int(a["end"])
    ctx.emit("Shape", ins[:1], outs[:1], node.name, **attrs)


def _h_constant_of_shape(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    from onnx import numpy_helper
    dtype, value = "float32", 0.0
    if "value" in a:
        t = a["value"]
        if t.data_type not in _ONNX_TO_DTYPE:
            raise UnsupportedOpError(f"ConstantOfShape '{node.name}': element type {t.data_type} is not supported",
                                     {"ConstantOfShape(dtype)": [node.name]}, ctx.opset)
        dtype = _ONNX_TO_DTYPE[t.data_type]
        value = float(numpy_helper.to_array(t).reshape(-1)[0])
    ctx.emit("ConstantOfShape", ins[:1], outs[:1], node.name, dtype=dtype, value=value)


def _h_cast(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    to = int(a["to"])
    if to not in _ONNX_TO_DTYPE:
        raise UnsupportedOpError(f"Cast '{node.name}': target element type {to} is not supported",
                                 {f"Cast(to={to})": [node.name]}, ctx.opset)
    ctx.emit("Cast", ins[:1], outs[:1], node.name, to=_ONNX_TO_DTYPE[to], bool=int(to == 9))


HANDLERS: dict[str, Callable] = {
    "MatMul": _h_matmul,
    "Gemm": _h_gemm,
    "Add": _simple("Add"), "Sub": _simple("Sub"), "Mul": _simple("Mul"), "Div": _simple("Div"),
    "Pow": _simple("Pow"),
    "Relu": _simple("Relu"), "Sigmoid": _simple("Sigmoid"), "Tanh": _simple("Tanh"),
    "Erf": _simple("Erf"), "Sqrt": _simple("Sqrt"), "Reciprocal": _simple("Reciprocal"),
    "Exp": _simple("Exp"), "Neg": _simple("Neg"), "Abs": _simple("Abs"),
    "Identity": _simple("Identity"),
    "Gelu": _h_gelu,
    "Softmax": _h_softmax,
    "LayerNormalization": _h_layernorm,
    "Reshape": _h_reshape,
    "Flatten": _h_flatten,
    "Transpose": _h_transpose,
    "Constant": _h_constant,
    "Conv": _h_conv,
    "BatchNormalization": _h_batchnorm,
    "MaxPool": _h_pool("MaxPool"), "AveragePool": _h_pool("AveragePool"),
    "GlobalAveragePool": _simple("GlobalAveragePool"), "GlobalMaxPool": _simple("GlobalMaxPool"),
    "Clip": _h_clip,
    "LeakyRelu": _h_param_act("LeakyRelu", {"alpha": 0.01}),
    "HardSigmoid": _h_param_act("HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
    "HardSwish": _simple("HardSwish"),
    "Concat": _h_with_attrs("Concat", {"axis": None}),
    "Split": _h_split,
    "Slice": lambda ctx, node, a, ins, outs: ctx.emit("Slice", ins, outs[:1], node.name),
    "Gather": _h_with_attrs("Gather", {"axis": 0}),
    "GatherElements": _h_with_attrs("GatherElements", {"axis": 0}),
    "Squeeze": _h_axes_op("Squeeze"), "Unsqueeze": _h_axes_op("Unsqueeze"),
    "ReduceMean": _h_axes_op("ReduceMean"), "ReduceSum": _h_axes_op("ReduceSum"),
    "Shape": _h_shape,
    "ConstantOfShape": _h_constant_of_shape,
    "Cast": _h_cast,
    "Where": _simple("Where"), "Expand": _simple("Expand"), "Range": _simple("Range"),
    "Equal": _simple("Equal"), "Less": _simple("Less"), "Greater": _simple("Greater"),
    "LessOrEqual": _simple("LessOrEqual"), "GreaterOrEqual": _simple("GreaterOrEqual"),
    "And": _simple("And"), "Or": _simple("Or"), "Xor": _simple("Xor"), "Not": _simple("Not"),
}
# int8 CNNs in QDQ form (branch qconv; MatMul/Gemm QDQ, MatMulInteger and MatMulNBits are handled elsewhere)
HANDLERS.setdefault("QuantizeLinear", _h_qdq("QuantizeLinear"))
HANDLERS.setdefault("DequantizeLinear", _h_qdq("DequantizeLinear"))

# -- pre-quantized models (onnxruntime's quantize_dynamic / quantize_static / MatMulNBitsQuantizer) --
# DynamicQuantizeLinear and MatMulInteger stay as they are in the IR (as QuantizeLinear / DequantizeLinear
# do, above); passes/qmatmul.py maps them onto Dense layers with int8 weights (codes and scales carried over).
# com.microsoft MatMulNBits becomes a Dense with a 4-bit weight right here (all its inputs are constants).

def _h_keep(op: str) -> Callable:
    def h(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
        ctx.emit(op, ins, outs, node.name)
    return h


def _h_matmul_nbits(ctx: _Ctx, node: Any, a: dict, ins: list[str], outs: list[str]) -> None:
    """com.microsoft MatMulNBits (4 bits, blocks of 32/64/128 along K, optional uint8 zero
    points): the codes, zero points and scales go into lowbit's q4 encoding as they are;
    the scales are stored as f16 (the one rounding; see docs/import.md)."""
    from ..passes.qmatmul import matmul_nbits_weight
    ws = [ctx.const(i) if i else None for i in ins[1:]]
    wname = ctx.fresh(f"{node.name or outs[0]}.weight")
    tensor = matmul_nbits_weight(wname, node.name, a, ws[0], ws[1], ws[2] if len(ws) > 2 else None,
                                 ws[3] if len(ws) > 3 else None, ctx.opset)
    ctx.tensors[wname] = tensor
    inputs = [ins[0], wname]
    if len(ins) > 5 and ins[5]:
        b = ctx.const(ins[5])
        if b is None or b.dtype != np.float32 or b.size != tensor.shape[1]:
            raise UnsupportedOpError(f"MatMulNBits '{node.name}': the bias must be a float32 constant of N elements",
                                     {"MatMulNBits(runtime bias)": [node.name]}, ctx.opset)
        inputs.append(ctx.add_const(f"{node.name or outs[0]}.bias", b.reshape(-1)))
    ctx.emit("Dense", inputs, outs[:1], node.name, activation=0)


HANDLERS["DynamicQuantizeLinear"] = _h_keep("DynamicQuantizeLinear")
HANDLERS["MatMulInteger"] = _h_keep("MatMulInteger")
_ARITY["MatMulNBits"] = (3, 6, 1, 1, (3, 4, 5))

#: Operators of other domains, by domain.
DOMAIN_HANDLERS: dict[str, dict[str, Callable]] = {"com.microsoft": {"MatMulNBits": _h_matmul_nbits}}

_ONNX_DTYPES = {1: "float32", 7: "int64", 6: "int32", 3: "int8", 2: "uint8"}


def _handler(domain: str, op_type: str) -> Callable | None:
    if domain in ("", "ai.onnx"):
        return HANDLERS.get(op_type)
    return DOMAIN_HANDLERS.get(domain, {}).get(op_type)


def supported_ops() -> list[str]:
    """The ONNX operators (default domain) this importer handles."""
    return sorted(HANDLERS)


def _safe_external_data(model: Any, base_dir: str) -> None:
    """Loads external tensor data only from files inside the model's folder."""
    from onnx import external_data_helper

    root = os.path.realpath(base_dir)
    for t in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(t):
            continue
        for e in t.external_data:
            _check_text(e.key, f"tensor '{t.name}': external data key")
            _check_text(e.value, f"tensor '{t.name}': external data value")
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        full = os.path.realpath(os.path.join(root, loc))
        if os.path.isabs(loc) or ".." in loc.replace("\\", "/").split("/") or os.path.commonpath([root, full]) != root:
            raise ValueError(f"tensor '{t.name}': external data location {loc!r} points outside the model folder")
        if not os.path.isfile(full):
            raise ValueError(f"tensor '{t.name}': external data file {loc!r} not found next to the model")
    external_data_helper.load_external_data_for_model(model, root)


def load_model(src: Any) -> Any:
    onnx = _require_onnx()
    if isinstance(src, onnx.ModelProto):
        return src
    path = os.fspath(src)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError types
        raise ValueError(f"{path}: not a readable ONNX model: {e}") from None
    _safe_external_data(model, os.path.dirname(os.path.abspath(path)))
    return model


def import_onnx(src: Any) -> Graph:
    """Imports an ONNX model (path or ModelProto) into a lowbit Graph."""
    _require_onnx()
    from onnx import numpy_helper

    model = load_model(src)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ValueError("the ONNX model does not import the default opset")
    if not (MIN_OPSET <= opset <= MAX_OPSET):
        raise UnsupportedOpError(f"ONNX opset {opset} is not supported (lowbit imports opsets {MIN_OPSET} to {MAX_OPSET})",
                                 {}, opset)
    g = model.graph
    if len(g.node) > MAX_GRAPH_NODES:
        raise ValueError(f"the ONNX graph has {len(g.node)} nodes (cap {MAX_GRAPH_NODES})")

    unsupported: dict[str, list[str]] = {}
    for n in g.node:
        # names come from the file: invalid UTF-8 arrives as bytes; show it replaced, keep the keys str
        op_type, domain = _text_or_replace(n.op_type), _text_or_replace(n.domain)
        key = op_type if domain in ("", "ai.onnx") else f"{domain}::{op_type}"
        if _handler(domain, op_type) is None:
            unsupported.setdefault(key, []).append(_text_or_replace(n.name) or "(unnamed)")
    if unsupported:
        parts = [f"{op} (node{'s' if len(ns) > 1 else ''} {', '.join(repr(x) for x in ns[:5])}"
                 f"{', ...' if len(ns) > 5 else ''})" for op, ns in sorted(unsupported.items())]
        raise UnsupportedOpError(f"unsupported ONNX op{'s' if len(parts) > 1 else ''} at opset {opset}: "
                                 + "; ".join(parts), unsupported, opset)

    for i, n in enumerate(g.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
        _check_arity(n, opset)
    for v in list(g.input) + list(g.output) + list(g.initializer):
        _check_text(v.name, "graph value name")

    ctx = _Ctx(opset)
    for init in g.initializer:
        if init.name in ctx.tensors:
            raise ValueError(f"initializer '{init.name}' appears twice")
        try:
            arr = numpy_helper.to_array(init)
        except Exception as e:  # onnx raises KeyError/ValueError/TypeError for malformed tensors
            raise ValueError(f"initializer '{init.name}' cannot be read (data type {init.data_type}, dims "
                             f"{list(init.dims)}): {type(e).__name__}: {e}") from None
        arr = _storable(arr)
        ctx.tensors[init.name] = Tensor.from_array(init.name, arr)
        ctx._names.add(init.name)

    def value_info(vi: Any, need_shape: bool = True) -> ValueInfo:
        tt = vi.type.tensor_type
        dt = _ONNX_DTYPES.get(tt.elem_type)
        if dt not in ("float32", "int64", "int32"):
            raise UnsupportedOpError(f"graph value '{vi.name}' has ONNX element type {tt.elem_type}; "
                                     "lowbit runs float32, int64 and int32 inputs and outputs", {}, opset)
        if not tt.HasField("shape") and not need_shape:
            return ValueInfo(vi.name, dt, ())  # output shapes are informational only
        if not tt.HasField("shape"):
            raise ValueError(f"graph value '{vi.name}' declares no shape; lowbit needs at least its rank "
                             "(re-export with shapes, or run onnx.shape_inference)")
        dims: list[Any] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                if not 0 <= d.dim_value <= (1 << 40):
                    raise ValueError(f"graph value '{vi.name}' declares dimension {d.dim_value}, outside [0, 2^40]")
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(str(d.dim_param))
            else:
                dims.append(None)
        return ValueInfo(vi.name, dt, tuple(dims))

    inputs = [value_info(v) for v in g.input if v.name not in ctx.tensors]
    outputs = [value_info(v, need_shape=False) for v in g.output]
    if len({v.name for v in inputs}) != len(inputs):
        raise ValueError("a graph input name appears twice")
    _check_dataflow(g, {v.name for v in inputs} | set(ctx.tensors))
    for v in inputs:
        ctx._names.add(v.name)
    for n in g.node:
        for o in n.output:
            ctx._names.add(o)
    for n in g.node:
        ins = list(n.input)
        outs = list(n.output)
        handler = _handler(n.domain, n.op_type)
        assert handler is not None  # every op was checked above
        handler(ctx, n, _attrs(n), ins, outs)
    src_bytes = sum(int(np.prod(i.dims, dtype=np.int64)) * 4 for i in g.initializer if i.data_type == 1)
    graph = Graph(inputs, outputs, ctx.nodes, ctx.tensors,
                  {"source": "onnx", "opset": opset, "producer_name": _text_or_replace(model.producer_name),
                   "source_weight_bytes": src_bytes})
    graph.check()
    return graph
