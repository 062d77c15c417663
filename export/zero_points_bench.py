"""How to carry Q4_1 / K-quant blocks (w = d*q + m) into onnxruntime: MatMulNBits speed per variant.

Usage (repo root): .venv/bin/python export/zero_points_bench.py [--rounds 3] [--threads 2]
Synthetic int4 g32 weights with the Qwen3.5-2B matmul shapes (speed does not depend on values):
    sym     symmetric blocks (today's default artifact; not exact for Q4_1)
    u8zp    uint8 zero points (fast path; not exact for Q4_1: m/d is not an integer)
    fzp     float zero points (exact; the one-row kernel has no fast path for them)
    split   symmetric blocks + (per-block sums of x) @ M^T, M [N, K/32] fp32 (exact)
Rounds are interleaved (sym fzp u8zp split sym ...); prints medians and the spread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = {"up 2048->6144": (2048, 6144), "down 6144->2048": (6144, 2048), "lm_head 2048->248k": (2048, 248320)}
G = 32


def _graph(K: int, N: int, variant: str, rng) -> bytes:
    """One MatMulNBits (+ the split's correction) on x [1, S, K] -> y [1, S, N]."""
    kb = K // G
    inits = [numpy_helper.from_array(rng.integers(0, 256, (N, kb, G // 2), dtype=np.uint8), "B"),
             numpy_helper.from_array(rng.random((N, kb), dtype=np.float32) * 0.01, "s")]
    ins = ["x", "B", "s"]
    if variant == "u8zp":
        inits.append(numpy_helper.from_array(rng.integers(0, 256, (N, kb // 2), dtype=np.uint8), "z"))
        ins.append("z")
    elif variant == "fzp":
        inits.append(numpy_helper.from_array(rng.random((N, kb), dtype=np.float32), "z"))
        ins.append("z")
    mm = "y" if variant != "split" else "y0"
    nodes = [helper.make_node("MatMulNBits", ins, [mm], domain="com.microsoft", K=K, N=N, bits=4, block_size=G,
                              accuracy_level=4)]
    if variant == "split":
        inits += [numpy_helper.from_array(np.array([0, 0, kb, G], np.int64), "shape"),
                  numpy_helper.from_array(np.array([-1], np.int64), "ax"),
                  numpy_helper.from_array(rng.random((kb, N), dtype=np.float32) * 0.01, "Mt")]
        nodes += [helper.make_node("Reshape", ["x", "shape"], ["xb"]),  # [1, S, kb, 32]
                  helper.make_node("ReduceSum", ["xb", "ax"], ["xs"], keepdims=0),  # [1, S, kb]
                  helper.make_node("MatMul", ["xs", "Mt"], ["c"]),  # [1, S, N]
                  helper.make_node("Add", ["y0", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "S", N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model.SerializeToString()


def _time(sess, x, reps: int) -> float:
    sess.run(None, {"x": x})
    t0 = time.perf_counter()
    for _ in range(reps):
        sess.run(None, {"x": x})
    return (time.perf_counter() - t0) / reps * 1e3  # ms per run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    rng = np.random.default_rng(0)
    variants = ["sym", "fzp", "u8zp", "split"]
    for label, (K, N) in SHAPES.items():
        sessions = {v: ort.InferenceSession(_graph(K, N, v, rng), so) for v in variants}
        rows = [1] if N > 100000 else [1, 512]
        for S in rows:
            x = rng.standard_normal((1, S, K)).astype(np.float32)
            reps = 20 if S == 1 else 3
            times = {v: [] for v in variants}
            for _ in range(a.rounds):
                for v in variants:
                    times[v].append(_time(sessions[v], x, reps))
            med = {v: statistics.median(t) for v, t in times.items()}
            cells = "  ".join(f"{v} {med[v]:7.2f} ms ({min(t):.2f}-{max(t):.2f}) x{med[v] / med['sym']:.2f}"
                              for v, t in times.items())
            print(f"{label:20s} rows {S:3d}: {cells}", flush=True)
        del sessions


if __name__ == "__main__":
    main()
