"""LFM2 on the NPU: short-conv layers (B*x -> causal conv over a K-1 window -> C*) and GQA attention
with q/k layernorm; SwiGLU feed-forward."""

from __future__ import annotations

from edgecpm.export.decoder import Args
from edgecpm.export.npu.blocks import NpuCtx, linear, swiglu_mlp
from edgecpm.export.npu.models import llama
from edgecpm.export.npu.recurrent import causal_conv

NORMS = ("operator_norm", "ffn_norm")
FINAL_NORM = "embedding_norm"


def attention(c: NpuCtx, a: Args, i: int, x: str) -> str:
    return llama.self_attention(c, a, i, x, qk_norm=("q_layernorm", "k_layernorm"), o_name="out_proj")


def _bias(c: NpuCtx, name: str):
    return c.w[name] if name in c.w else None


def short_conv(c: NpuCtx, a: Args, i: int, x: str) -> str:
    p, g, H = f"{a.prefix}.layers.{i}.conv", c.g, a.hidden_size
    bcx = linear(c, x, c.w[f"{p}.in_proj.weight"], f"{p}.in_proj", bias=_bias(c, f"{p}.in_proj.bias"))  # [1, T, 3H]
    b, cc, xx = g.node("Split", [bcx, g.const("split_bcx", [H, H, H])], 3, f"{p}.split", axis=-1)
    y = causal_conv(c, i, g.op("Mul", b, xx), c.w[f"{p}.conv.weight"], f"{p}.conv",
                    bias=_bias(c, f"{p}.conv.bias"))  # [1, T, H]
    y = g.op("Mul", cc, y)
    return linear(c, y, c.w[f"{p}.out_proj.weight"], f"{p}.out_proj", bias=_bias(c, f"{p}.out_proj.bias"))


def mlp(c: NpuCtx, a: Args, i: int, x: str) -> str:
    p = f"{a.prefix}.layers.{i}.feed_forward"
    return swiglu_mlp(c, x, c.w[f"{p}.w1.weight"], c.w[f"{p}.w3.weight"], c.w[f"{p}.w2.weight"], p)


LAYERS = {"conv": short_conv, "full_attention": attention}
