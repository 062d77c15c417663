"""Granite-4.0-H (`granitemoehybrid`): Mamba2 layers and GQA attention layers (usually without
rotary: position_embedding_type "nope"), each followed by a routed MoE plus a shared SwiGLU MLP.

    block: h = x + m * mixer(norm1(x)); out = h + m * (moe(norm2(h)) + shared(norm2(h)))   m = residual_multiplier
    embeddings * embedding_multiplier; attention scale = attention_multiplier; logits / logits_scaling

All multipliers are folded into weights by sanitize(): the embedding, the lm_head, q_proj (the
attention scale; GroupQueryAttention applies 1/sqrt(head_dim)), and every residual branch's output
projection (o_proj, the Mamba2 out_proj, the experts' down_proj, the shared MLP's output_linear).
Router: top-k of the logits, softmax over those k = softmax, top-k, renormalise (edgecpm.export.moe).
Without rotary, attention runs GroupQueryAttention with identity rotary caches (cos 1, sin 0).
"""

from __future__ import annotations

import math

import numpy as np

from edgecpm.export import decoder, mamba2
from edgecpm.export.blocks import Ctx, rotary_caches, swiglu_mlp
from edgecpm.export.decoder import Args
from edgecpm.export.models import llama
from edgecpm.export.moe import routed_moe

SYNONYMS = {"mamba": "linear_attention", "attention": "full_attention"}  # older configs' layer names
RESIDUAL_OUT = ("self_attn.o_proj.weight", "self_attn.o_proj.bias", "mamba.out_proj.weight", "mamba.out_proj.bias",
                "block_sparse_moe.output_linear.weight", "block_sparse_moe.experts.down_proj",
                "shared_mlp.output_linear.weight",
                "shared_mlp.output_linear.bias")


def model_args(cfg: dict) -> Args:
    types = [SYNONYMS.get(t, t) for t in cfg.get("layer_types") or ["linear_attention"] * cfg["num_hidden_layers"]]
    args = Args.from_config({**cfg, "layer_types": types})
    decoder.check_layer_types(args, LAYERS)
    return args


def ssd(a: Args) -> mamba2.SSD:
    cfg = a.cfg
    heads, inner = int(cfg["mamba_n_heads"]), int(cfg.get("mamba_expand", 2)) * a.hidden_size
    head_dim = cfg.get("mamba_d_head", "auto")
    lo, hi = mamba2.time_step_limit(cfg.get("time_step_limit"))
    return mamba2.SSD(heads=heads, head_dim=inner // heads if head_dim == "auto" else int(head_dim),
                      groups=int(cfg.get("mamba_n_groups", 1)), state=int(cfg["mamba_d_state"]), eps=a.rms_norm_eps,
                      norm="gate_then_norm", norm_groups=int(cfg.get("mamba_n_groups", 1)),
                      dt_min=lo, dt_max=hi)


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    cfg = args.cfg
    if name == args.embed_name:
        return w * float(cfg.get("embedding_multiplier", 1.0))
    if name == "lm_head.weight":
        return w / float(cfg.get("logits_scaling", 1.0))
    if name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):  # scale * sqrt(hd) * 1/sqrt(hd)
        return w * (float(cfg.get("attention_multiplier", 1.0)) * math.sqrt(args.head_dim))
    if name.endswith(RESIDUAL_OUT):
        return w * float(cfg.get("residual_multiplier", 1.0))
    return w


def identity_rotary(c: Ctx, rot_dim: int) -> None:
    """cos 1 / sin 0 caches: GroupQueryAttention's rotary becomes the identity (no position encoding)."""
    half = (c.ctx_len, rot_dim // 2)
    c.cos = c.g.init("rotary.cos_cache", np.ones(half, np.float32))
    c.sin = c.g.init("rotary.sin_cache", np.zeros(half, np.float32))


def mamba(c: Ctx, a: Args, i: int, x: str) -> str:
    return mamba2.mixer(c, i, x, f"{a.prefix}.layers.{i}.mamba", ssd(a))


def mlp(c: Ctx, a: Args, i: int, x: str) -> str:
    """Routed experts (if any) + the shared SwiGLU MLP (input_linear rows: [gate; up])."""
    p, w, g = f"{a.prefix}.layers.{i}", c.w, c.g
    gu = w[f"{p}.shared_mlp.input_linear.weight"]  # [2 Is, H]
    half = gu.shape[0] // 2
    out = swiglu_mlp(c, x, gu[:half], gu[half:], w[f"{p}.shared_mlp.output_linear.weight"], f"{p}.shared_mlp")
    if int(a.cfg.get("num_local_experts", 0)) == 0:
        return out
    e = f"{p}.block_sparse_moe"
    fused = f"{e}.input_linear.weight" in w  # IBM's names (as saved); else transformers' in-memory ones
    fc1 = w[f"{e}.input_linear.weight" if fused else f"{e}.experts.gate_up_proj"]  # [E, 2I, H]: gate; up
    down = w[f"{e}.output_linear.weight" if fused else f"{e}.experts.down_proj"]  # [E, H, I]
    router = w[f"{e}.router.layer.weight" if fused else f"{e}.router.weight"]  # [E, H]
    inter = fc1.shape[1] // 2
    moe = routed_moe(c, x, router, fc1[:, :inter], fc1[:, inter:], down, top_k=int(a.cfg["num_experts_per_tok"]),
                     normalize=True, name=f"{e}.moe")
    return g.op("Add", moe, out)


LAYERS = {"linear_attention": mamba, "full_attention": llama.attention}


def build(c: Ctx, a: Args, progress=None) -> None:
    if a.cfg.get("position_embedding_type") == "rope":
        rotary_caches(c, a.cfg, a.head_dim)
    else:
        identity_rotary(c, a.head_dim)
    decoder.build(c, a, LAYERS, mlp=mlp, progress=progress)
