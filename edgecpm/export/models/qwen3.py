"""Qwen3: Llama plus per-head RMSNorm on q and k before rotary."""

from __future__ import annotations

from edgecpm.export import decoder
from edgecpm.export.blocks import Ctx, rotary_caches
from edgecpm.export.decoder import Args
from edgecpm.export.models import llama

sanitize = llama.sanitize


def attention(c: Ctx, a: Args, i: int, x: str) -> str:
    return llama.attention(c, a, i, x, qk_norm=True)


# Qwen3 configs list "sliding_attention" only when use_sliding_window is on; that is refused here.
LAYERS = {"full_attention": attention}


def model_args(cfg: dict) -> Args:
    args = Args.from_config(cfg)
    decoder.check_layer_types(args, LAYERS)
    return args


def build(c: Ctx, a: Args, progress=None) -> None:
    rotary_caches(c, a.cfg, a.head_dim)
    decoder.build(c, a, LAYERS, progress=progress)
