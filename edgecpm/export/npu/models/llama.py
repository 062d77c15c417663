"""Llama (SmolLM2) on the NPU: fused QKV MatMul, rotary and masked softmax attention in plain ops."""

from __future__ import annotations

import numpy as np

from edgecpm.export.decoder import Args
from edgecpm.export.npu.blocks import Heads, NpuCtx, attention, linear, rms_norm, to_heads


def heads(a: Args, rot_dim: int | None = None) -> Heads:
    return Heads(a.num_attention_heads, a.num_key_value_heads, a.head_dim, rot_dim or a.head_dim)


def self_attention(c: NpuCtx, a: Args, i: int, x: str, qk_norm: tuple | None = None, o_name: str = "o_proj") -> str:
    """QKV -> (optional per-head q/k RMSNorm, names qk_norm) -> attention -> o_proj."""
    p, s, g = f"{a.prefix}.layers.{i}.self_attn", heads(a), c.g
    ws = [c.w[f"{p}.{n}_proj.weight"] for n in "qkv"]
    bias = np.concatenate([c.w[f"{p}.{n}_proj.bias"] for n in "qkv"]) if f"{p}.q_proj.bias" in c.w else None
    qkv = linear(c, x, ws, f"{p}.qkv_proj", bias=bias)  # [1, T, (H + 2 KV) hd]
    q, k, v = g.node("Split", [qkv, g.const("split_qkv", [w.shape[0] for w in ws])], 3, f"{p}.split", axis=-1)
    q, k, v = (to_heads(c, t, h, s.head_dim) for t, h in ((q, s.heads), (k, s.kv_heads), (v, s.kv_heads)))
    if qk_norm:
        q = rms_norm(c, q, c.w[f"{p}.{qk_norm[0]}.weight"], a.rms_norm_eps, f"{p}.{qk_norm[0]}")
        k = rms_norm(c, k, c.w[f"{p}.{qk_norm[1]}.weight"], a.rms_norm_eps, f"{p}.{qk_norm[1]}")
    out = attention(c, i, q, k, v, s, a.cfg)  # [1, T, H hd]
    bias = c.w[f"{p}.{o_name}.bias"] if f"{p}.{o_name}.bias" in c.w else None
    return linear(c, out, c.w[f"{p}.{o_name}.weight"], f"{p}.{o_name}", bias=bias)


LAYERS = {"full_attention": self_attention}
