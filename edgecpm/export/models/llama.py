"""Llama (and SmolLM2): RMSNorm, GQA attention with rotary, SwiGLU MLP."""

from __future__ import annotations

import numpy as np

from edgecpm.export import decoder
from edgecpm.export.blocks import AttnShape, Ctx, gqa, head_norm, linear, rotary_caches
from edgecpm.export.decoder import Args


def model_args(cfg: dict) -> Args:
    args = Args.from_config(cfg)
    decoder.check_layer_types(args, LAYERS)
    return args


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved-pair rotary -> HF's half-split rotary)."""
    rows = w.shape[0]
    # GGUF rows per head are (pair j, half h) -> j*2 + h; HF's are h*(hd/2) + j.
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    if source_kind == "gguf":
        if name.endswith("self_attn.q_proj.weight"):
            return _unpermute(w, args.num_attention_heads)
        if name.endswith("self_attn.k_proj.weight"):
            return _unpermute(w, args.num_key_value_heads)
    return w


def attn_shape(a: Args) -> AttnShape:
    return AttnShape(a.num_attention_heads, a.num_key_value_heads, a.head_dim)


def attention(c: Ctx, a: Args, i: int, x: str, qk_norm: bool = False, norm_names=("q_norm", "k_norm"),
              o_name: str = "o_proj") -> str:
    """Fused QKV projection -> (optional per-head q/k norm) -> GroupQueryAttention -> o_proj."""
    p, s = f"{a.prefix}.layers.{i}.self_attn", attn_shape(a)
    ws = [c.w[f"{p}.{n}_proj.weight"] for n in "qkv"]
    bias = np.concatenate([c.w[f"{p}.{n}_proj.bias"] for n in "qkv"]) if f"{p}.q_proj.bias" in c.w else None
    qkv = linear(c, x, ws, f"{p}.qkv_proj", bias=bias)  # [1, S, (H + 2 KV) hd]
    if not qk_norm:
        out = gqa(c, i, qkv, "", "", s, p)
    else:
        sizes = c.g.const("split_qkv", [w.shape[0] for w in ws])
        q, k, v = c.g.node("Split", [qkv, sizes], 3, f"{p}.split", axis=-1)
        qn, kn = (f"{p}.{n}" for n in norm_names)
        q = head_norm(c, q, c.w[f"{qn}.weight"], s.heads, s.head_dim, a.rms_norm_eps, qn)
        k = head_norm(c, k, c.w[f"{kn}.weight"], s.kv_heads, s.head_dim, a.rms_norm_eps, kn)
        out = gqa(c, i, q, k, v, s, p)
    bias = c.w[f"{p}.{o_name}.bias"] if f"{p}.{o_name}.bias" in c.w else None
    return linear(c, out, c.w[f"{p}.{o_name}.weight"], f"{p}.{o_name}", bias=bias)


LAYERS = {"full_attention": attention}


def build(c: Ctx, a: Args, progress=None) -> None:
    rotary_caches(c, a.cfg, a.head_dim)
    decoder.build(c, a, LAYERS, progress=progress)
