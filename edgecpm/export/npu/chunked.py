"""The gated delta rule in chunked (WY / UT-transform) matmul form, for NPU prefill graphs (T > 1).

The recurrence (per head; S [dk, dv], k_t, q_t row vectors, g_t <= 0 the log decay)
    S_t = e^{g_t} S_{t-1} + beta_t k_t^T (v_t - k_t e^{g_t} S_{t-1}),   o_t = q_t S_t
is, over a chunk of n tokens with G_i = g_1 + ... + g_i and D_ij = e^{G_i - G_j} (i >= j, else 0):
    (I + A) U = beta V - diag(beta e^G) K S_0,   A_ij = beta_i (k_i . k_j) D_ij for i > j
    O = diag(e^G) Q S_0 + ((Q K^T) * D) U,       S_n = e^{G_n} S_0 + (K * D_n,:^T)^T U
(flash-linear-attention's chunk_gated_delta_rule; transformers' torch_chunk_gated_delta_rule).
A is strictly lower triangular, so (I + A)^-1 = (I - N)^-1 = (I + N)(I + N^2)(I + N^4)... with
N = -A: ceil(log2 n) factors, each applied to the right-hand side as one MatMul plus one squaring.
Cumulative sums are a MatMul with a constant upper-triangular ones matrix and the masks are constant
tensors, so the graph has only MatMul/Mul/Add/Sub/Exp/Slice/Concat/Split/Transpose/Reshape. Every
Exp reads a value <= 0 (the differences are masked to 0 above the diagonal before it, and masked out
after it), so the exponentials lie in [0, 1]: bounded ranges for the uint16 activations of the QDQ
pass. Chunks longer than SUB_CHUNK are cut into sub-chunks with the state carried between them.
"""

from __future__ import annotations

import numpy as np

from edgecpm.export.npu.blocks import NpuCtx, heads_first, slice_axis

SUB_CHUNK = 64  # tokens per chunk of the matmul form; a longer step is cut into such sub-chunks


def gated_delta_chunked(c: NpuCtx, state: str, q: str, k: str, v: str, decay: str, beta: str, *, heads: int,
                        dk: int, dv: int) -> tuple[str, str]:
    """The gated delta rule over the step's T tokens in chunked matmul form. state [1, H, dk, dv];
    q (already scaled by dk^-0.5), k [1, T, H*dk]; v [1, T, H*dv]; decay (log, g) and beta [1, T, H].
    Returns (o [1, T, H*dv], the state after the step [1, H, dk, dv])."""
    g, T = c.g, c.T
    q4, k4, v4 = (heads_first(c, x, heads, d) for x, d in ((q, dk), (k, dk), (v, dv)))  # [1, H, T, d]
    g_row = g.op("Reshape", g.op("Transpose", decay, perm=[0, 2, 1]),
                 g.const(f"shape_row{heads}x{T}", [1, heads, 1, T]))  # [1, T, H] -> [1, H, T] -> [1, H, 1, T]
    b_col = g.op("Reshape", g.op("Transpose", beta, perm=[0, 2, 1]),
                 g.const(f"shape_col{heads}x{T}", [1, heads, T, 1]))  # [1, T, H] -> [1, H, T] -> [1, H, T, 1]
    outs = []
    for start in range(0, T, SUB_CHUNK):
        end = min(T, start + SUB_CHUNK)
        parts = [x if end - start == T else slice_axis(c, x, start, end, axis)
                 for x, axis in ((q4, 2), (k4, 2), (v4, 2), (g_row, 3), (b_col, 2))]  # this sub-chunk's tokens
        o, state = _chunk(c, state, *parts, end - start, dk, dv)  # o [1, H, n, dv]
        outs.append(o)
    o = outs[0] if len(outs) == 1 else g.op("Concat", *outs, axis=2)  # [1, H, T, dv]
    o = g.op("Transpose", o, perm=[0, 2, 1, 3])  # [1, T, H, dv]
    return g.op("Reshape", o, g.const(f"shape_flat{heads * dv}", [1, T, heads * dv])), state  # [1, T, H*dv]


def _masks(c: NpuCtx, n: int) -> tuple[str, str, str]:
    """Constant [n, n] matrices: upper-triangular ones (a cumulative sum as x @ it), the lower
    triangle with the diagonal (i >= j) and minus the strictly lower one (i > j)."""
    ones = np.ones((n, n), np.float32)
    g = c.g
    return (g.const(f"cumsum{n}", np.triu(ones), np.float32), g.const(f"tril{n}", np.tril(ones), np.float32),
            g.const(f"neg_strict_tril{n}", -np.tril(ones, -1), np.float32))


def _chunk(c: NpuCtx, state: str, q: str, k: str, v: str, g_row: str, b_col: str, n: int, dk: int,
           dv: int) -> tuple[str, str]:
    """One chunk of n tokens: q, k [1, H, n, dk], v [1, H, n, dv], g_row [1, H, 1, n], b_col [1, H, n, 1],
    state [1, H, dk, dv] -> (o [1, H, n, dv], the state after the chunk)."""
    g = c.g
    cumsum, tril, neg_strict = _masks(c, n)
    cum_row = g.op("MatMul", g_row, cumsum)  # [1, H, 1, n]: G_i = sum_{j <= i} g_j
    cum_col = g.op("Transpose", cum_row, perm=[0, 1, 3, 2])  # [1, H, n, 1]
    diff = g.op("Mul", g.op("Sub", cum_col, cum_row), tril)  # [1, H, n, n]: G_i - G_j <= 0 where i >= j, else 0
    pair = g.op("Mul", g.op("Exp", diff), tril)  # [1, H, n, n]: D_ij = e^{G_i - G_j} (i >= j), 0 above
    e_col = g.op("Exp", cum_col)  # [1, H, n, 1]: e^{G_i}, the decay since the chunk's start
    kt = g.op("Transpose", k, perm=[0, 1, 3, 2])  # [1, H, dk, n]
    kb = g.op("Mul", k, b_col)  # [1, H, n, dk]: beta_i k_i
    nil = g.op("Mul", g.op("MatMul", kb, kt), g.op("Mul", pair, neg_strict))  # [1, H, n, n]: N = -A
    rhs = g.op("Concat", g.op("Mul", v, b_col), g.op("Mul", kb, e_col), axis=3)  # [1, H, n, dv + dk]
    u0, w = g.node("Split", [_solve(c, nil, rhs, n), g.const("split_uw", [dv, dk])], 2, "gdn.uw", axis=3)
    u = g.op("Sub", u0, g.op("MatMul", w, state))  # [1, H, n, dv]: U = (I + A)^-1 (beta V - beta e^G K S_0)
    attn = g.op("Mul", g.op("MatMul", q, kt), pair)  # [1, H, n, n]: (Q K^T) * D
    o = g.op("Add", g.op("MatMul", g.op("Mul", q, e_col), state), g.op("MatMul", attn, u))  # [1, H, n, dv]
    last = slice_axis(c, pair, n - 1, n, 2)  # [1, H, 1, n]: e^{G_n - G_j}
    total = slice_axis(c, e_col, n - 1, n, 2)  # [1, H, 1, 1]: e^{G_n}
    new = g.op("Add", g.op("Mul", state, total), g.op("MatMul", g.op("Mul", kt, last), u))  # [1, H, dk, dv]
    return o, new


def _solve(c: NpuCtx, nil: str, rhs: str, n: int) -> str:
    """(I - N)^-1 rhs for N [1, H, n, n] strictly lower triangular (nilpotent: N^n = 0), as
    (I + N^(2^m)) ... (I + N^2)(I + N) rhs: 2 ceil(log2 n) - 1 MatMuls. rhs [1, H, n, m] -> same."""
    g = c.g
    x = g.op("Add", rhs, g.op("MatMul", nil, rhs))  # (I + N) rhs
    power, span = nil, 2  # x holds sum_{p < span} N^p rhs
    while span < n:
        power = g.op("MatMul", power, power)  # N^span
        x = g.op("Add", x, g.op("MatMul", power, x))
        span *= 2
    return x
