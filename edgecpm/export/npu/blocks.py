"""Plain-op graph blocks for NPU graphs: static shapes, float MatMuls (quantized afterwards to QDQ),
attention with an explicit additive mask, and KV as graph I/O.

Every shape is fixed: T tokens per step (1 for decode, the prefill chunk for prefill), a KV buffer of
`ctx` rows. No com.microsoft or ai.edgecpm op appears: the HTP runs standard ONNX ops only.
Activations are [1, T, hidden].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto

from edgecpm.contract import ATTENTION_MASK, POSITION_IDS, StateSpec
from edgecpm.export.blocks import inv_freq
from edgecpm.export.graph import GraphBuilder

F32, I64 = TensorProto.FLOAT, TensorProto.INT64
OPSET = 23  # RMSNormalization


@dataclass
class NpuCtx:
    """What an NPU layer builder needs: the graph, the weights, the step size T and the context."""

    g: GraphBuilder
    w: object  # export.checkpoint.Weights: w[name] -> fp32 array
    T: int
    ctx_len: int
    positions: str = ""  # position_ids [1, T]
    mask: str = ""  # attention_mask [1, 1, T, ctx + T]
    rotary: dict = field(default_factory=dict)  # rot_dim -> (cos, sin) [1, T, 1, rot/2]
    states: list[StateSpec] = field(default_factory=list)
    memo: dict = field(default_factory=dict)


def declare_inputs(c: NpuCtx) -> None:
    """position_ids and the additive attention mask (the runtime makes both)."""
    c.positions = c.g.input(POSITION_IDS, I64, [1, c.T])
    c.mask = c.g.input(ATTENTION_MASK, F32, [1, 1, c.T, c.ctx_len + c.T])


def linear(c: NpuCtx, x: str, w, name: str, bias: np.ndarray | None = None) -> str:
    """y = x @ w.T (+ bias); w [N, K] or a list stacked along N. Stored fp32 [K, N]; the QDQ pass
    quantizes it per output channel."""
    ws = w if isinstance(w, list) else [w]
    w = np.concatenate([np.asarray(p, np.float32) for p in ws]) if len(ws) > 1 else np.asarray(ws[0], np.float32)
    y = c.g.op("MatMul", x, c.g.init(f"{name}.weight", np.ascontiguousarray(w.T)), name=name)  # [1, T, N]
    return c.g.op("Add", y, c.g.init(f"{name}.bias", bias.astype(np.float32))) if bias is not None else y


def rms_norm(c: NpuCtx, x: str, weight: np.ndarray, eps: float, name: str) -> str:
    """RMSNorm over the last axis: ONNX opset 23's RMSNormalization, which the QNN EP runs as one
    RmsNorm (measured: 3e-4 max error at uint16 vs 5e-2 for Mul/ReduceMean/Sqrt/Reciprocal)."""
    return c.g.op("RMSNormalization", x, c.g.init(f"{name}.weight", weight.astype(np.float32)),
                  name=name, axis=-1, epsilon=eps)


def add_rms_norm(c: NpuCtx, x: str, residual: str | None, weight, eps: float, name: str) -> tuple[str, str]:
    """(norm(x + residual), x + residual); the first layer has no residual yet."""
    total = x if residual is None else c.g.op("Add", x, residual)
    return rms_norm(c, total, weight, eps, name), total


def embedding(c: NpuCtx, ids: str, table: np.ndarray, name: str = "model.embed_tokens") -> str:
    """ids [1, T] -> [1, T, hidden] (the table is quantized to 16 bits by the QDQ pass)."""
    return c.g.op("Gather", c.g.init(f"{name}.weight", table.astype(np.float32)), ids, name=name, axis=0)


def swiglu_mlp(c: NpuCtx, x: str, gate, up, down, prefix: str) -> str:
    """down(silu(gate x) * up x), gate and up in one MatMul."""
    g = c.g
    gu = linear(c, x, [gate, up], f"{prefix}.gate_up_proj")  # [1, T, 2I]
    a, b = g.node("Split", [gu, g.const("split_mlp", [gate.shape[0], up.shape[0]])], 2, f"{prefix}.split", axis=-1)
    return linear(c, g.op("Mul", g.op("Mul", a, g.op("Sigmoid", a)), b), down, f"{prefix}.down_proj")


def rotary_tables(c: NpuCtx, cfg: dict, rot_dim: int) -> tuple[str, str]:
    """cos/sin of this step's positions [1, T, 1, rot/2], gathered from [ctx, rot/2] tables (made once)."""
    if rot_dim not in c.rotary:
        g = c.g
        freqs = np.outer(np.arange(c.ctx_len, dtype=np.float64), inv_freq(cfg, rot_dim))  # [ctx, rot/2]
        out = []
        for fn, nm in ((np.cos, "cos"), (np.sin, "sin")):
            table = g.init(f"rotary{rot_dim}.{nm}_cache", fn(freqs).astype(np.float32))
            t = g.op("Gather", table, c.positions, axis=0)  # [1, T, rot/2]
            out.append(g.op("Reshape", t, g.const("shape_rot", [1, c.T, 1, rot_dim // 2])))  # [1, T, 1, rot/2]
        c.rotary[rot_dim] = tuple(out)
    return c.rotary[rot_dim]


def rotate(c: NpuCtx, x: str, heads: int, head_dim: int, rot_dim: int, cfg: dict) -> str:
    """Half-split rotary on the first rot_dim dims of each head. x [1, T, heads, hd] -> same."""
    g, half = c.g, rot_dim // 2
    cos, sin = rotary_tables(c, cfg, rot_dim)
    sizes = [half, half] + ([head_dim - rot_dim] if rot_dim < head_dim else [])
    parts = g.node("Split", [x, g.const(f"split_rot{len(sizes)}", sizes)], len(sizes), "rotary.split", axis=-1)
    x1, x2 = parts[0], parts[1]
    r1 = g.op("Sub", g.op("Mul", x1, cos), g.op("Mul", x2, sin))  # [1, T, heads, half]
    r2 = g.op("Add", g.op("Mul", x2, cos), g.op("Mul", x1, sin))
    return g.op("Concat", r1, r2, *parts[2:], axis=-1)  # [1, T, heads, hd]


@dataclass
class Heads:
    heads: int
    kv_heads: int
    head_dim: int
    rot_dim: int


def to_heads(c: NpuCtx, x: str, heads: int, hd: int) -> str:
    """[1, T, heads*hd] -> [1, T, heads, hd]."""
    return c.g.op("Reshape", x, c.g.const(f"shape_h{heads}x{hd}", [1, c.T, heads, hd]))


def heads_first(c: NpuCtx, x: str, heads: int, hd: int) -> str:
    """[1, T, heads*hd] -> [1, heads, T, hd]."""
    return c.g.op("Transpose", to_heads(c, x, heads, hd), perm=[0, 2, 1, 3])  # [1, heads, T, hd]


def slice_axis(c: NpuCtx, x: str, start: int, end: int, axis: int) -> str:
    """x[..., start:end, ...] along `axis` (constant bounds)."""
    g = c.g
    return g.op("Slice", x, g.const(f"start{start}", [start]), g.const(f"end{end}", [end]),
                g.const(f"axis{axis}", [axis]))


def kv_io(c: NpuCtx, layer: int, s: Heads) -> tuple[str, str]:
    """Declare the past KV buffers [1, kv, ctx, hd] (inputs) and their state specs."""
    names = []
    for part in ("key", "value"):
        i, o = f"past_key_values.{layer}.{part}", f"present.{layer}.{part}"
        c.g.input(i, F32, [1, s.kv_heads, c.ctx_len, s.head_dim])
        c.states.append(StateSpec(i, o, "kv", layer, (1, s.kv_heads, "ctx", s.head_dim)))
        names.append(i)
    return names[0], names[1]


def attention(c: NpuCtx, layer: int, q4: str, k4: str, v4: str, s: Heads, cfg: dict) -> str:
    """Softmax attention in plain ops. q4 [1, T, H, hd], k4/v4 [1, T, KV, hd] (not yet rotated) ->
    [1, T, H*hd]. The new K/V rows [1, KV, T, hd] are graph outputs present.L.key/value; the runtime
    writes them into its buffer at the step's position."""
    g, T, G = c.g, c.T, s.heads // s.kv_heads
    past_k, past_v = kv_io(c, layer, s)
    q4 = g.op("Mul", rotate(c, q4, s.heads, s.head_dim, s.rot_dim, cfg),
              g.const("attn_scale", [s.head_dim ** -0.5], np.float32))
    k_new = g.op("Transpose", rotate(c, k4, s.kv_heads, s.head_dim, s.rot_dim, cfg), perm=[0, 2, 1, 3])
    v_new = g.op("Transpose", v4, perm=[0, 2, 1, 3])  # [1, KV, T, hd]
    for value, part in ((k_new, "key"), (v_new, "value")):
        g.output(value, f"present.{layer}.{part}", F32, [1, s.kv_heads, T, s.head_dim])
    keys = g.op("Concat", past_k, k_new, axis=2)  # [1, KV, ctx+T, hd]
    vals = g.op("Concat", past_v, v_new, axis=2)
    q = g.op("Transpose", q4, perm=[0, 2, 1, 3])  # [1, H, T, hd]
    q = g.op("Reshape", q, g.const(f"shape_q{s.kv_heads}", [1, s.kv_heads, G * T, s.head_dim]))  # [1, KV, G*T, hd]
    scores = g.op("MatMul", q, g.op("Transpose", keys, perm=[0, 1, 3, 2]))  # [1, KV, G*T, ctx+T]
    if G not in c.memo:
        c.memo[G] = g.op("Tile", c.mask, g.const(f"tile_mask{G}", [1, 1, G, 1])) if G > 1 else c.mask
    probs = g.op("Softmax", g.op("Add", scores, c.memo[G]), axis=-1)  # mask rows: (group, t)
    out = g.op("MatMul", probs, vals)  # [1, KV, G*T, hd]
    out = g.op("Reshape", out, g.const(f"shape_o{s.heads}", [1, s.heads, T, s.head_dim]))  # [1, H, T, hd]
    out = g.op("Transpose", out, perm=[0, 2, 1, 3])  # [1, T, H, hd]
    return g.op("Reshape", out, g.const(f"shape_flat{s.heads * s.head_dim}", [1, T, s.heads * s.head_dim]))
