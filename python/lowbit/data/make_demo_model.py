"""Builds the demo bundled with lowbit: an MLP trained on scikit-learn's digits
(UCI optical handwritten digits, CC BY 4.0), written as ONNX, plus the held-out
test split. Run: python python/lowbit/data/make_demo_model.py

Writes python/lowbit/data/digits_mlp.onnx and python/lowbit/data/digits_test.npz.
Training is plain numpy (Adam, cross-entropy), seeded, so the files are reproducible.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits

OUT = os.path.dirname(os.path.abspath(__file__))
SIZES = (64, 256, 128, 10)


def main() -> None:
    rng = np.random.default_rng(0)
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = rng.permutation(len(x))
    x, y = x[perm], y[perm]
    n_test = 360
    xtr, ytr, xte, yte = x[n_test:], y[n_test:], x[:n_test], y[:n_test]

    ws = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32) for a, b in zip(SIZES, SIZES[1:])]
    bs = [np.zeros(b, np.float32) for b in SIZES[1:]]
    params = ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, step = 2e-3, 0.9, 0.999, 0
    for _epoch in range(60):
        order = rng.permutation(len(xtr))
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            h = [xtr[idx]]
            for l in range(3):
                z = h[-1] @ ws[l] + bs[l]
                h.append(np.maximum(z, 0) if l < 2 else z)
            logits = h[-1]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = p
            g[np.arange(len(idx)), ytr[idx]] -= 1
            g /= len(idx)
            gws, gbs = [None] * 3, [None] * 3
            for l in (2, 1, 0):
                gws[l] = h[l].T @ g
                gbs[l] = g.sum(0)
                if l:
                    g = (g @ ws[l].T) * (h[l] > 0)
            grads = gws + gbs
            step += 1
            for j, (pp, gg) in enumerate(zip(params, grads)):
                m[j] = b1 * m[j] + (1 - b1) * gg
                v[j] = b2 * v[j] + (1 - b2) * gg * gg
                pp -= lr * (m[j] / (1 - b1 ** step)) / (np.sqrt(v[j] / (1 - b2 ** step)) + 1e-8)
    h = xte
    for l in range(3):
        h = h @ ws[l] + bs[l]
        if l < 2:
            h = np.maximum(h, 0)
    acc = float((h.argmax(1) == yte).mean())
    print(f"test accuracy {acc:.4f}")

    inits = [numpy_helper.from_array(a, n) for n, a in
             [("fc1.weight", ws[0].T.copy()), ("fc1.bias", bs[0]), ("fc2.weight", ws[1].T.copy()), ("fc2.bias", bs[1]),
              ("fc3.weight", ws[2].T.copy()), ("fc3.bias", bs[2])]]
    nodes = [
        helper.make_node("Gemm", ["pixels", "fc1.weight", "fc1.bias"], ["h1"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "fc2.weight", "fc2.bias"], ["h2"], transB=1, name="fc2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["logits"], transB=1, name="fc3"),
    ]
    graph = helper.make_graph(nodes, "digits_mlp",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lowbit-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(OUT, exist_ok=True)
    onnx.save(model, os.path.join(OUT, "digits_mlp.onnx"))
    np.savez_compressed(os.path.join(OUT, "digits_test.npz"), pixels=xte, labels=yte.astype(np.int64))


if __name__ == "__main__":
    main()
