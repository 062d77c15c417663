"""Qwen3.5 (text stack): Gated DeltaNet layers interleaved with gated softmax attention (3:1).

GDN layer: in_proj_qkv -> causal conv (SiLU) -> q, k, v; L2-normalised q, k; beta = sigmoid(in_proj_b x);
g = -exp(A_log) * softplus(in_proj_a x + dt_bias); gated delta rule; RMSNorm gated by SiLU(in_proj_z x);
out_proj. Attention layer: q_proj also yields a sigmoid output gate; q/k RMSNorm; partial rotary; GQA.
Qwen3.5's RMSNorm multiplies by (1 + w); sanitize() folds the 1 into the weights. The GDN's gated
norm uses w as is. Also reads the text stack of Qwen3_5ForConditionalGeneration (vision tower ignored).
"""

from __future__ import annotations

import numpy as np

from edgecpm.contract import UserError
from edgecpm.export import decoder
from edgecpm.export.blocks import AttnShape, Ctx, gqa, head_norm, linear, rms_norm, rotary_caches
from edgecpm.export.decoder import Args
from edgecpm.export.recurrent import (
    causal_conv,
    l2_normalize_heads,
    linear_attention,
    repeat_heads,
)

ONE_PLUS_W = ("input_layernorm.weight", "post_attention_layernorm.weight", "q_norm.weight", "k_norm.weight")


def model_args(cfg: dict) -> Args:
    prefix = "model"
    if "text_config" in cfg:  # Qwen3_5ForConditionalGeneration: the language model inside
        cfg = {**cfg["text_config"], "model_type": "qwen3_5_text", "tie_word_embeddings":
               cfg.get("tie_word_embeddings", cfg["text_config"].get("tie_word_embeddings", False))}
        prefix = "model.language_model"
    interval = int(cfg.get("full_attention_interval", 4))
    default = ["full_attention" if (i + 1) % interval == 0 else "linear_attention"
               for i in range(int(cfg["num_hidden_layers"]))]
    args = Args.from_config({**cfg, "layer_types": cfg.get("layer_types") or default})
    args.prefix, args.embed_name = prefix, f"{prefix}.embed_tokens.weight"
    rp = cfg.get("rope_parameters") or {}
    args.extra["rotary_dim"] = int(args.head_dim * float(rp.get("partial_rotary_factor",
                                                                cfg.get("partial_rotary_factor", 1.0))))
    if args.extra["rotary_dim"] % 16:
        raise UserError(f"rotary dimension {args.extra['rotary_dim']} (head_dim x partial_rotary_factor) is not a "
                        "multiple of 16, which onnxruntime's GroupQueryAttention needs")
    decoder.check_layer_types(args, LAYERS)
    return args


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    if name.endswith(ONE_PLUS_W) or name == f"{args.prefix}.norm.weight":
        return w + 1.0
    if name.endswith("self_attn.q_proj.weight"):  # per head [q(hd); gate(hd)] -> [q (all heads); gate]
        H, hd = args.num_attention_heads, args.head_dim
        return w.reshape(H, 2, hd, -1).swapaxes(0, 1).reshape(w.shape)
    return w


def attention(c: Ctx, a: Args, i: int, x: str) -> str:
    """[q | gate | k | v] = x W; GQA over q/k-normed heads; out * sigmoid(gate); o_proj."""
    p, w, g = f"{a.prefix}.layers.{i}.self_attn", c.w, c.g
    s = AttnShape(a.num_attention_heads, a.num_key_value_heads, a.head_dim)
    qg = w[f"{p}.q_proj.weight"]  # [2 H hd, hidden]: q rows then gate rows (sanitize)
    ws = [qg, w[f"{p}.k_proj.weight"], w[f"{p}.v_proj.weight"]]
    y = linear(c, x, np.concatenate(ws), f"{p}.qgkv_proj")  # [1, S, 2 H hd + 2 KV hd]
    qd, kd = s.heads * s.head_dim, s.kv_heads * s.head_dim
    q, gate, k, v = g.node("Split", [y, g.const("split_qgkv", [qd, qd, kd, kd])], 4, f"{p}.split", axis=-1)
    q = head_norm(c, q, w[f"{p}.q_norm.weight"], s.heads, s.head_dim, a.rms_norm_eps, f"{p}.q_norm")
    k = head_norm(c, k, w[f"{p}.k_norm.weight"], s.kv_heads, s.head_dim, a.rms_norm_eps, f"{p}.k_norm")
    out = gqa(c, i, q, k, v, s, p)  # [1, S, H hd]
    out = g.op("Mul", out, g.op("Sigmoid", gate))
    return linear(c, out, w[f"{p}.o_proj.weight"], f"{p}.o_proj")


def gated_deltanet(c: Ctx, a: Args, i: int, x: str, in_proj: list | None = None) -> str:
    """in_proj: the input projection's row blocks, stacked they must be [q; k; v; z; b; a] (all heads
    each); default Qwen3.5's in_proj_qkv, _z, _b, _a (Qwen3-Next passes its reordered qkvz, ba)."""
    p, w, g, cfg = f"{a.prefix}.layers.{i}.linear_attn", c.w, c.g, a.cfg
    hk, hv = int(cfg["linear_num_key_heads"]), int(cfg["linear_num_value_heads"])
    dk, dv = int(cfg["linear_key_head_dim"]), int(cfg["linear_value_head_dim"])
    kd, vd = hk * dk, hv * dv
    ws = in_proj or [w[f"{p}.in_proj_{n}.weight"] for n in ("qkv", "z", "b", "a")]
    y = linear(c, x, np.concatenate(ws), f"{p}.in_proj")  # [1, S, 2kd + vd + vd + 2 hv]
    qkv, z, b, dt = g.node("Split", [y, g.const("split_gdn", [2 * kd + vd, vd, hv, hv])], 4, f"{p}.split", axis=-1)
    qkv = causal_conv(c, i, qkv, w[f"{p}.conv1d.weight"], f"{p}.conv1d", activation="silu")  # [1, S, 2kd+vd]
    q, k, v = g.node("Split", [qkv, g.const("split_qkv_gdn", [kd, kd, vd])], 3, f"{p}.split_qkv", axis=-1)
    q = l2_normalize_heads(c, q, hk, dk, 1e-6, f"{p}.q_l2norm")  # [1, S, hk dk]
    k = repeat_heads(c, l2_normalize_heads(c, k, hk, dk, 1e-6, f"{p}.k_l2norm"), hk, dk, hv // hk)  # [1, S, hv dk]
    beta = g.op("Sigmoid", b)  # [1, S, hv]
    dt = g.op("Softplus", g.op("Add", dt, g.init(f"{p}.dt_bias", w[f"{p}.dt_bias"])))  # [1, S, hv]
    neg_a = g.init(f"{p}.neg_A", -np.exp(w[f"{p}.A_log"].astype(np.float64)).astype(np.float32))  # [hv]
    decay = g.op("Mul", dt, neg_a)  # [1, S, hv]: g = -exp(A_log) softplus(a + dt_bias)
    o = linear_attention(c, i, q, k, v, decay, beta, q_heads=hk, kv_heads=hv, dk=dk, dv=dv,
                         rule="gated_delta", name=f"{p}.gated_delta")  # [1, S, hv dv]
    o = g.op("Reshape", o, g.const("shape_heads", [0, 0, hv, dv]))  # [1, S, hv, dv]
    o = rms_norm(c, o, w[f"{p}.norm.weight"], a.rms_norm_eps, f"{p}.norm")
    z = g.op("Reshape", z, g.const("shape_heads", [0, 0, hv, dv]))  # [1, S, hv, dv]
    o = g.op("Mul", o, g.op("Mul", z, g.op("Sigmoid", z)))  # norm(o) * silu(z)
    o = g.op("Reshape", o, g.const("shape_flat", [0, 0, vd]))  # [1, S, hv dv]
    return linear(c, o, w[f"{p}.out_proj.weight"], f"{p}.out_proj")


LAYERS = {"linear_attention": gated_deltanet, "full_attention": attention}


def build(c: Ctx, a: Args, progress=None) -> None:
    rotary_caches(c, a.cfg, a.extra["rotary_dim"])
    decoder.build(c, a, LAYERS, progress=progress)
