"""ATen importer: a ``torch.export.ExportedProgram`` to a lowbit ``Graph``.

``import_exported`` walks the program's FX graph (after ``run_decompositions({})``:
functional ATen ops, ``linear`` / ``conv2d`` / ``layer_norm`` kept whole) and emits
the same IR ops the ONNX importer emits (``Dense``, ``Conv``, ``LayerNormalization``,
``Reshape`` ...), so both frontends share the passes and the runtime.

- Parameters, buffers and lifted constants are constants. A node whose tensor
  inputs are all constants is evaluated by torch itself at import time (pruning
  masks ``weight_orig * weight_mask``, weight parametrizations, position-id
  buffers), so the weights are the exact values torch computes with.
- Symbolic sizes (``sym_size``) become small int64 subgraphs (``Shape`` ->
  ``Squeeze``); a reshape whose target sizes can be told from the input's
  symbolic shape (same symbol at the same position -> 0, one unknown -> -1)
  gets a constant shape instead.
- An ATen op without a handler raises ``UnsupportedOpError`` listing every such op;
  ``frontends.torch`` then falls back to the TorchScript ONNX exporter.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Graph, Node, Tensor, ValueInfo

_BIG = 1 << 62  # slice ends at or above this are "to the end"


class _Const:
    """A constant torch tensor, emitted into the graph only when a runtime op reads it."""

    def __init__(self, t: Any, name: str):
        self.t = t
        self.name = name


_MISSING = object()


def _has_missing(a: Any) -> bool:
    if a is _MISSING:
        return True
    return isinstance(a, (list, tuple)) and any(_has_missing(x) for x in a)


class _Sym:
    """A runtime int64 scalar (0-d tensor) holding a symbolic size."""

    def __init__(self, name: str):
        self.name = name


def _np(t: Any) -> np.ndarray:
    import torch
    t = t.detach().cpu()
    if t.dtype == torch.bool:
        return t.numpy().astype(np.uint8)
    if t.is_floating_point():
        return t.to(torch.float32).numpy()
    if t.dtype in (torch.int64, torch.int32, torch.int8, torch.uint8):
        return t.numpy()
    if t.dtype in (torch.int16,):
        return t.to(torch.int32).numpy()
    raise UnsupportedOpError(f"constant of dtype {t.dtype} is not supported", {f"dtype {t.dtype}": []})


def _ir_dtype(dt: Any) -> tuple[str, int]:
    """(IR dtype, is_bool) of a torch dtype."""
    import torch
    if dt == torch.bool:
        return "uint8", 1
    if dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return "float32", 0
    m = {torch.int64: "int64", torch.int32: "int32", torch.int8: "int8", torch.uint8: "uint8"}
    if dt not in m:
        raise UnsupportedOpError(f"tensors of dtype {dt} are not supported", {f"dtype {dt}": []})
    return m[dt], 0


def _is_static(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool)


def _same_dim(a: Any, b: Any) -> bool:
    if _is_static(a) or _is_static(b):
        return _is_static(a) and _is_static(b) and a == b
    try:
        return bool(a.node.expr == b.node.expr)
    except AttributeError:
        return False


def _pair(v: Any, n: int = 2) -> list[int]:
    if isinstance(v, (list, tuple)):
        vals = [int(x) for x in v]
        return vals * n if len(vals) == 1 else vals
    return [int(v)] * n


class _Importer:
    def __init__(self, ep: Any, input_names: list[str], dim_names: dict[str, str]):
        self.ep = ep
        self.input_names = input_names
        self.dim_names = dim_names  # sympy symbol text -> "batch" / "sequence"
        self.nodes: list[Node] = []
        self.tensors: dict[str, Tensor] = {}
        self.used: set[str] = set()
        self.env: dict[Any, Any] = {}
        self.emitted: dict[int, str] = {}  # id(_Const) -> IR name
        self.weight_bytes = 0

    # -- names and emission ------------------------------------------------------

    def fresh(self, base: str) -> str:
        base = base or "v"
        name, k = base, 1
        while name in self.used:
            name = f"{base}_{k}"
            k += 1
        self.used.add(name)
        return name

    def const(self, base: str, arr: Any) -> str:
        name = self.fresh(base)
        self.tensors[name] = Tensor.from_array(name, np.asarray(arr))
        return name

    def emit(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs: Any) -> Any:
        outs = [self.fresh(f"{name}" if n_out == 1 else f"{name}.{i}") for i in range(n_out)]
        self.nodes.append(Node(op, list(inputs), outs, attrs, name))
        return outs[0] if n_out == 1 else outs

    def v(self, x: Any, dtype: Any = None) -> str:
        """The IR name of a value: a runtime tensor, a constant (emitted now) or a Python scalar."""
        if isinstance(x, str):
            return x
        if isinstance(x, _Sym):
            return x.name
        if isinstance(x, _Const):
            if id(x) not in self.emitted:
                self.emitted[id(x)] = self.const(x.name, _np(x.t))
            return self.emitted[id(x)]
        if isinstance(x, (bool, int, float)):
            dt = np.float32 if dtype is None else dtype
            return self.const("scalar", np.array(x, dtype=dt))
        raise UnsupportedOpError(f"value {type(x).__name__} cannot be used as a tensor", {type(x).__name__: []})

    def get(self, a: Any) -> Any:
        import torch.fx
        if isinstance(a, torch.fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.get(x) for x in a)
        return a

    # -- symbolic sizes ------------------------------------------------------------

    def scalar(self, x: Any, name: str) -> str:
        """An int64 0-d tensor name for a static int or a runtime size."""
        if isinstance(x, _Sym):
            return x.name
        return self.const(f"{name}.c", np.array(int(x), np.int64))

    def shape_tensor(self, sizes: list[Any], name: str) -> str:
        """A 1-D int64 tensor of ``sizes`` (ints and runtime sizes)."""
        if all(not isinstance(s, _Sym) for s in sizes):
            return self.const(f"{name}.shape", np.array([int(s) for s in sizes], np.int64))
        parts = []
        for s in sizes:
            if isinstance(s, _Sym):
                parts.append(self.emit("Unsqueeze", [s.name], f"{name}/dim", axes=[0]))
            else:
                parts.append(self.const(f"{name}.dim", np.array([int(s)], np.int64)))
        return self.emit("Concat", parts, f"{name}/shape", axis=0)

    def dim(self, x: str, val: Any, i: int, name: str) -> Any:
        """Dimension ``i`` of runtime tensor ``x``: an int if static, else a runtime size."""
        d = val.shape[i]
        if _is_static(d):
            return int(d)
        s = self.emit("Shape", [x], f"{name}/shape", start=i, end=i + 1)
        return _Sym(self.emit("Squeeze", [s], f"{name}/size", axes=[0]))

    # -- the walk -----------------------------------------------------------------

    def run(self) -> Graph:
        import torch
        from torch.export.graph_signature import InputKind, OutputKind

        ep = self.ep
        sig = ep.graph_signature
        gm = ep.graph_module
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        inputs: list[ValueInfo] = []
        user = 0
        for node, spec in zip(placeholders, sig.input_specs):
            if spec.kind == InputKind.USER_INPUT:
                val = node.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    raise UnsupportedOpError("only tensor inputs are supported", {"non-tensor input": [node.name]})
                dt, is_bool = _ir_dtype(val.dtype)
                if dt not in ("float32", "int64", "int32") or is_bool or val.dtype != {
                        "float32": torch.float32, "int64": torch.int64, "int32": torch.int32}[dt]:
                    raise UnsupportedOpError(f"input of dtype {val.dtype}: lowbit runs float32, int64 and int32 inputs",
                                             {f"input dtype {val.dtype}": [node.name]})
                name = self.input_names[user]
                user += 1
                self.used.add(name)
                inputs.append(ValueInfo(name, dt, self._shape(val)))
                self.env[node] = name
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                t = ep.state_dict.get(spec.target) if spec.target in ep.state_dict else ep.constants.get(spec.target)
                if t is None:
                    raise UnsupportedOpError(f"input '{spec.target}' has no value", {"missing constant": [node.name]})
                if isinstance(t, torch.nn.Parameter):
                    t = t.data
                if t.is_floating_point():
                    self.weight_bytes += t.numel() * 4
                self.env[node] = _Const(t, spec.target)
            else:
                raise UnsupportedOpError(f"input kind {spec.kind.name} is not supported", {spec.kind.name: [node.name]})
        for spec in sig.output_specs:
            if spec.kind != OutputKind.USER_OUTPUT:
                raise UnsupportedOpError(f"the program mutates state ({spec.kind.name})", {spec.kind.name: []})

        unsupported: dict[str, list[str]] = {}
        outputs: list[ValueInfo] = []
        for node in gm.graph.nodes:
            if node.op == "call_function":
                if _has_missing(self.get(node.args)) or _has_missing(self.get(list(node.kwargs.values()))):
                    self.env[node] = _MISSING  # reads a value an unsupported op makes
                elif (_key(node.target) not in HANDLERS and not isinstance(node.target, torch._ops.OpOverload)) \
                        or (_key(node.target) not in HANDLERS and not self._foldable(node)):
                    unsupported.setdefault(_key(node.target), []).append(node.name)
                    self.env[node] = _MISSING
                else:
                    self.env[node] = self._call(node)
            elif node.op == "output":
                if unsupported:
                    parts = [f"{op} (node{'s' if len(ns) > 1 else ''} {', '.join(ns[:3])}{', ...' if len(ns) > 3 else ''})"
                             for op, ns in sorted(unsupported.items())]
                    raise UnsupportedOpError("unsupported ATen op" + ("s" if len(parts) > 1 else "") + ": "
                                             + "; ".join(parts), unsupported)
                outs = node.args[0]
                outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
                names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
                for o, oname in zip(outs, names):
                    val = o.meta.get("val") if hasattr(o, "meta") else None
                    if not isinstance(val, torch.Tensor):
                        raise UnsupportedOpError("only tensor outputs are supported", {"non-tensor output": []})
                    src = self.v(self.get(o))
                    self.used.add(oname)
                    self._name_output(src, oname, {v.name for v in inputs} | {v.name for v in outputs})
                    outputs.append(ValueInfo(oname, _ir_dtype(val.dtype)[0], self._shape(val)))
            elif node.op not in ("placeholder",):
                raise UnsupportedOpError(f"FX node kind {node.op} is not supported", {node.op: [node.name]})
        used = {i for n in self.nodes for i in n.inputs}
        tensors = {k: t for k, t in self.tensors.items() if k in used}
        graph = Graph(inputs, outputs, self.nodes, tensors,
                      {"source": "torch.export", "source_weight_bytes": int(self.weight_bytes)})
        graph.check()
        return graph

    def _name_output(self, src: str, oname: str, taken: set[str]) -> None:
        """Renames the value ``src`` to the graph output ``oname`` (an Identity when ``src`` is an
        input, a constant or already another output)."""
        producer = next((n for n in self.nodes if src in n.outputs), None)
        if producer is None or src in taken:
            self.nodes.append(Node("Identity", [src], [oname], {}, f"{oname}/identity"))
            return
        for n in self.nodes:
            n.inputs = [oname if i == src else i for i in n.inputs]
            n.outputs = [oname if o == src else o for o in n.outputs]

    def _shape(self, val: Any) -> tuple:
        dims: list[Any] = []
        for d in val.shape:
            if _is_static(d):
                dims.append(int(d))
            else:
                s = str(d.node.expr)
                dims.append(self.dim_names.get(s, s))
        return tuple(dims)

    def _foldable(self, node: Any) -> bool:
        """True when every tensor the node reads is a constant (checked again at run time)."""
        import torch.fx
        flat: list[Any] = []

        def walk(a: Any) -> None:
            if isinstance(a, torch.fx.Node):
                flat.append(a)
            elif isinstance(a, (list, tuple)):
                for x in a:
                    walk(x)
            elif isinstance(a, dict):
                for x in a.values():
                    walk(x)
        walk(node.args)
        walk(node.kwargs)
        return all(isinstance(self.env.get(a), _Const) for a in flat)

    def _call(self, node: Any) -> Any:
        import torch
        args, kwargs = self.get(node.args), {k: self.get(v) for k, v in node.kwargs.items()}
        val = node.meta.get("val")
        if _is_static(val) or isinstance(val, float):  # a size that export resolved to a number
            return val

        def unconst(a: Any) -> Any:
            if isinstance(a, _Const):
                return a.t
            if isinstance(a, (list, tuple)):
                return type(a)(unconst(x) for x in a)
            return a

        def has(a: Any, kind: Any) -> bool:
            if isinstance(a, kind):
                return True
            if isinstance(a, (list, tuple)):
                return any(has(x, kind) for x in a)
            return False

        any_runtime = has(args, (str, _Sym)) or any(has(v, (str, _Sym)) for v in kwargs.values())
        if not any_runtime and isinstance(node.target, torch._ops.OpOverload) and _key(node.target) not in _NO_FOLD:
            with torch.no_grad():
                out = node.target(*unconst(args), **unconst(kwargs))
            mod = _module_name(node)
            base = f"{mod}.{node.name}" if mod else node.name
            if isinstance(out, torch.Tensor):
                return _Const(out, base)
            if isinstance(out, (list, tuple)):
                return [(_Const(o, base) if isinstance(o, torch.Tensor) else o) for o in out]
            return out
        h = HANDLERS.get(_key(node.target))
        if h is None:
            raise UnsupportedOpError(f"unsupported ATen op {_key(node.target)} (node {node.name})",
                                     {_key(node.target): [node.name]})
        return h(self, node, args, kwargs)


def _key(target: Any) -> str:
    if callable(target) and getattr(target, "__module__", "") == "_operator":
        return f"operator.{target.__name__}"
    return str(target)


def _module_name(node: Any) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path).replace("L['self'].", "").replace("L__self___", "")


def _name(node: Any) -> str:
    """Node name: the module path, then the FX node (``encoder.layer.0.attention/view_1``)."""
    mod = _module_name(node)
    return f"{mod}/{node.name}" if mod else node.name


def _lname(node: Any) -> str:
    """Name of a layer's own op (linear, conv, norms, embedding): its module path."""
    return _module_name(node) or node.name


def _meta(node: Any, i: int) -> Any:
    """The fake-tensor value of ``node``'s i-th argument."""
    import torch.fx
    a = node.args[i]
    return a.meta.get("val") if isinstance(a, torch.fx.Node) else None


def _out_dtype(node: Any) -> Any:
    val = node.meta.get("val")
    return val.dtype if val is not None and hasattr(val, "dtype") else None


def _np_dtype(dt: Any) -> Any:
    return {"float32": np.float32, "int64": np.int64, "int32": np.int32, "int8": np.int8,
            "uint8": np.uint8}[_ir_dtype(dt)[0]]


def _operand(im: _Importer, x: Any, dt: Any, name: str, src_dt: Any = None) -> str:
    """``x`` as an IR value of torch dtype ``dt`` (scalars become constants, other dtypes are cast)."""
    if isinstance(x, (bool, int, float)):
        return im.v(x, _np_dtype(dt))
    if isinstance(x, _Const):
        t = x.t
        if t.dtype != dt:
            return im.const(x.name, _np(t.to(dt)))
        return im.v(x)
    if isinstance(x, _Sym):
        x = x.name
        src_dt = None if dt is None else __import__("torch").int64
    if src_dt is not None and dt is not None and src_dt != dt:
        to, is_bool = _ir_dtype(dt)
        return im.emit("Cast", [x], f"{name}/cast", to=to, bool=is_bool)
    return x


def _arg_dtype(node: Any, i: int) -> Any:
    m = _meta(node, i)
    return m.dtype if m is not None and hasattr(m, "dtype") else None


# -- handlers: (importer, fx node, args, kwargs) -> value -------------------------

def _identity(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    return a[0]


def _skip(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    return None


def _unary(op: str, **attrs: Any) -> Callable:
    def h(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
        return im.emit(op, [im.v(a[0])], _name(node), **attrs)
    return h


def _binary(op: str, swap: bool = False) -> Callable:
    def h(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
        dt = _out_dtype(node)
        x, y = a[0], a[1]
        alpha = kw.get("alpha", a[2] if len(a) > 2 else 1)
        if node.target.__name__.startswith("div") and kw.get("rounding_mode") is not None:
            raise UnsupportedOpError(f"div with rounding_mode={kw['rounding_mode']!r} (node {node.name})",
                                     {"aten.div(rounding_mode)": [node.name]})
        xs = _operand(im, x, dt, node.name, _arg_dtype(node, 0))
        ys = _operand(im, y, dt, node.name, _arg_dtype(node, 1))
        if alpha != 1:
            ys = im.emit("Mul", [ys, im.v(alpha, _np_dtype(dt))], f"{_name(node)}/alpha")
        if swap:
            xs, ys = ys, xs
        return im.emit(op, [xs, ys], _name(node))
    return h


def _compare(op: str, negate: bool = False) -> Callable:
    def h(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
        d0, d1 = _arg_dtype(node, 0), _arg_dtype(node, 1)
        dt = d0 if d0 is not None else d1
        if d0 is not None and d1 is not None and d0 != d1:
            import torch
            dt = torch.promote_types(d0, d1)
        xs = _operand(im, a[0], dt, node.name, d0)
        ys = _operand(im, a[1], dt, node.name, d1)
        y = im.emit(op, [xs, ys], _name(node))
        return im.emit("Not", [y], f"{_name(node)}/not") if negate else y
    return h


def _h_linear(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else kw.get("bias")
    name = _lname(node)
    if isinstance(w, _Const) and w.t.dim() == 2 and not isinstance(x, _Const):
        wn = im.const(f"{w.name}", _np(w.t).T.copy())
        ins = [im.v(x), wn]
        if isinstance(b, _Const):
            ins.append(im.const(b.name, _np(b.t).reshape(-1)))
            b = None
        y = im.emit("Dense", ins, name, activation=0)
    else:
        wt = im.emit("Transpose", [im.v(w)], f"{name}/wT", perm=[1, 0])
        y = im.emit("MatMul", [im.v(x), wt], name)
    if b is not None:
        y = im.emit("Add", [y, im.v(b)], f"{name}/bias")
    return y


def _h_matmul(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    x, w = a[0], a[1]
    if isinstance(w, _Const) and w.t.dim() == 2 and w.t.is_floating_point() and not isinstance(x, _Const):
        return im.emit("Dense", [im.v(x), im.const(w.name, _np(w.t))], _lname(node), activation=0)
    return im.emit("MatMul", [im.v(x), im.v(w)], _name(node))


def _h_addmm(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    b, x, w = a[0], a[1], a[2]
    if kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1:
        raise UnsupportedOpError(f"addmm with alpha/beta (node {node.name})", {"aten.addmm(alpha,beta)": [node.name]})
    y = _h_matmul(im, node, (x, w), {})
    return im.emit("Add", [y, im.v(b)], f"{_name(node)}/bias")


def _h_conv(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    target = str(node.target)
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    if "convolution" in target:
        stride, padding, dilation, transposed, _, groups = a[3:9]
        if transposed:
            raise UnsupportedOpError(f"transposed convolution (node {node.name})", {"aten.convolution(transposed)": [node.name]})
    else:
        stride = a[3] if len(a) > 3 else 1
        padding = a[4] if len(a) > 4 else 0
        dilation = a[5] if len(a) > 5 else 1
        groups = a[6] if len(a) > 6 else 1
    if not isinstance(w, _Const) or w.t.dim() != 4:
        raise UnsupportedOpError(f"only 2-D convolutions with a constant weight are supported (node {node.name})",
                                 {"aten.conv(non-2D or runtime weight)": [node.name]})
    kh, kw_ = int(w.t.shape[2]), int(w.t.shape[3])
    dil = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            pads = [0, 0, 0, 0]
        else:  # "same" (stride 1): torch puts the odd pixel at the end
            th, tw = dil[0] * (kh - 1), dil[1] * (kw_ - 1)
            pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
    else:
        p = _pair(padding)
        pads = [p[0], p[1], p[0], p[1]]
    ins = [im.v(x), im.v(w)] + ([im.v(b)] if b is not None else [])
    return im.emit("Conv", ins, _lname(node), kernel_shape=[kh, kw_], strides=_pair(stride), pads=pads,
                   dilations=dil, group=int(groups), auto_pad="NOTSET")


def _ones_like_channels(im: _Importer, x: Any, n: int, value: float, name: str) -> str:
    if x is not None:
        return im.v(x)
    return im.const(name, np.full(n, value, np.float32))


def _h_batchnorm(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    target = str(node.target)
    x, w, b, mean, var = a[0], a[1], a[2], a[3], a[4]
    if "no_training" in target:
        eps = a[6]
    else:  # aten.batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn)
        if a[5]:
            raise UnsupportedOpError(f"batch norm in training mode (node {node.name})", {"aten.batch_norm(training)": [node.name]})
        eps = a[7]
    c = int(_meta(node, 0).shape[1])
    name = _lname(node)
    y = im.emit("BatchNormalization", [im.v(x), _ones_like_channels(im, w, c, 1.0, f"{name}.scale"),
                                       _ones_like_channels(im, b, c, 0.0, f"{name}.bias"), im.v(mean), im.v(var)],
                name, epsilon=float(eps))
    return (y, None, None) if "no_training" in target else y


def _h_layernorm(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    x, shape = a[0], list(a[1])
    w = a[2] if len(a) > 2 else kw.get("weight")
    b = a[3] if len(a) > 3 else kw.get("bias")
    eps = a[4] if len(a) > 4 else kw.get("eps", 1e-5)
    n = int(np.prod(shape))
    name = _lname(node)
    ins = [im.v(x), _ones_like_channels(im, w, n, 1.0, f"{name}.weight"),
           _ones_like_channels(im, b, n, 0.0, f"{name}.bias")]
    if len(shape) > 1:
        ins[1] = im.emit("Reshape", [ins[1]], f"{name}/w", shape=shape, allowzero=0) if w is not None else \
            im.const(f"{name}.weight", np.ones(shape, np.float32))
        ins[2] = im.emit("Reshape", [ins[2]], f"{name}/b", shape=shape, allowzero=0) if b is not None else \
            im.const(f"{name}.bias", np.zeros(shape, np.float32))
    y = im.emit("LayerNormalization", ins, name, axis=-len(shape), epsilon=float(eps))
    return (y, None, None) if "native" in str(node.target) else y


def _h_gelu(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    approx = kw.get("approximate", a[1] if len(a) > 1 else "none")
    x = im.v(a[0])
    name = _name(node)
    if approx == "none":
        return im.emit("Gelu", [x], name)
    # tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    x3 = im.emit("Mul", [x, im.emit("Mul", [x, x], f"{name}/x2")], f"{name}/x3")
    inner = im.emit("Add", [x, im.emit("Mul", [x3, im.v(0.044715)], f"{name}/c")], f"{name}/inner")
    t = im.emit("Tanh", [im.emit("Mul", [inner, im.v(math.sqrt(2.0 / math.pi))], f"{name}/k")], f"{name}/tanh")
    half = im.emit("Mul", [x, im.v(0.5)], f"{name}/half")
    return im.emit("Mul", [half, im.emit("Add", [t, im.v(1.0)], f"{name}/one")], name)


def _h_silu(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    x = im.v(a[0])
    return im.emit("Mul", [x, im.emit("Sigmoid", [x], f"{_name(node)}/sigmoid")], _name(node))


def _h_clip(lo: float | None, hi: float | None) -> Callable:
    def h(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
        if lo is None and hi is None:  # hardtanh(x, min, max) / clamp(x, min, max)
            mn = a[1] if len(a) > 1 else kw.get("min_val", kw.get("min", -1.0 if "hardtanh" in str(node.target) else None))
            mx = a[2] if len(a) > 2 else kw.get("max_val", kw.get("max", 1.0 if "hardtanh" in str(node.target) else None))
        else:
            mn, mx = lo, hi
        for v in (mn, mx):
            if v is not None and not isinstance(v, (int, float)):
                raise UnsupportedOpError(f"clamp with tensor bounds (node {node.name})", {"aten.clamp(tensor)": [node.name]})
        bounds = {k: float(v) for k, v in (("min", mn), ("max", mx)) if v is not None}
        return im.emit("Clip", [im.v(a[0])], _name(node), 1, **bounds)
    return h


def _h_leaky(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    return im.emit("LeakyRelu", [im.v(a[0])], _name(node), alpha=float(a[1] if len(a) > 1 else 0.01))


def _h_rsqrt(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    return im.emit("Reciprocal", [im.emit("Sqrt", [im.v(a[0])], f"{_name(node)}/sqrt")], _name(node))


def _h_pow(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    dt = _out_dtype(node)
    return im.emit("Pow", [_operand(im, a[0], dt, node.name, _arg_dtype(node, 0)),
                           _operand(im, a[1], dt, node.name, _arg_dtype(node, 1))], _name(node))


def _h_softmax(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    if len(a) > 2 and a[2] is not None and not isinstance(a[2], bool):
        import torch
        if a[2] != torch.float32:
            raise UnsupportedOpError(f"softmax to dtype {a[2]} (node {node.name})", {"aten.softmax(dtype)": [node.name]})
    return im.emit("Softmax", [im.v(a[0])], _name(node), axis=int(a[1]), legacy=0)


def _pool_attrs(node: Any, a: tuple, default_stride_is_kernel: bool = True) -> dict:
    k = _pair(a[1])
    s = _pair(a[2]) if len(a) > 2 and a[2] not in (None, [], ()) else k
    p = _pair(a[3]) if len(a) > 3 else [0, 0]
    return {"kernel_shape": k, "strides": s, "pads": [p[0], p[1], p[0], p[1]], "auto_pad": "NOTSET"}


def _h_maxpool(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    attrs = _pool_attrs(node, a)
    attrs["dilations"] = _pair(a[4]) if len(a) > 4 else [1, 1]
    attrs["ceil_mode"] = int(bool(a[5])) if len(a) > 5 else 0
    if len(_meta(node, 0).shape) != 4:
        raise UnsupportedOpError(f"only 2-D max pooling on NCHW (node {node.name})", {"aten.max_pool(non-2D)": [node.name]})
    y = im.emit("MaxPool", [im.v(a[0])], _name(node), **attrs)
    return (y, None) if "indices" in str(node.target) else y


def _h_avgpool(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    attrs = _pool_attrs(node, a)
    attrs["ceil_mode"] = int(bool(a[4])) if len(a) > 4 else 0
    attrs["count_include_pad"] = int(bool(a[5])) if len(a) > 5 else 1
    if len(a) > 6 and a[6] is not None:
        raise UnsupportedOpError(f"avg_pool2d with divisor_override (node {node.name})",
                                 {"aten.avg_pool2d(divisor_override)": [node.name]})
    return im.emit("AveragePool", [im.v(a[0])], _name(node), **attrs)


def _h_adaptive_avg(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    out = _pair(a[1])
    shape = _meta(node, 0).shape
    if out == [1, 1]:
        return im.emit("GlobalAveragePool", [im.v(a[0])], _name(node))
    h, w = shape[-2], shape[-1]
    if _is_static(h) and _is_static(w) and h % out[0] == 0 and w % out[1] == 0:
        k = [h // out[0], w // out[1]]
        return im.emit("AveragePool", [im.v(a[0])], _name(node), kernel_shape=k, strides=k, pads=[0, 0, 0, 0],
                       auto_pad="NOTSET", ceil_mode=0, count_include_pad=0)
    raise UnsupportedOpError(f"adaptive_avg_pool2d to {out} from a size it does not divide (node {node.name})",
                             {"aten.adaptive_avg_pool2d": [node.name]})


def _axes(dims: Any, rank: int) -> list[int]:
    dims = [dims] if isinstance(dims, int) else list(dims)
    return [int(d) % rank if rank else int(d) for d in dims]


def _h_reduce(op: str) -> Callable:
    def h(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
        rank = len(_meta(node, 0).shape)
        dims = a[1] if len(a) > 1 else kw.get("dim")
        keep = a[2] if len(a) > 2 else kw.get("keepdim", False)
        if kw.get("dtype") is not None:
            raise UnsupportedOpError(f"{op} with dtype (node {node.name})", {f"{op}(dtype)": [node.name]})
        axes = list(range(rank)) if dims in (None, [], ()) else _axes(dims, rank)
        return im.emit(op, [im.v(a[0])], _name(node), axes=axes, keepdims=int(bool(keep)), noop_with_empty_axes=0)
    return h


def _h_reshape(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    """view / reshape / flatten / unflatten: the target comes from the output's symbolic shape."""
    x = im.v(a[0])
    src, dst = _meta(node, 0).shape, node.meta["val"].shape
    target: list[int | None] = []
    for i, d in enumerate(dst):
        if _is_static(d) and d != 0:
            target.append(int(d))
        elif not _is_static(d) and i < len(src) and _same_dim(d, src[i]):
            target.append(0)
        else:
            target.append(None)
    missing = [i for i, t in enumerate(target) if t is None]
    if len(missing) <= 1:
        shape = [(-1 if t is None else t) for t in target]
        return im.emit("Reshape", [x], _name(node), shape=shape, allowzero=0)
    t = str(node.target)
    sizes = a[1] if len(a) > 1 and isinstance(a[1], (list, tuple)) and ("view" in t or "reshape" in t) else None
    if sizes is None:
        raise UnsupportedOpError(f"reshape to {tuple(dst)} with several unknown sizes (node {node.name})",
                                 {str(node.target): [node.name]})
    return im.emit("Reshape", [x, im.shape_tensor(list(sizes), node.name)], _name(node), allowzero=0)


def _h_transpose(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    rank = len(_meta(node, 0).shape)
    t = str(node.target)
    if "permute" in t:
        perm = _axes(a[1], rank)
    elif "transpose" in t:
        perm = list(range(rank))
        d0, d1 = int(a[1]) % rank, int(a[2]) % rank
        perm[d0], perm[d1] = perm[d1], perm[d0]
    else:  # t(): 0-D / 1-D are left as they are
        if rank < 2:
            return a[0]
        perm = [1, 0]
    if perm == list(range(rank)):
        return a[0]
    return im.emit("Transpose", [im.v(a[0])], _name(node), perm=perm)


def _h_unsqueeze(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    rank = len(node.meta["val"].shape)
    return im.emit("Unsqueeze", [im.v(a[0])], _name(node), axes=_axes(a[1], rank))


def _h_squeeze(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    shape = _meta(node, 0).shape
    rank = len(shape)
    dims = list(range(rank)) if len(a) < 2 else _axes(a[1], rank)
    dims = [d for d in dims if _is_static(shape[d]) and shape[d] == 1]  # torch leaves other dims alone
    if not dims:
        return a[0]
    return im.emit("Squeeze", [im.v(a[0])], _name(node), axes=dims)


def _h_expand(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    src = _meta(node, 0).shape
    sizes = list(a[1])
    off = len(sizes) - len(src)
    shape: list[Any] = []
    for i, s in enumerate(sizes):
        j = i - off
        if isinstance(s, int) and s == -1:
            shape.append(1)
        elif isinstance(s, _Sym):
            d = node.meta["val"].shape[i]
            shape.append(1 if j >= 0 and _same_dim(d, src[j]) else s)
        else:
            shape.append(int(s))
    if all(isinstance(s, int) for s in shape) and off == 0 and all(
            s == 1 or (_is_static(src[i]) and src[i] == s) for i, s in enumerate(shape)):
        return a[0]
    return im.emit("Expand", [im.v(a[0]), im.shape_tensor(shape, node.name)], _name(node))


def _h_slice(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    src = _meta(node, 0).shape
    rank = len(src)
    dim = int(a[1]) % rank if len(a) > 1 else 0
    start = a[2] if len(a) > 2 and a[2] is not None else 0
    end = a[3] if len(a) > 3 and a[3] is not None else _BIG
    step = a[4] if len(a) > 4 else 1
    d = src[dim]
    full_end = (isinstance(end, int) and (end >= _BIG or (_is_static(d) and end >= d)))
    if isinstance(end, _Sym) and _same_dim(node.meta["val"].shape[dim], d):
        full_end = True
    if isinstance(start, int) and start == 0 and full_end and step == 1:
        return a[0]
    if isinstance(end, int):
        end = min(end, _BIG)
    name = node.name
    ins = [im.v(a[0]), im.shape_tensor([start], f"{name}.starts"), im.shape_tensor([end], f"{name}.ends"),
           im.const(f"{name}.axes", np.array([dim], np.int64)), im.const(f"{name}.steps", np.array([int(step)], np.int64))]
    return im.emit("Slice", ins, _name(node))


def _h_select(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    rank = len(_meta(node, 0).shape)
    idx = a[2]
    ix = idx.name if isinstance(idx, _Sym) else im.const(f"{node.name}.index", np.array(int(idx), np.int64))
    return im.emit("Gather", [im.v(a[0]), ix], _name(node), axis=int(a[1]) % rank)


def _h_embedding(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    return im.emit("Gather", [im.v(a[0]), im.v(a[1])], _lname(node), axis=0)


def _h_index_select(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    rank = len(_meta(node, 0).shape)
    return im.emit("Gather", [im.v(a[0]), im.v(a[2])], _name(node), axis=int(a[1]) % rank)


def _h_gather(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    rank = len(_meta(node, 0).shape)
    return im.emit("GatherElements", [im.v(a[0]), im.v(a[2])], _name(node), axis=int(a[1]) % rank)


def _h_index(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    """x[i0, i1, ...] with integer index tensors: one index -> Gather on its axis; every
    axis indexed -> Gather on the flattened tensor at sum(i_d * stride_d) (indices >= 0)."""
    import torch
    xval = _meta(node, 0)
    rank = len(xval.shape)
    idx = list(a[1])
    idx_meta = [(i.meta.get("val") if i is not None else None) for i in node.args[1]]
    if any(m is not None and m.dtype == torch.bool for m in idx_meta):
        raise UnsupportedOpError(f"boolean mask indexing (node {node.name})", {"aten.index(bool)": [node.name]})
    present = [d for d, i in enumerate(idx) if i is not None]
    name = _name(node)
    if len(present) == 1:
        d = present[0]
        return im.emit("Gather", [im.v(a[0]), im.v(idx[d])], name, axis=d)
    if present != list(range(rank)):
        raise UnsupportedOpError(f"advanced indexing of {len(present)} of {rank} axes (node {node.name})",
                                 {"aten.index(partial)": [node.name]})
    x = im.v(a[0])
    stride: Any = 1
    flat: str | None = None
    for d in reversed(range(rank)):
        i = idx[d]
        iname = im.v(i)
        meta = idx_meta[d]
        if meta is not None and meta.dtype != torch.int64:
            iname = im.emit("Cast", [iname], f"{name}/idx", to="int64", bool=0)
        term = iname if (isinstance(stride, int) and stride == 1) else \
            im.emit("Mul", [iname, im.scalar(stride, f"{name}.stride")], f"{name}/stride")
        flat = term if flat is None else im.emit("Add", [flat, term], f"{name}/flat")
        size = im.dim(x, xval, d, name)
        if isinstance(stride, int) and isinstance(size, int):
            stride = stride * size
        else:
            stride = _Sym(im.emit("Mul", [im.scalar(stride, f"{name}.s"), im.scalar(size, f"{name}.d")], f"{name}/mul"))
    xf = im.emit("Reshape", [x], f"{name}/flatten", shape=[-1], allowzero=0)
    assert flat is not None
    return im.emit("Gather", [xf, flat], name, axis=0)


def _h_cat(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    rank = len(node.meta["val"].shape)
    dim = int(a[1] if len(a) > 1 else kw.get("dim", 0)) % rank
    dt = _out_dtype(node)
    parts = [_operand(im, t, dt, node.name, (m.meta["val"].dtype if hasattr(m, "meta") else None))
             for t, m in zip(a[0], node.args[0])]
    return im.emit("Concat", parts, _name(node), axis=dim)


def _h_split(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    rank = len(_meta(node, 0).shape)
    dim = int(a[2] if len(a) > 2 else kw.get("dim", 0)) % rank
    sizes = [v.shape[dim] for v in node.meta["val"]]
    if not all(_is_static(s) for s in sizes):
        raise UnsupportedOpError(f"split along a dynamic axis (node {node.name})", {"aten.split(dynamic)": [node.name]})
    outs = im.emit("Split", [im.v(a[0])], _name(node), n_out=len(sizes), axis=dim, split=[int(s) for s in sizes])
    return list(outs) if isinstance(outs, list) else [outs]


def _h_softmax_like_cast(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    """_to_copy / to.dtype / type_as: a Cast when the dtype changes."""
    src = _arg_dtype(node, 0)
    dst = _out_dtype(node)
    if src == dst:
        return a[0]
    to, is_bool = _ir_dtype(dst)
    if isinstance(a[0], _Sym):
        return _Sym(im.emit("Cast", [a[0].name], _name(node), to=to, bool=is_bool))
    return im.emit("Cast", [im.v(a[0])], _name(node), to=to, bool=is_bool)


def _h_dropout(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    train = a[2] if len(a) > 2 else kw.get("train", False)
    if train:
        raise UnsupportedOpError(f"dropout in training mode (node {node.name})", {"aten.dropout(train)": [node.name]})
    return a[0]


def _h_where(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    dt = _out_dtype(node)
    return im.emit("Where", [im.v(a[0]), _operand(im, a[1], dt, node.name, _arg_dtype(node, 1)),
                             _operand(im, a[2], dt, node.name, _arg_dtype(node, 2))], _name(node))


def _h_masked_fill(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    dt = _out_dtype(node)
    return im.emit("Where", [im.v(a[1]), _operand(im, a[2], dt, node.name, _arg_dtype(node, 2)), im.v(a[0])],
                   _name(node))


def _h_factory(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    """zeros / ones / full / new_* / *_like / scalar_tensor: a constant when the shape is static,
    else ConstantOfShape of the runtime shape."""
    import torch
    val = node.meta["val"]
    t = str(node.target)
    if "zeros" in t:
        fill: Any = 0
    elif "ones" in t:
        fill = 1
    elif "full_like" in t or "new_full" in t:
        fill = a[1] if "full_like" in t else a[2]
    elif "full" in t:
        fill = a[1]
    elif "scalar_tensor" in t:
        fill = a[0]
    else:
        raise UnsupportedOpError(f"{t} (node {node.name})", {t: [node.name]})
    if isinstance(fill, (_Sym, str, _Const)):
        raise UnsupportedOpError(f"{t} with a runtime fill value (node {node.name})", {t: [node.name]})
    if all(_is_static(d) for d in val.shape):
        return _Const(torch.full(tuple(int(d) for d in val.shape), fill, dtype=val.dtype), node.name)
    if "like" in t:
        shape = im.emit("Shape", [im.v(a[0])], f"{_name(node)}/shape", start=0)
    else:
        sizes = a[1] if t.startswith("aten.new_") else a[0]
        shape = im.shape_tensor(list(sizes), node.name)
    dt, _ = _ir_dtype(val.dtype)
    return im.emit("ConstantOfShape", [shape], _name(node), dtype=dt, value=float(fill))


def _h_arange(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    t = str(node.target)
    if t.endswith(".default"):
        start, end, step = 0, a[0], 1
    else:
        start, end = a[0], a[1]
        step = a[2] if len(a) > 2 else kw.get("step", 1)
    dt = _out_dtype(node)
    npdt = _np_dtype(dt)

    def s(v: Any, what: str) -> str:
        if isinstance(v, _Sym):
            if npdt == np.int64:
                return v.name
            return im.emit("Cast", [v.name], f"{node.name}/{what}", to=_ir_dtype(dt)[0], bool=0)
        return im.const(f"{node.name}.{what}", np.array(v, npdt))
    return im.emit("Range", [s(start, "start"), s(end, "limit"), s(step, "delta")], _name(node))


def _h_sym_size(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    val = _meta(node, 0)
    return im.dim(im.v(a[0]), val, int(a[1]) % len(val.shape), node.name)


def _sym_binary(op: str) -> Callable:
    def h(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
        x, y = a[0], a[1]
        if not isinstance(x, _Sym) and not isinstance(y, _Sym):
            return {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.floordiv}[op](x, y)
        return _Sym(im.emit(op, [im.scalar(x, node.name), im.scalar(y, node.name)], node.name))
    return h


def _h_getitem(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    return a[0][a[1]]


def _h_sdpa(im: _Importer, node: Any, a: tuple, kw: dict) -> Any:
    """scaled_dot_product_attention: softmax(q k^T * scale + mask) v."""
    q, k, v = a[0], a[1], a[2]
    mask = a[3] if len(a) > 3 else kw.get("attn_mask")
    dropout = a[4] if len(a) > 4 else kw.get("dropout_p", 0.0)
    causal = a[5] if len(a) > 5 else kw.get("is_causal", False)
    scale = kw.get("scale", a[6] if len(a) > 6 else None)
    if causal or dropout or kw.get("enable_gqa"):
        raise UnsupportedOpError(f"scaled_dot_product_attention with is_causal/dropout/gqa (node {node.name})",
                                 {"aten.scaled_dot_product_attention(causal)": [node.name]})
    qv = _meta(node, 0)
    e = qv.shape[-1]
    if scale is None:
        if not _is_static(e):
            raise UnsupportedOpError(f"attention with a dynamic head size (node {node.name})", {"sdpa": [node.name]})
        scale = 1.0 / math.sqrt(int(e))
    name = _name(node)
    rank = len(qv.shape)
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    kt = im.emit("Transpose", [im.v(k)], f"{name}/kT", perm=perm)
    s = im.emit("Mul", [im.emit("MatMul", [im.v(q), kt], f"{name}/qk"), im.v(float(scale))], f"{name}/scale")
    if mask is not None:
        import torch
        mdt = node.args[3].meta["val"].dtype if len(node.args) > 3 else node.kwargs["attn_mask"].meta["val"].dtype
        if mdt == torch.bool:
            s = im.emit("Where", [im.v(mask), s, im.v(-math.inf)], f"{name}/mask")
        else:
            s = im.emit("Add", [s, im.v(mask)], f"{name}/mask")
    p = im.emit("Softmax", [s], f"{name}/softmax", axis=-1, legacy=0)
    return im.emit("MatMul", [p, im.v(v)], name)


HANDLERS: dict[str, Callable] = {}
#: ops never evaluated at import time (random, side effects)
_NO_FOLD = {"aten.rand.default", "aten.randn.default", "aten.randint.low", "aten.bernoulli.p",
            "aten.dropout.default", "aten.native_dropout.default"}


def _reg(names: str, h: Callable) -> None:
    for n in names.split():
        HANDLERS[n] = h


_reg("aten.linear.default", _h_linear)
_reg("aten.matmul.default aten.mm.default aten.bmm.default", _h_matmul)
_reg("aten.addmm.default", _h_addmm)
_reg("aten.conv2d.default aten.conv2d.padding aten.convolution.default", _h_conv)
_reg("aten._native_batch_norm_legit_no_training.default aten.batch_norm.default", _h_batchnorm)
_reg("aten.layer_norm.default aten.native_layer_norm.default", _h_layernorm)
_reg("aten.relu.default", _unary("Relu"))
_reg("aten.sigmoid.default", _unary("Sigmoid"))
_reg("aten.tanh.default", _unary("Tanh"))
_reg("aten.erf.default", _unary("Erf"))
_reg("aten.exp.default", _unary("Exp"))
_reg("aten.sqrt.default", _unary("Sqrt"))
_reg("aten.neg.default", _unary("Neg"))
_reg("aten.abs.default", _unary("Abs"))
_reg("aten.reciprocal.default", _unary("Reciprocal"))
_reg("aten.hardswish.default", _unary("HardSwish"))
_reg("aten.hardsigmoid.default", _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5))
_reg("aten.logical_not.default aten.bitwise_not.default", _unary("Not"))
_reg("aten.rsqrt.default", _h_rsqrt)
_reg("aten.gelu.default", _h_gelu)
_reg("aten.silu.default", _h_silu)
_reg("aten.hardtanh.default aten.clamp.default", _h_clip(None, None))
_reg("aten.relu6.default", _h_clip(0.0, 6.0))
_reg("aten.leaky_relu.default", _h_leaky)
_reg("aten.pow.Tensor_Scalar aten.pow.Tensor_Tensor", _h_pow)
_reg("aten.add.Tensor aten.add.Scalar", _binary("Add"))
_reg("aten.sub.Tensor aten.sub.Scalar", _binary("Sub"))
_reg("aten.rsub.Scalar aten.rsub.Tensor", _binary("Sub", swap=True))
_reg("aten.mul.Tensor aten.mul.Scalar", _binary("Mul"))
_reg("aten.div.Tensor aten.div.Scalar aten.div.Tensor_mode", _binary("Div"))
_reg("aten.__and__.Tensor aten.bitwise_and.Tensor aten.logical_and.default", _binary("And"))
_reg("aten.__or__.Tensor aten.bitwise_or.Tensor aten.logical_or.default", _binary("Or"))
_reg("aten.eq.Tensor aten.eq.Scalar", _compare("Equal"))
_reg("aten.ne.Tensor aten.ne.Scalar", _compare("Equal", negate=True))
_reg("aten.lt.Tensor aten.lt.Scalar", _compare("Less"))
_reg("aten.le.Tensor aten.le.Scalar", _compare("LessOrEqual"))
_reg("aten.gt.Tensor aten.gt.Scalar", _compare("Greater"))
_reg("aten.ge.Tensor aten.ge.Scalar", _compare("GreaterOrEqual"))
_reg("aten.softmax.int aten._softmax.default", _h_softmax)
_reg("aten.max_pool2d.default aten.max_pool2d_with_indices.default", _h_maxpool)
_reg("aten.avg_pool2d.default", _h_avgpool)
_reg("aten.adaptive_avg_pool2d.default aten._adaptive_avg_pool2d.default", _h_adaptive_avg)
_reg("aten.mean.dim", _h_reduce("ReduceMean"))
_reg("aten.sum.dim_IntList aten.sum.default", _h_reduce("ReduceSum"))
_reg("aten.view.default aten.reshape.default aten._unsafe_view.default aten.flatten.using_ints "
     "aten.unflatten.int", _h_reshape)
_reg("aten.permute.default aten.transpose.int aten.t.default", _h_transpose)
_reg("aten.unsqueeze.default", _h_unsqueeze)
_reg("aten.squeeze.dim aten.squeeze.dims aten.squeeze.default", _h_squeeze)
_reg("aten.expand.default", _h_expand)
_reg("aten.slice.Tensor", _h_slice)
_reg("aten.select.int", _h_select)
_reg("aten.embedding.default", _h_embedding)
_reg("aten.index_select.default", _h_index_select)
_reg("aten.gather.default", _h_gather)
_reg("aten.index.Tensor", _h_index)
_reg("aten.cat.default aten.concat.default", _h_cat)
_reg("aten.split.Tensor aten.split_with_sizes.default aten.chunk.default", _h_split)
_reg("aten._to_copy.default aten.to.dtype aten.to.dtype_layout aten.type_as.default", _h_softmax_like_cast)
_reg("aten.clone.default aten.contiguous.default aten.alias.default aten.detach.default aten.lift_fresh_copy.default "
     "aten.to.device", _identity)
_reg("aten.dropout.default aten.feature_dropout.default", _h_dropout)
_reg("aten._assert_tensor_metadata.default aten._assert_scalar.default aten.sym_constrain_range_for_size.default "
     "aten._assert_async.msg", _skip)
_reg("aten.where.self aten.where.ScalarOther aten.where.ScalarSelf aten.where.Scalar", _h_where)
_reg("aten.masked_fill.Scalar aten.masked_fill.Tensor", _h_masked_fill)
_reg("aten.zeros.default aten.ones.default aten.full.default aten.new_zeros.default aten.new_ones.default "
     "aten.new_full.default aten.zeros_like.default aten.ones_like.default aten.full_like.default "
     "aten.scalar_tensor.default", _h_factory)
_reg("aten.arange.default aten.arange.start aten.arange.start_step", _h_arange)
_reg("aten.sym_size.int", _h_sym_size)
_reg("operator.add", _sym_binary("Add"))
_reg("operator.sub", _sym_binary("Sub"))
_reg("operator.mul", _sym_binary("Mul"))
_reg("operator.floordiv", _sym_binary("Div"))
_reg("operator.getitem", _h_getitem)
_reg("aten.scaled_dot_product_attention.default", _h_sdpa)


def supported_ops() -> list[str]:
    """The ATen ops (overloads) this importer handles."""
    return sorted(HANDLERS)


def import_exported(ep: Any, input_names: list[str], dim_names: dict[str, str] | None = None) -> Graph:
    """Imports an ExportedProgram (see the module docstring) into a lowbit Graph. ``input_names``
    name the user inputs in order; ``dim_names`` maps symbolic sizes (sympy text) to the
    names the graph's input shapes show (``batch``, ``sequence``)."""
    ep = ep.run_decompositions({})
    return _Importer(ep, input_names, dim_names or {}).run()
