"""Linear layers in plain ops for NPU graphs: the depthwise causal conv and the gated delta rule.

The HTP has no Loop/Scan and no ai.edgecpm op, so over the step's T tokens (1 for decode, the
prefill chunk for prefill) the conv is K shifted slices times its taps; the recurrence is one
MatMul/Mul/Add update of the state for T = 1 and the chunked matmul form (chunked.py) for T > 1.
States are the CPU artifact's (conv [1, C, K-1], recurrent [1, H, dk, dv]) and are graph I/O.
"""

from __future__ import annotations

import numpy as np

from edgecpm.contract import StateSpec
from edgecpm.export.npu import chunked
from edgecpm.export.npu.blocks import F32, NpuCtx, slice_axis


def fixed_state(c: NpuCtx, layer: int, kind: str, shape: tuple) -> tuple[str, StateSpec]:
    """Declare past_state.L.kind [shape]; returns (input name, spec)."""
    spec = StateSpec(f"past_state.{layer}.{kind}", f"present_state.{layer}.{kind}", kind, layer, tuple(shape))
    c.g.input(spec.input, F32, list(shape))
    c.states.append(spec)
    return spec.input, spec


def causal_conv(c: NpuCtx, layer: int, x: str, weight: np.ndarray, name: str, bias: np.ndarray | None = None,
                silu: bool = False) -> str:
    """Depthwise causal conv over time with a carried window. x [1, T, C] -> [1, T, C]; weight [C, 1, K].
    y[t] = sum_k w[:, k] * window[:, t + k] over window = [past (K-1) ; x (T)]."""
    g, T = c.g, c.T
    C, _, K = weight.shape
    past, spec = fixed_state(c, layer, "conv", (1, C, K - 1))  # [1, C, K-1]
    window = g.op("Concat", past, g.op("Transpose", x, perm=[0, 2, 1]), axis=2)  # [1, C, K-1+T]
    y = None
    for k in range(K):
        piece = slice_axis(c, window, k, k + T, 2)  # [1, C, T]
        tap = g.init(f"{name}.tap{k}", weight[:, 0, k].astype(np.float32).reshape(1, C, 1))  # [1, C, 1]
        term = g.op("Mul", piece, tap)
        y = term if y is None else g.op("Add", y, term)
    present = slice_axis(c, window, T, T + K - 1, 2)  # [1, C, K-1]: the last K-1 inputs
    c.g.output(present, spec.output, F32, list(spec.shape))
    if bias is not None:
        y = g.op("Add", y, g.init(f"{name}.conv_bias", bias.astype(np.float32).reshape(1, C, 1)))
    if silu:
        y = g.op("Mul", y, g.op("Sigmoid", y))
    return g.op("Transpose", y, perm=[0, 2, 1])  # [1, T, C]


def _steps(c: NpuCtx, x: str, heads: int, dim: int, axis: int, name: str) -> list[str]:
    """[1, T, heads*dim] -> T pieces along `axis` of [1, heads, T, dim] (axis 2) or of its transpose
    [1, heads, dim, T] (axis 3)."""
    g, T = c.g, c.T
    x4 = g.op("Reshape", x, g.const(f"shape_h{heads}x{dim}", [1, T, heads, dim]))  # [1, T, heads, dim]
    x4 = g.op("Transpose", x4, perm=[0, 2, 1, 3] if axis == 2 else [0, 2, 3, 1])  # [1, h, T, d] / [1, h, d, T]
    if T == 1:
        return [x4]
    return g.node("Split", [x4, g.const(f"split_ones{T}", [1] * T)], T, name, axis=axis)


def gated_delta(c: NpuCtx, layer: int, q: str, k: str, v: str, decay: str, beta: str, *, heads: int, dk: int,
                dv: int, name: str) -> str:
    """The gated delta rule. q, k [1, T, H*dk] (heads already matched to v's), v [1, T, H*dv], decay (log, g)
    and beta [1, T, H] -> [1, T, H*dv]. Per step: S *= e^g; S += k^T (beta (v - k S)); o = q S / sqrt(dk).
    T = 1 (decode): that step in plain ops; T > 1 (prefill): the chunked matmul form (chunked.py)."""
    g, T = c.g, c.T
    S, spec = fixed_state(c, layer, "recurrent", (1, heads, dk, dv))  # [1, H, dk, dv]
    q = g.op("Mul", q, g.const("gdn_scale", [dk ** -0.5], np.float32))
    if T > 1:
        o, S = chunked.gated_delta_chunked(c, S, q, k, v, decay, beta, heads=heads, dk=dk, dv=dv)
        c.g.output(S, spec.output, F32, list(spec.shape))
        return o
    qs = _steps(c, q, heads, dk, 2, f"{name}.q")
    ks, kts = _steps(c, k, heads, dk, 2, f"{name}.k"), _steps(c, k, heads, dk, 3, f"{name}.kt")
    vs = _steps(c, v, heads, dv, 2, f"{name}.v")  # each [1, H, 1, dv]
    es = _steps(c, g.op("Exp", decay), heads, 1, 2, f"{name}.decay")  # each [1, H, 1, 1]
    bs = _steps(c, beta, heads, 1, 2, f"{name}.beta")
    outs = []
    for t in range(T):
        S = g.op("Mul", S, es[t])  # [1, H, dk, dv]
        delta = g.op("Mul", g.op("Sub", vs[t], g.op("MatMul", ks[t], S)), bs[t])  # [1, H, 1, dv]
        S = g.op("Add", S, g.op("MatMul", kts[t], delta))  # [1, H, dk, dv]
        outs.append(g.op("MatMul", qs[t], S))  # [1, H, 1, dv]
    c.g.output(S, spec.output, F32, list(spec.shape))
    o = outs[0] if T == 1 else g.op("Concat", *outs, axis=2)  # [1, H, T, dv]
    o = g.op("Transpose", o, perm=[0, 2, 1, 3])  # [1, T, H, dv]
    return g.op("Reshape", o, g.const(f"shape_flat{heads * dv}", [1, T, heads * dv]))  # [1, T, H*dv]


def l2_normalize_heads(c: NpuCtx, x: str, heads: int, dim: int, eps: float) -> str:
    """Per-head x / sqrt(sum(x^2) + eps) as ONNX LpNormalization (the QNN EP runs it; eps is tiny
    next to these unit-scale sums). [1, T, heads*dim] -> same."""
    g = c.g
    x4 = g.op("Reshape", x, g.const(f"shape_h{heads}x{dim}", [1, c.T, heads, dim]))  # [1, T, heads, dim]
    y = g.op("LpNormalization", x4, axis=-1, p=2)
    return g.op("Reshape", y, g.const(f"shape_flat{heads * dim}", [1, c.T, heads * dim]))  # [1, T, heads*dim]


def repeat_heads(c: NpuCtx, x: str, heads: int, dim: int, r: int) -> str:
    """repeat_interleave over heads: [1, T, heads*dim] -> [1, T, heads*r*dim]."""
    if r == 1:
        return x
    g = c.g
    x4 = g.op("Reshape", x, g.const(f"shape_h{heads}x{dim}", [1, c.T, heads, dim]))  # [1, T, heads, dim]
    x4 = g.op("Concat", *([x4] * r), axis=3)  # [1, T, heads, r*dim]: each head's r copies side by side
    return g.op("Reshape", x4, g.const(f"shape_flat{heads * r * dim}", [1, c.T, heads * r * dim]))
