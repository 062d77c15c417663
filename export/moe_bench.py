"""Decode (and short prefill) time of one routed-MoE layer on CPU: com.microsoft QMoE against a
TopK -> GatherBlockQuantized -> MatMul graph, int4 g32 experts with random weights.

    .venv/bin/python export/moe_bench.py [--threads 2] [--quick]

Shapes default to Qwen3-Next's MoE layer (hidden 2048, expert width 512); the expert count and
top-k vary, so the table shows what the time grows with.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

H, INTER, G = 2048, 512, 32
MS = "com.microsoft"


def _weights(E: int, rng):
    w1 = rng.integers(0, 256, (E, 2 * INTER, H // 2), dtype=np.uint8)  # [E, 2I, H/2]
    w2 = rng.integers(0, 256, (E, H, INTER // 2), dtype=np.uint8)  # [E, H, I/2]
    s1 = (rng.random((E, 2 * INTER, H // G), dtype=np.float32) * 0.01).astype(np.float32)
    s2 = (rng.random((E, H, INTER // G), dtype=np.float32) * 0.01).astype(np.float32)
    router = (rng.standard_normal((H, E)) * 0.02).astype(np.float32)
    return w1, s1, w2, s2, router


def _session(nodes, inits, threads: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", H])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "moe", [x], [y], [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def qmoe(E: int, k: int, threads: int, rng):
    w1, s1, w2, s2, router = _weights(E, rng)
    nodes = [helper.make_node("MatMul", ["x", "router"], ["logits"]),
             helper.make_node("QMoE", ["x", "logits", "w1", "s1", "", "w2", "s2"], ["y"], domain=MS, k=k,
                              activation_type="swiglu", swiglu_fusion=1, activation_alpha=1.0, activation_beta=0.0,
                              normalize_routing_weights=1, expert_weight_bits=4, block_size=G, accuracy_level=4)]
    return _session(nodes, dict(w1=w1, s1=s1, w2=w2, s2=s2, router=router), threads)


def gathered(E: int, k: int, threads: int, rng):
    """Decode-only graph (one token): TopK over the router, GatherBlockQuantized of the k experts'
    int4 blocks (dequantized to fp32), batched MatMul, SwiGLU, weighted sum."""
    w1, s1, w2, s2, router = _weights(E, rng)
    c = lambda n, v: numpy_helper.from_array(np.array(v, np.int64), n)  # noqa: E731
    gbq = dict(domain=MS, bits=4, block_size=G, gather_axis=0, quantize_axis=2)
    nodes = [
        helper.make_node("MatMul", ["x", "router"], ["logits"]),  # [1, E]
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        helper.make_node("TopK", ["p", "k"], ["topv", "topi"], axis=-1),  # [1, k]
        helper.make_node("ReduceSum", ["topv", "ax_last"], ["tops"], keepdims=1),
        helper.make_node("Div", ["topv", "tops"], ["wts"]),  # [1, k]
        helper.make_node("Reshape", ["topi", "flat"], ["idx"]),  # [k]
        helper.make_node("GatherBlockQuantized", ["w1", "idx", "s1"], ["W1"], **gbq),  # [k, 2I, H]
        helper.make_node("GatherBlockQuantized", ["w2", "idx", "s2"], ["W2"], **gbq),  # [k, H, I]
        helper.make_node("Reshape", ["x", "col"], ["xc"]),  # [H, 1]
        helper.make_node("MatMul", ["W1", "xc"], ["gu"]),  # [k, 2I, 1]
        helper.make_node("Reshape", ["gu", "pairs"], ["gu2"]),  # [k, I, 2]
        helper.make_node("Split", ["gu2"], ["ga", "up"], axis=-1, num_outputs=2),  # [k, I, 1] each
        helper.make_node("Sigmoid", ["ga"], ["sg"]),
        helper.make_node("Mul", ["ga", "sg"], ["act0"]),
        helper.make_node("Mul", ["act0", "up"], ["act"]),  # [k, I, 1]
        helper.make_node("MatMul", ["W2", "act"], ["o"]),  # [k, H, 1]
        helper.make_node("Reshape", ["wts", "wcol"], ["wk"]),  # [k, 1, 1]
        helper.make_node("Mul", ["o", "wk"], ["ow"]),
        helper.make_node("ReduceSum", ["ow", "ax0"], ["os"], keepdims=0),  # [H, 1]
        helper.make_node("Reshape", ["os", "row"], ["y"]),  # [1, H]
    ]
    inits = dict(w1=w1, s1=s1, w2=w2, s2=s2, router=router)
    consts = [c("k", [k]), c("ax_last", [-1]), c("flat", [-1]), c("col", [H, 1]), c("pairs", [k, INTER, 2]),
              c("wcol", [k, 1, 1]), c("ax0", [0]), c("row", [1, H])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", H])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "moe", [x], [y], [numpy_helper.from_array(a, n) for n, a in inits.items()]
                              + consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def timed(sess, T: int, runs: int, rng) -> float:
    """Median ms of `runs` calls with fresh random tokens (so the routing changes every call)."""
    xs = [rng.standard_normal((T, H)).astype(np.float32) for _ in range(runs + 2)]
    sess.run(None, {"x": xs[0]})
    sess.run(None, {"x": xs[1]})
    times = []
    for x in xs[2:]:
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    shapes = [(64, 10), (512, 10), (512, 2), (512, 20)] if not a.quick else [(64, 10), (512, 10)]
    print(f"hidden {H}, expert width {INTER}, int4 g{G}, {a.threads} threads; median ms per call")
    print("experts top-k | QMoE decode | QMoE prefill-32 | gather decode")
    for E, k in shapes:
        s = qmoe(E, k, a.threads, rng)
        dec, pre = timed(s, 1, a.runs, rng), timed(s, 32, max(3, a.runs // 3), rng)
        del s
        gat = timed(gathered(E, k, a.threads, rng), 1, a.runs, rng)
        print(f"{E:7d} {k:5d} | {dec:11.2f} | {pre:15.2f} | {gat:13.2f}")


if __name__ == "__main__":
    main()
