"""Nemotron-H: a stack of single-mixer blocks x = x + mixer(norm(x)), each a Mamba2 mixer
("linear_attention"), GQA attention without position encoding ("full_attention") or a squared-ReLU
MLP down(relu(up x)^2) ("mlp").

The "moe" blocks of Nemotron-3 are refused: their experts are squared-ReLU MLPs, which
onnxruntime's CPU MoE/QMoE kernels do not run (relu2 is CUDA-only), and their sigmoid group
routing is not built here. Checkpoints that name the stack `backbone.` (NVIDIA's originals) are
read as well as transformers' `model.`.
"""

from __future__ import annotations

import numpy as np

from edgecpm.contract import UserError
from edgecpm.export import decoder, mamba2
from edgecpm.export.blocks import Ctx, add_rms_norm, gqa, linear
from edgecpm.export.decoder import Args
from edgecpm.export.models import llama
from edgecpm.export.models.granitemoehybrid import identity_rotary

SYNONYMS = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "mamba": "linear_attention",
            "attention": "full_attention"}


def model_args(cfg: dict) -> Args:
    types = cfg.get("layers_block_type") or list(cfg.get("hybrid_override_pattern") or "")
    types = [SYNONYMS.get(t, t) for t in types]
    if "moe" in types or "E" in types:
        raise UserError("nemotron_h: 'moe' blocks (Nemotron-3) are not supported: their squared-ReLU experts have "
                        "no onnxruntime CPU MoE kernel; Nemotron-H models of mamba, attention and mlp blocks export")
    cfg = {**cfg, "layer_types": types, "num_hidden_layers": len(types),
           "rms_norm_eps": float(cfg.get("layer_norm_epsilon", 1e-5))}
    args = Args.from_config(cfg)
    args.embed_name = f"{args.prefix}.embeddings.weight"
    decoder.check_layer_types(args, LAYERS)
    return args


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    return w


def ssd(a: Args) -> mamba2.SSD:
    cfg = a.cfg
    lo, hi = mamba2.time_step_limit(cfg.get("time_step_limit"))
    groups = int(cfg.get("n_groups", 1))
    return mamba2.SSD(heads=int(cfg["mamba_num_heads"]), head_dim=int(cfg["mamba_head_dim"]), groups=groups,
                      state=int(cfg["ssm_state_size"]), eps=a.rms_norm_eps, norm="gate_then_norm", norm_groups=groups,
                      dt_min=lo, dt_max=hi)


def mamba(c: Ctx, a: Args, i: int, x: str) -> str:
    return mamba2.mixer(c, i, x, f"{a.prefix}.layers.{i}.mixer", ssd(a))


def attention(c: Ctx, a: Args, i: int, x: str) -> str:
    """Fused QKV -> GroupQueryAttention (identity rotary) -> o_proj; the tensors live in `.mixer`."""
    p, w = f"{a.prefix}.layers.{i}.mixer", c.w
    s = llama.attn_shape(a)
    qkv = linear(c, x, [w[f"{p}.{n}_proj.weight"] for n in "qkv"], f"{p}.qkv_proj")  # [1, S, (H + 2 KV) hd]
    return linear(c, gqa(c, i, qkv, "", "", s, p), w[f"{p}.o_proj.weight"], f"{p}.o_proj")


def relu2_mlp(c: Ctx, a: Args, i: int, x: str) -> str:
    p, g = f"{a.prefix}.layers.{i}.mixer", c.g
    h = g.op("Relu", linear(c, x, c.w[f"{p}.up_proj.weight"], f"{p}.up_proj"))
    return linear(c, g.op("Mul", h, h), c.w[f"{p}.down_proj.weight"], f"{p}.down_proj")


LAYERS = {"linear_attention": mamba, "full_attention": attention, "mlp": relu2_mlp}


def block(c: Ctx, a: Args, i: int, x: str, residual):
    """x, residual -> norm(x + residual) -> mixer; returns (mixer output, the new residual)."""
    lp = f"{a.prefix}.layers.{i}"
    n, residual = add_rms_norm(c, x, residual, c.w[f"{lp}.norm.weight"], a.rms_norm_eps, f"{lp}.norm")
    return LAYERS[a.layer_types[i]](c, a, i, n), residual


def build(c: Ctx, a: Args, progress=None) -> None:
    if "backbone.embeddings.weight" in c.w:
        a.prefix, a.embed_name = "backbone", "backbone.embeddings.weight"
    identity_rotary(c, a.head_dim)
    decoder.build(c, a, LAYERS, block=block, final_norm="norm_f", progress=progress)
