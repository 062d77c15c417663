"""LFM2: short-conv layers interleaved with GQA attention (q/k layernorm), SwiGLU feed-forward.

Conv layer: in_proj x -> (B, C, x); depthwise causal conv of B*x over conv_L_cache taps; C * conv; out_proj.
"""

from __future__ import annotations

import numpy as np

from edgecpm.export import decoder
from edgecpm.export.blocks import Ctx, linear, rotary_caches, swiglu_mlp
from edgecpm.export.decoder import Args
from edgecpm.export.models import llama
from edgecpm.export.recurrent import causal_conv

NORMS = ("operator_norm", "ffn_norm")


def model_args(cfg: dict) -> Args:
    args = Args.from_config(cfg)
    args.rms_norm_eps = float(cfg.get("norm_eps", 1e-5))
    decoder.check_layer_types(args, LAYERS)
    return args


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    return w


def attention(c: Ctx, a: Args, i: int, x: str) -> str:
    return llama.attention(c, a, i, x, qk_norm=True, norm_names=("q_layernorm", "k_layernorm"), o_name="out_proj")


def short_conv(c: Ctx, a: Args, i: int, x: str) -> str:
    p, w, g, H = f"{a.prefix}.layers.{i}.conv", c.w, c.g, a.hidden_size
    bias = w[f"{p}.in_proj.bias"] if f"{p}.in_proj.bias" in w else None
    bcx = linear(c, x, w[f"{p}.in_proj.weight"], f"{p}.in_proj", bias=bias)  # [1, S, 3H]
    b, cc, xx = g.node("Split", [bcx, g.const("split_bcx", [H, H, H])], 3, f"{p}.split", axis=-1)
    conv_bias = w[f"{p}.conv.bias"] if f"{p}.conv.bias" in w else None
    y = causal_conv(c, i, g.op("Mul", b, xx), w[f"{p}.conv.weight"], f"{p}.conv", bias=conv_bias)  # [1, S, H]
    y = g.op("Mul", cc, y)
    bias = w[f"{p}.out_proj.bias"] if f"{p}.out_proj.bias" in w else None
    return linear(c, y, w[f"{p}.out_proj.weight"], f"{p}.out_proj", bias=bias)


def mlp(c: Ctx, a: Args, i: int, x: str) -> str:
    p = f"{a.prefix}.layers.{i}.feed_forward"
    return swiglu_mlp(c, x, c.w[f"{p}.w1.weight"], c.w[f"{p}.w3.weight"], c.w[f"{p}.w2.weight"], p)


LAYERS = {"conv": short_conv, "full_attention": attention}


def build(c: Ctx, a: Args, progress=None) -> None:
    rotary_caches(c, a.cfg, a.head_dim)
    decoder.build(c, a, LAYERS, mlp=mlp, norms=NORMS, final_norm="embedding_norm", progress=progress)
