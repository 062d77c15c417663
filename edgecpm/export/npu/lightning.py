"""Lightning attention (MiniMax-01's linear attention) in plain ops for NPU graphs.

Per head, with a constant decay lam = e^{-slope} and row vectors q_t, k_t, v_t (SiLU'd, no scale):
    S_t = lam S_{t-1} + k_t^T v_t,   o_t = q_t S_t                     (S [d, d], graph I/O)
T = 1 (decode): that step, one Mul/MatMul/Add. T = n > 1 (prefill), positions i, j = 1..n in the chunk:
    O   = ((Q K^T) * D) V + (lam^i * Q) S_0,     D_ij = lam^(i - j) for i >= j, else 0
    S_n = lam^n S_0 + (lam^(n - j) * K)^T V
(transformers' MiniMaxLightningAttention block form). The decay is a constant per head, so D and the
decay vectors are constant initializers: no Exp and no cumulative sum in the graph, only MatMul, Mul,
Add, Transpose, Reshape, Slice and Concat. They feed Mul, not MatMul, so the QNN QDQ configuration
quantizes them like activations, uint16 per tensor (read from the QDQ graph; an int8 lam of 0.996
would round to 1 or 0.992). Chunks longer than chunked.SUB_CHUNK are cut into sub-chunks with the
state carried between them.
"""

from __future__ import annotations

import numpy as np

from edgecpm.export.npu import chunked
from edgecpm.export.npu.blocks import F32, NpuCtx, heads_first, slice_axis
from edgecpm.export.npu.recurrent import fixed_state


def chunk_decays(slopes: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """The constant decay tables of an n-token chunk for per-head slopes [H] (float64 inside):
    mask D [1, H, n, n], query lam^i [1, H, n, 1], key lam^(n-j) [1, H, 1, n], block lam^n [1, H, 1, 1]."""
    s = np.asarray(slopes, np.float64).reshape(-1, 1, 1)  # [H, 1, 1]
    i = np.arange(1, n + 1, dtype=np.float64)
    gap = i[:, None] - i[None, :]  # [n, n]: i - j
    mask = np.where(gap >= 0, np.exp(-s * np.maximum(gap, 0)), 0.0)  # [H, n, n]
    tables = {"mask": mask[None], "query": np.exp(-s * i[:, None])[None],  # [1, H, n, n], [1, H, n, 1]
              "key": np.exp(-s * (n - i)[None, :])[None], "block": np.exp(-s * n)[None]}  # [1, H, 1, n], [1, H, 1, 1]
    return {k: v.astype(np.float32) for k, v in tables.items()}


def lightning_attention(c: NpuCtx, layer: int, q: str, k: str, v: str, slopes: np.ndarray, *, heads: int,
                        dim: int, name: str) -> str:
    """q, k, v [1, T, H*d] -> o [1, T, H*d]; the state past_state.L.recurrent [1, H, d, d] in, the
    state after the step out. slopes [H]: the per-head decay rates (lam = e^{-slope})."""
    g, T = c.g, c.T
    S, spec = fixed_state(c, layer, "recurrent", (1, heads, dim, dim))  # [1, H, d, d]
    q4, k4, v4 = (heads_first(c, x, heads, dim) for x in (q, k, v))  # [1, H, T, d]
    outs = []
    if T == 1:
        o, S = _step(c, S, q4, k4, v4, slopes, name)  # o [1, H, 1, d]
        outs.append(o)
    for start in range(0, T if T > 1 else 0, chunked.SUB_CHUNK):
        end = min(T, start + chunked.SUB_CHUNK)
        parts = [x if end - start == T else slice_axis(c, x, start, end, 2) for x in (q4, k4, v4)]
        o, S = _chunk(c, S, *parts, slopes, end - start, name)  # o [1, H, end - start, d]
        outs.append(o)
    g.output(S, spec.output, F32, list(spec.shape))
    o = outs[0] if len(outs) == 1 else g.op("Concat", *outs, axis=2)  # [1, H, T, d]
    o = g.op("Transpose", o, perm=[0, 2, 1, 3])  # [1, T, H, d]
    return g.op("Reshape", o, g.const(f"shape_flat{heads * dim}", [1, T, heads * dim]))  # [1, T, H*d]


def _tables(c: NpuCtx, slopes: np.ndarray, n: int, name: str) -> dict[str, str]:
    """chunk_decays(slopes, n) as initializers, made once per layer and chunk length."""
    key = (name, n)
    if key not in c.memo:
        c.memo[key] = {k: c.g.init(f"{name}.decay_{k}{n}", t) for k, t in chunk_decays(slopes, n).items()}
    return c.memo[key]


def _step(c: NpuCtx, S: str, q: str, k: str, v: str, slopes: np.ndarray, name: str) -> tuple[str, str]:
    """One token: q, k, v [1, H, 1, d], S [1, H, d, d] -> (o [1, H, 1, d], lam S + k^T v)."""
    g = c.g
    lam = np.exp(-np.asarray(slopes, np.float64)).astype(np.float32).reshape(1, -1, 1, 1)  # [1, H, 1, 1]
    lam = g.init(f"{name}.decay_step", lam)
    kt = g.op("Transpose", k, perm=[0, 1, 3, 2])  # [1, H, d, 1]
    S = g.op("Add", g.op("Mul", S, lam), g.op("MatMul", kt, v))  # [1, H, d, d]
    return g.op("MatMul", q, S), S  # [1, H, 1, d]


def _chunk(c: NpuCtx, S: str, q: str, k: str, v: str, slopes: np.ndarray, n: int, name: str) -> tuple[str, str]:
    """n tokens: q, k, v [1, H, n, d], S [1, H, d, d] -> (o [1, H, n, d], the state after the chunk)."""
    g = c.g
    d = _tables(c, slopes, n, name)
    kt = g.op("Transpose", k, perm=[0, 1, 3, 2])  # [1, H, d, n]
    intra = g.op("MatMul", g.op("Mul", g.op("MatMul", q, kt), d["mask"]), v)  # [1, H, n, d]: ((Q K^T) * D) V
    inter = g.op("MatMul", g.op("Mul", q, d["query"]), S)  # [1, H, n, d]: (lam^i Q) S_0
    new = g.op("MatMul", g.op("Mul", kt, d["key"]), v)  # [1, H, d, d]: (lam^(n-j) K)^T V
    return g.op("Add", intra, inter), g.op("Add", g.op("Mul", S, d["block"]), new)
