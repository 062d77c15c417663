"""MiniCPM (1/2): Llama with three scalings, folded into the weights at export (no extra nodes):
    embeddings * scale_emb,
    every residual branch (o_proj, down_proj) * scale_depth / sqrt(num_hidden_layers),
    lm_head input / (hidden_size / dim_model_base).
"""

from __future__ import annotations

import math

import numpy as np

from edgecpm.export import decoder
from edgecpm.export.blocks import Ctx, rotary_caches
from edgecpm.export.decoder import Args
from edgecpm.export.models import llama

LAYERS = llama.LAYERS


def model_args(cfg: dict) -> Args:
    args = Args.from_config(cfg, scale_emb=float(cfg.get("scale_emb", 1.0)),
                            scale_depth=float(cfg.get("scale_depth", 1.0)),
                            dim_model_base=float(cfg.get("dim_model_base", cfg["hidden_size"])))
    decoder.check_layer_types(args, LAYERS)
    return args


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    w = llama.sanitize(name, w, args, source_kind)
    e = args.extra
    if name == args.embed_name:
        return w * e["scale_emb"]
    if name == "lm_head.weight":
        return w / (args.hidden_size / e["dim_model_base"])
    if name.endswith(("o_proj.weight", "down_proj.weight", "o_proj.bias", "down_proj.bias")):
        return w * (e["scale_depth"] / math.sqrt(args.num_hidden_layers))
    return w


def build(c: Ctx, a: Args, progress=None) -> None:
    rotary_caches(c, a.cfg, a.head_dim)
    decoder.build(c, a, LAYERS, progress=progress)
