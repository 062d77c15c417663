"""Qwen3.5 (text stack) on the NPU: Gated DeltaNet layers (the recurrence unrolled over the step's
tokens in plain ops) and gated softmax attention with q/k RMSNorm and partial rotary.

model_args and sanitize (the (1 + w) norm offsets folded, q/gate rows reordered) stay the CPU
exporter's (edgecpm/export/models/qwen3_5_text.py), so both artifacts read the same weights.
"""

from __future__ import annotations

import numpy as np

from edgecpm.export.decoder import Args
from edgecpm.export.npu.blocks import Heads, NpuCtx, attention, linear, rms_norm, to_heads
from edgecpm.export.npu.recurrent import causal_conv, gated_delta, l2_normalize_heads, repeat_heads


def gated_attention(c: NpuCtx, a: Args, i: int, x: str) -> str:
    """[q | gate | k | v] = x W; attention over q/k-normed heads; out * sigmoid(gate); o_proj."""
    p, w, g = f"{a.prefix}.layers.{i}.self_attn", c.w, c.g
    s = Heads(a.num_attention_heads, a.num_key_value_heads, a.head_dim, a.extra["rotary_dim"])
    ws = [w[f"{p}.q_proj.weight"], w[f"{p}.k_proj.weight"], w[f"{p}.v_proj.weight"]]  # q rows then gate rows
    y = linear(c, x, ws, f"{p}.qgkv_proj")  # [1, T, 2 H hd + 2 KV hd]
    qd, kd = s.heads * s.head_dim, s.kv_heads * s.head_dim
    q, gate, k, v = g.node("Split", [y, g.const("split_qgkv", [qd, qd, kd, kd])], 4, f"{p}.split", axis=-1)
    q = rms_norm(c, to_heads(c, q, s.heads, s.head_dim), w[f"{p}.q_norm.weight"], a.rms_norm_eps, f"{p}.q_norm")
    k = rms_norm(c, to_heads(c, k, s.kv_heads, s.head_dim), w[f"{p}.k_norm.weight"], a.rms_norm_eps, f"{p}.k_norm")
    out = attention(c, i, q, k, to_heads(c, v, s.kv_heads, s.head_dim), s, a.cfg)  # [1, T, H hd]
    out = g.op("Mul", out, g.op("Sigmoid", gate))
    return linear(c, out, w[f"{p}.o_proj.weight"], f"{p}.o_proj")


def gated_deltanet(c: NpuCtx, a: Args, i: int, x: str) -> str:
    """in_proj [q; k; v; z; b; a] -> causal conv (SiLU) -> L2-normed q, k -> gated delta rule ->
    RMSNorm gated by SiLU(z) -> out_proj."""
    p, w, g, cfg = f"{a.prefix}.layers.{i}.linear_attn", c.w, c.g, a.cfg
    hk, hv = int(cfg["linear_num_key_heads"]), int(cfg["linear_num_value_heads"])
    dk, dv = int(cfg["linear_key_head_dim"]), int(cfg["linear_value_head_dim"])
    kd, vd = hk * dk, hv * dv
    ws = [w[f"{p}.in_proj_{n}.weight"] for n in ("qkv", "z", "b", "a")]
    y = linear(c, x, ws, f"{p}.in_proj")  # [1, T, 2kd + vd + vd + 2 hv]
    qkv, z, b, dt = g.node("Split", [y, g.const("split_gdn", [2 * kd + vd, vd, hv, hv])], 4, f"{p}.split", axis=-1)
    qkv = causal_conv(c, i, qkv, w[f"{p}.conv1d.weight"], f"{p}.conv1d", silu=True)  # [1, T, 2kd + vd]
    q, k, v = g.node("Split", [qkv, g.const("split_qkv_gdn", [kd, kd, vd])], 3, f"{p}.split_qkv", axis=-1)
    q = repeat_heads(c, l2_normalize_heads(c, q, hk, dk, 1e-6), hk, dk, hv // hk)  # [1, T, hv dk]
    k = repeat_heads(c, l2_normalize_heads(c, k, hk, dk, 1e-6), hk, dk, hv // hk)  # [1, T, hv dk]
    beta = g.op("Sigmoid", b)  # [1, T, hv]
    dt = g.op("Softplus", g.op("Add", dt, g.init(f"{p}.dt_bias", w[f"{p}.dt_bias"])))  # [1, T, hv]
    neg_a = g.init(f"{p}.neg_A", -np.exp(w[f"{p}.A_log"].astype(np.float64)).astype(np.float32))  # [hv]
    decay = g.op("Mul", dt, neg_a)  # [1, T, hv]: g = -exp(A_log) softplus(a + dt_bias)
    o = gated_delta(c, i, q, k, v, decay, beta, heads=hv, dk=dk, dv=dv, name=f"{p}.gated_delta")  # [1, T, hv dv]
    o = rms_norm(c, to_heads(c, o, hv, dv), w[f"{p}.norm.weight"], a.rms_norm_eps, f"{p}.norm")  # [1, T, hv, dv]
    z = to_heads(c, z, hv, dv)  # [1, T, hv, dv]
    o = g.op("Mul", o, g.op("Mul", z, g.op("Sigmoid", z)))  # norm(o) * silu(z)
    o = g.op("Reshape", o, g.const(f"shape_flat{vd}", [1, c.T, vd]))  # [1, T, hv dv]
    return linear(c, o, w[f"{p}.out_proj.weight"], f"{p}.out_proj")


LAYERS = {"linear_attention": gated_deltanet, "full_attention": gated_attention}
