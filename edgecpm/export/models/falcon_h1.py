"""Falcon-H1: every layer runs a Mamba2 mixer and GQA attention side by side on the same normed
input and adds both (layer type "hybrid"), then a SwiGLU feed-forward.

    h = norm1(x); x = x + ssm_out * mamba(ssm_in * h) + attn_out * attn(attn_in * h); x = x + ff(norm2(x))

Falcon-H1's muP multipliers are folded into the weights by sanitize(): embedding_multiplier (the
embedding), lm_head_multiplier (the lm_head), mlp_multipliers (gate_proj, down_proj),
attention_in_multiplier (q/k/v_proj), key_multiplier (k_proj), attention_out_multiplier (o_proj),
ssm_in_multiplier and the per-channel mup vector of ssm_multipliers (z, x, B, C, dt rows of
in_proj), ssm_out_multiplier (the mixer's out_proj). Nothing of them is left in the graph.
Mamba2's gated RMSNorm is optional (mamba_rms_norm; before or after the gate by
mamba_norm_before_gate); without it the output is y * silu(z).
"""

from __future__ import annotations

import numpy as np

from edgecpm.export import decoder, mamba2
from edgecpm.export.blocks import Ctx, rotary_caches, swiglu_mlp
from edgecpm.export.decoder import Args
from edgecpm.export.models import llama

NORMS = ("input_layernorm", "pre_ff_layernorm")


def model_args(cfg: dict) -> Args:
    args = Args.from_config(cfg, default_layer="hybrid")
    decoder.check_layer_types(args, LAYERS)
    return args


def ssd(a: Args) -> mamba2.SSD:
    cfg = a.cfg
    heads = int(cfg["mamba_n_heads"])
    inner = int(cfg.get("mamba_d_ssm") or int(cfg.get("mamba_expand", 2)) * a.hidden_size)
    head_dim = cfg.get("mamba_d_head", "auto")
    groups = int(cfg.get("mamba_n_groups", 1))
    norm = "none"
    if cfg.get("mamba_rms_norm"):
        norm = "norm_then_gate" if cfg.get("mamba_norm_before_gate", True) else "gate_then_norm"
    lo, hi = mamba2.time_step_limit(cfg.get("time_step_limit"))
    return mamba2.SSD(heads=heads, head_dim=inner // heads if head_dim == "auto" else int(head_dim), groups=groups,
                      state=int(cfg["mamba_d_state"]), eps=a.rms_norm_eps, norm=norm, norm_groups=groups,
                      dt_min=lo, dt_max=hi)


def mup_vector(a: Args) -> np.ndarray:
    """Per-row multipliers of in_proj's output [z (I) | x (I) | B (G n) | C (G n) | dt (H)]."""
    s = ssd(a)
    m = [float(v) for v in (a.cfg.get("ssm_multipliers") or [1.0] * 5)]
    sizes = [s.inner, s.inner, s.groups * s.state, s.groups * s.state, s.heads]
    return np.concatenate([np.full(n, v, np.float32) for n, v in zip(sizes, m)])


def _factors(name: str, a: Args) -> tuple[float, float]:
    """(weight multiplier, bias multiplier) of a projection: x * m_in @ W + b scales only the weight,
    an output multiplier scales both."""
    cfg = a.cfg
    f = lambda key: float(cfg[key]) if cfg.get(key) is not None else 1.0  # noqa: E731
    gate_m, down_m = (float(v) for v in (cfg.get("mlp_multipliers") or [1.0, 1.0]))
    a_in, key_m = f("attention_in_multiplier"), f("key_multiplier")
    table = {"feed_forward.gate_proj": (gate_m, gate_m), "feed_forward.down_proj": (down_m, down_m),
             "self_attn.q_proj": (a_in, 1.0), "self_attn.k_proj": (a_in * key_m, key_m),
             "self_attn.v_proj": (a_in, 1.0),
             "self_attn.o_proj": (f("attention_out_multiplier"),) * 2, "mamba.out_proj": (f("ssm_out_multiplier"),) * 2}
    return next((v for key, v in table.items() if f".{key}." in name), (1.0, 1.0))


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    cfg = args.cfg
    if name == args.embed_name:
        return w * float(cfg.get("embedding_multiplier", 1.0))
    if name == "lm_head.weight":
        return w * float(cfg.get("lm_head_multiplier", 1.0))
    if name.endswith("mamba.in_proj.weight"):
        return w * mup_vector(args)[:, None] * float(cfg.get("ssm_in_multiplier", 1.0))
    if name.endswith("mamba.in_proj.bias"):
        return w * mup_vector(args)
    wm, bm = _factors(name, args)
    m = bm if name.endswith(".bias") else wm
    return w * m if m != 1.0 else w


def parallel(c: Ctx, a: Args, i: int, x: str) -> str:
    """Mamba2 and attention on the same input, summed (their multipliers are in the weights)."""
    ssm = mamba2.mixer(c, i, x, f"{a.prefix}.layers.{i}.mamba", ssd(a))
    return c.g.op("Add", ssm, llama.attention(c, a, i, x))


def mlp(c: Ctx, a: Args, i: int, x: str) -> str:
    p = f"{a.prefix}.layers.{i}.feed_forward"
    return swiglu_mlp(c, x, c.w[f"{p}.gate_proj.weight"], c.w[f"{p}.up_proj.weight"], c.w[f"{p}.down_proj.weight"], p)


LAYERS = {"hybrid": parallel}


def build(c: Ctx, a: Args, progress=None) -> None:
    rotary_caches(c, a.cfg, a.head_dim)
    decoder.build(c, a, LAYERS, mlp=mlp, norms=NORMS, final_norm="final_layernorm", progress=progress)
