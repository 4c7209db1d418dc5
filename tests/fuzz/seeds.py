"""The seed corpus of the fuzzers, generated from small valid models.

Every model below is converted with every option in ``CONVERT_OPTIONS``; an
option this lowbit does not implement yet (``NotImplementedError``/``TypeError``)
is skipped, so a new ``quant=`` mode gets seeds the day ``convert`` accepts it.
``test_fuzz.py`` checks that the seeds cover every encoding in
``lowbit.format.ENCODINGS``: a new encoding without a seed fails that test.

    python tests/fuzz/seeds.py OUTDIR      # writes OUTDIR/*.qbin and *.onnx
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))  # tests/: models.py

import lowbit  # noqa: E402
from lowbit.format import PREAMBLE_SIZE  # noqa: E402

#: Options passed to ``lowbit.convert``. Add new compression modes here (one
#: entry per mode worth a seed); unimplemented ones are skipped, not failed.
CONVERT_OPTIONS: list[dict[str, Any]] = [
    {},                                   # fp32: raw + f32-n16
    {"quant": "int8"},
    {"quant": "int8", "reduce_range": True},  # qs7-n16k4
    {"quant": "int4"},                    # asymmetric g32
    {"quant": "int4", "group_size": 64, "symmetric": True},
    {"quant": "int4", "group_size": 128},
    {"quant": "int4", "group_size": 32, "symmetric": True},
    {"quant": "int4", "group_size": 64},
    {"quant": "int4", "group_size": 128, "symmetric": True},
    {"quant": "nf4"},
    {"quant": "nf4", "group_size": 64, "codebook": "kmeans"},
    {"quant": "nf4", "group_size": 128},
    # sparse and low-rank (issue 4), forced so every seed run gets the same encodings
    {"sparse": "csr"},                    # f32-csr-s8, LowRank with fp32 factors
    {"quant": "int8", "sparse": "csr"},   # qs8-csr-k16, LowRank with int8 factors
    {"quant": "int8", "sparse": "bsr"},   # qs8-bsr1x4-s8
    {"quant": "int4", "sparse": "csr"},   # LowRank with int4 factors (4-bit weights stay dense)
]


def option_id(opt: dict[str, Any]) -> str:
    return "fp32" if not opt else "-".join(f"{k}={v}" for k, v in sorted(opt.items())).replace("quant=", "")


# -- the models (tiny, so one fuzz execution takes well under a millisecond) --

def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    return onnx, TensorProto, helper, numpy_helper


def _make(nodes, inputs, outputs, inits, opset=17):
    onnx, _, helper, numpy_helper = _onnx()
    g = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="lowbit-fuzz-seeds")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def model_mlp(sizes=(16, 32, 24, 20, 5)):
    """Gemm/MatMul+Add/GELU/Relu/Tanh/LayerNorm/Sigmoid/Softmax (tests/models.py)."""
    import models
    return models.mlp4(seed=3, sizes=sizes)


def model_ops():
    """Run-time MatMul, Transpose, Softmax, Reshape, Flatten, the arithmetic and
    unary ops, two inputs and two outputs, symbolic batch."""
    _, TP, helper, _ = _onnx()
    rng = np.random.default_rng(5)
    inits = {
        "w": rng.standard_normal((16, 8)).astype(np.float32),
        "shape": np.array([0, 16], np.int64),
        "two": np.array(2.0, np.float32),
        "eps": np.array(0.5, np.float32),
    }
    mk = helper.make_node
    nodes = [
        mk("Transpose", ["x"], ["xt"], perm=[0, 2, 1], name="t"),
        mk("MatMul", ["x", "xt"], ["s"], name="qk"),
        mk("Softmax", ["s"], ["p"], axis=-1, name="sm"),
        mk("Reshape", ["p", "shape"], ["r"], name="rs"),
        mk("Flatten", ["r"], ["f"], axis=1, name="fl"),
        mk("MatMul", ["f", "w"], ["d"], name="fc"),
        mk("Add", ["d", "x2"], ["a"], name="add"),
        mk("Abs", ["a"], ["ab"], name="abs"),
        mk("Add", ["ab", "eps"], ["ae"], name="add_eps"),
        mk("Sqrt", ["ae"], ["sq"], name="sqrt"),
        mk("Pow", ["sq", "two"], ["pw"], name="pow"),
        mk("Reciprocal", ["pw"], ["rc"], name="rcp"),
        mk("Neg", ["rc"], ["ng"], name="neg"),
        mk("Exp", ["ng"], ["ex"], name="exp"),
        mk("Sub", ["ex", "a"], ["sb"], name="sub"),
        mk("Div", ["sb", "two"], ["y"], name="div"),
        mk("Identity", ["s"], ["z"], name="id"),
    ]
    return _make(nodes,
                 [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", 4, 4]),
                  helper.make_tensor_value_info("x2", TP.FLOAT, ["batch", 8])],
                 [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", 8]),
                  helper.make_tensor_value_info("z", TP.FLOAT, ["batch", 4, 4])], inits)


def model_sparse(k: int = 32, n: int = 16):
    """Weights that are 90% zeros (unstructured) and 80% zeros in 1x4 blocks along
    K: the import-time sparsity detection (issue 4) picks them up when it exists."""
    _, TP, helper, _ = _onnx()
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((k, k)).astype(np.float32)
    w1[rng.random((k, k)) < 0.9] = 0
    w2 = rng.standard_normal((k, n)).astype(np.float32)
    keep = rng.random((k // 4, n)) >= 0.8  # one flag per 1x4 block along K
    w2 *= np.repeat(keep, 4, axis=0)
    inits = {"w1": w1, "b1": rng.standard_normal(k).astype(np.float32), "w2": w2}
    mk = helper.make_node
    nodes = [mk("MatMul", ["x", "w1"], ["m1"], name="sp1"), mk("Add", ["m1", "b1"], ["h1"], name="sp1_bias"),
             mk("Relu", ["h1"], ["a1"], name="relu"), mk("MatMul", ["a1", "w2"], ["y"], name="sp2")]
    return _make(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", k])],
                 [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", n])], inits)


def model_lowrank(k: int = 32, r: int = 4, n: int = 48):
    """Two MatMuls in a row with a rank-4 inner dimension and no nonlinearity
    between them (a factored layer), then bias, ReLU and a dense head."""
    _, TP, helper, _ = _onnx()
    rng = np.random.default_rng(11)
    inits = {"v": rng.standard_normal((k, r)).astype(np.float32),
             "u": rng.standard_normal((r, n)).astype(np.float32),
             "b": rng.standard_normal(n).astype(np.float32),
             "w": rng.standard_normal((n, 8)).astype(np.float32)}
    mk = helper.make_node
    nodes = [mk("MatMul", ["x", "v"], ["xv"], name="lr_v"), mk("MatMul", ["xv", "u"], ["xu"], name="lr_u"),
             mk("Add", ["xu", "b"], ["h"], name="lr_bias"), mk("Relu", ["h"], ["a"], name="relu"),
             mk("MatMul", ["a", "w"], ["y"], name="head")]
    return _make(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", k])],
                 [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", 8])], inits)


def model_static():
    """Static input shape (planned at load) and a legacy-opset Softmax."""
    _, TP, helper, _ = _onnx()
    rng = np.random.default_rng(13)
    inits = {"w": rng.standard_normal((12, 20)).astype(np.float32), "b": rng.standard_normal(20).astype(np.float32)}
    mk = helper.make_node
    nodes = [mk("Gemm", ["x", "w", "b"], ["h"], name="fc"), mk("Softmax", ["h"], ["y"], axis=1, name="sm")]
    return _make(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [3, 12])],
                 [helper.make_tensor_value_info("y", TP.FLOAT, [3, 20])], inits, opset=12)


def model_attention():
    """Two-head self-attention as exporters write it (fused into one Attention op):
    Q/K/V projections, head split by Reshape (target from Shape) + Transpose, scale,
    additive mask input, softmax, .V, heads merged."""
    _, TP, helper, _ = _onnx()
    rng = np.random.default_rng(17)
    inits = {n: (rng.standard_normal((8, 8)) / 3).astype(np.float32) for n in ("wq", "wk", "wv")}
    inits.update({"hd": np.array([2, 4], np.int64), "c": np.array(0.5, np.float32),
                  "flat": np.array([0, 0, -1], np.int64)})
    mk = helper.make_node
    # the head-split target from the input's shape (computed while planning), as exporters do
    nodes = [mk("Shape", ["x"], ["bs"], start=0, end=2, name="shape"),
             mk("Concat", ["bs", "hd"], ["tgt"], axis=0, name="tgt")]
    for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [mk("MatMul", ["x", f"w{n}"], [n], name=f"proj_{n}"),
                  mk("Reshape", [n, "tgt"], [f"{n}4"], name=f"split_{n}"),
                  mk("Transpose", [f"{n}4"], [f"{n}t"], perm=perm, name=f"heads_{n}")]
    nodes += [mk("MatMul", ["qt", "kt"], ["s"], name="qk"), mk("Mul", ["s", "c"], ["s1"], name="scale"),
              mk("Add", ["s1", "mask"], ["s2"], name="mask"), mk("Softmax", ["s2"], ["p"], axis=-1, name="sm"),
              mk("MatMul", ["p", "vt"], ["o"], name="pv"), mk("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3], name="merge"),
              mk("Reshape", ["ot", "flat"], ["y"], name="flat")]
    return _make(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", "seq", 8]),
                         helper.make_tensor_value_info("mask", TP.FLOAT, ["batch", 1, 1, "seq"])],
                 [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", "seq", 8])], inits)


MODELS: dict[str, Callable[[], Any]] = {
    "mlp": model_mlp, "ops": model_ops, "sparse": model_sparse, "lowrank": model_lowrank, "static": model_static,
    "attention": model_attention,
}


@dataclass
class Seed:
    name: str           # "<model>-<option>"
    model: str
    option: dict[str, Any]
    qbin: str           # path
    onnx: str           # path of the source model
    encodings: set[str] = field(default_factory=set)


def header_of(blob: bytes) -> dict[str, Any]:
    hlen = struct.unpack_from("<Q", blob, 16)[0]
    return json.loads(blob[PREAMBLE_SIZE:PREAMBLE_SIZE + hlen])


def generate(outdir: str) -> tuple[list[Seed], dict[str, str]]:
    """Writes every model as .onnx and every (model, option) that converts as
    .qbin into ``outdir``. Returns the seeds and the skipped options with why."""
    os.makedirs(outdir, exist_ok=True)
    seeds: list[Seed] = []
    skipped: dict[str, str] = {}
    for mname, build in MODELS.items():
        m = build()
        src = os.path.join(outdir, f"{mname}.onnx")
        with open(src, "wb") as f:
            f.write(m.SerializeToString())
        for opt in CONVERT_OPTIONS:
            oid = option_id(opt)
            if oid in skipped:
                continue
            dst = os.path.join(outdir, f"{mname}-{oid}.qbin")
            try:
                lowbit.convert(src, dst, **opt)
            except (NotImplementedError, TypeError) as e:  # mode not in this lowbit (yet)
                skipped[oid] = f"{type(e).__name__}: {e}"
                continue
            blob = open(dst, "rb").read()
            encs = {t["encoding"] for t in header_of(blob)["tensors"]}
            seeds.append(Seed(f"{mname}-{oid}", mname, opt, dst, src, encs))
    return seeds, skipped


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "fuzz-seeds"
    got, skip = generate(out)
    for s in got:
        print(f"{s.name:28s} {sorted(s.encodings)}")
    for k, why in skip.items():
        print(f"skipped {k}: {why}")
