"""MiniMax-01 "Lightning": constant-decay linear attention layers with a softmax layer every
`layer_types` says (7:1), scaled residuals, and a sparse MoE feed-forward.

Lightning layer: SiLU(qkv_proj x) -> per head q, k, v; S = exp(-slope) S + k v^T, o = q S (the
`gated` rule with a constant per-head g = -slope, scale 1); RMSNorm over all heads; * sigmoid(output_gate x);
out_proj. The slope depends on the head and the layer index (computed here, as transformers does).
Block: h = norm1(x); h = a*h + b*mixer(h); h = norm2(h); out = a'*h + b'*moe(h).
MoE: softmax router, top-k, renormalised. One expert is an MLP; with more, the routed MoE node
(edgecpm.export.moe: com.microsoft MoE / QMoE) runs only the top-k experts per token.
"""

from __future__ import annotations

import numpy as np

from edgecpm.export import decoder
from edgecpm.export.blocks import Ctx, linear, rms_norm, rotary_caches, swiglu_mlp
from edgecpm.export.decoder import Args
from edgecpm.export.models import llama
from edgecpm.export.moe import routed_moe, stack_experts
from edgecpm.export.recurrent import linear_attention, per_head_constant

LIGHTNING_NORM_EPS = 1e-6  # transformers builds this norm without the config's eps


def model_args(cfg: dict) -> Args:
    args = Args.from_config(cfg)
    decoder.check_layer_types(args, LAYERS)
    return args


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    if name.endswith("self_attn.qkv_proj.weight"):  # per head [q; k; v] -> [q (all heads); k; v]
        H, hd = args.num_attention_heads, args.head_dim
        return w.reshape(H, 3, hd, -1).swapaxes(0, 1).reshape(w.shape)
    return w


def slopes(a: Args, layer: int) -> np.ndarray:
    """Per-head decay rate of a lightning layer [H] (as transformers' get_slope_rate)."""
    H = a.num_attention_heads
    base = 1.0 / 2 ** (8.0 / H)
    factor = 1 - layer / (a.num_hidden_layers - 1 + 1e-5) + 1e-5
    return (base ** np.arange(1, H + 1, dtype=np.float64) * factor).astype(np.float32)


def lightning(c: Ctx, a: Args, i: int, x: str) -> str:
    p, w, g = f"{a.prefix}.layers.{i}.self_attn", c.w, c.g
    H, hd = a.num_attention_heads, a.head_dim
    y = linear(c, x, np.concatenate([w[f"{p}.qkv_proj.weight"], w[f"{p}.output_gate.weight"]]), f"{p}.qkvg_proj")
    qkv, gate = g.node("Split", [y, g.const("split_qkvg", [3 * H * hd, H * hd])], 2, f"{p}.split", axis=-1)
    qkv = g.op("Mul", qkv, g.op("Sigmoid", qkv))  # silu, [1, S, 3 H hd]
    q, k, v = g.node("Split", [qkv, g.const("split_qkv_l", [H * hd] * 3)], 3, f"{p}.split_qkv", axis=-1)
    decay = per_head_constant(c, q, -slopes(a, i), f"{p}.neg_slope")  # [1, S, H]
    o = linear_attention(c, i, q, k, v, decay, None, q_heads=H, kv_heads=H, dk=hd, dv=hd, rule="gated",
                         scale=1.0, name=f"{p}.lightning")  # [1, S, H hd]
    o = rms_norm(c, o, w[f"{p}.norm.weight"], LIGHTNING_NORM_EPS, f"{p}.norm")
    o = g.op("Mul", o, g.op("Sigmoid", gate))
    return linear(c, o, w[f"{p}.out_proj.weight"], f"{p}.out_proj")


def moe(c: Ctx, a: Args, i: int, x: str) -> str:
    """One expert: a plain SwiGLU MLP. More: routed (edgecpm.export.moe), only the top-k run."""
    p, w = f"{a.prefix}.layers.{i}.block_sparse_moe", c.w
    E, top_k = int(a.cfg.get("num_local_experts", 1)), int(a.cfg.get("num_experts_per_tok", 1))
    if E == 1:  # softmax over one expert, renormalised: weight 1
        ep = f"{p}.experts.0"
        return swiglu_mlp(c, x, w[f"{ep}.w1.weight"], w[f"{ep}.w3.weight"], w[f"{ep}.w2.weight"], ep)
    gate, up, down = stack_experts(w, f"{p}.experts", E, names=("w1", "w3", "w2"))
    return routed_moe(c, x, w[f"{p}.gate.weight"], gate, up, down, top_k=top_k, normalize=True, name=f"{p}.moe")


def _scaled(c: Ctx, h: str, out: str, alpha: float, beta: float) -> str:
    g = c.g
    h = h if alpha == 1 else g.op("Mul", h, g.const("alpha", [alpha], np.float32))
    out = out if beta == 1 else g.op("Mul", out, g.const("beta", [beta], np.float32))
    return g.op("Add", h, out)


def block(c: Ctx, a: Args, i: int, x: str, residual) -> tuple[str, None]:
    lp, cfg, kind = f"{a.prefix}.layers.{i}", a.cfg, a.layer_types[i]
    h = rms_norm(c, x, c.w[f"{lp}.input_layernorm.weight"], a.rms_norm_eps, f"{lp}.input_layernorm")
    pre = "linear_attn" if kind == "linear_attention" else "full_attn"
    h = _scaled(c, h, LAYERS[kind](c, a, i, h), cfg.get(f"{pre}_alpha_factor", 1), cfg.get(f"{pre}_beta_factor", 1))
    h = rms_norm(c, h, c.w[f"{lp}.post_attention_layernorm.weight"], a.rms_norm_eps, f"{lp}.post_attention_layernorm")
    return _scaled(c, h, moe(c, a, i, h), cfg.get("mlp_alpha_factor", 1), cfg.get("mlp_beta_factor", 1)), None


LAYERS = {"linear_attention": lightning, "full_attention": llama.attention}


def build(c: Ctx, a: Args, progress=None) -> None:
    rotary_caches(c, a.cfg, a.head_dim)
    decoder.build(c, a, LAYERS, block=block, progress=progress)
