"""MiniMax-01 on the NPU: Lightning attention layers (lightning.py), softmax attention layers, scaled
residuals and the routed MoE in static plain ops.

Block (transformers' MiniMaxDecoderLayer; the residual is the *normed* input):
    h = norm1(x); h = alpha h + beta mixer(h); h = norm2(h); out = alpha' h + beta' moe(h).
Lightning layer: [qkv | gate] = x W; q, k, v = SiLU(qkv) per head; o = lightning(q, k, v) with the
per-head constant decay e^{-slope}; RMSNorm over all heads (eps 1e-6); * sigmoid(gate); out_proj.
MoE: router logits -> the top-k experts (the k-th largest logit from TopK; a comparison against
it) -> softmax over the chosen logits (= the top-k softmax weights renormalised) ->
every expert on every token, weighted (0 for the unchosen) and summed. Dense: the graph reads every
expert's weights each step, fine for small expert counts; a real MiniMax (32 experts of 9216) needs a
gathered-expert form. model_args and sanitize (per-head [q; k; v] rows regrouped) stay the CPU
exporter's (edgecpm/export/models/minimax.py), as do the slopes.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from edgecpm.export.decoder import Args
from edgecpm.export.models.minimax import LIGHTNING_NORM_EPS, slopes
from edgecpm.export.npu.blocks import NpuCtx, linear, rms_norm, swiglu_mlp
from edgecpm.export.npu.lightning import lightning_attention
from edgecpm.export.npu.models import llama

CHOSEN_LIFT = 100.0  # added to the top-k router logits before the softmax (as the attention mask's -100)


def lightning(c: NpuCtx, a: Args, i: int, x: str) -> str:
    """x [1, T, hidden] -> [1, T, hidden]: one Lightning attention layer."""
    p, w, g = f"{a.prefix}.layers.{i}.self_attn", c.w, c.g
    H, hd = a.num_attention_heads, a.head_dim
    y = linear(c, x, [w[f"{p}.qkv_proj.weight"], w[f"{p}.output_gate.weight"]], f"{p}.qkvg_proj")  # [1, T, 4 H hd]
    qkv, gate = g.node("Split", [y, g.const("split_qkvg", [3 * H * hd, H * hd])], 2, f"{p}.split", axis=-1)
    qkv = g.op("Mul", qkv, g.op("Sigmoid", qkv))  # SiLU, [1, T, 3 H hd]
    q, k, v = g.node("Split", [qkv, g.const("split_qkv_l", [H * hd] * 3)], 3, f"{p}.split_qkv", axis=-1)
    o = lightning_attention(c, i, q, k, v, slopes(a, i), heads=H, dim=hd, name=f"{p}.lightning")  # [1, T, H hd]
    o = rms_norm(c, o, w[f"{p}.norm.weight"], LIGHTNING_NORM_EPS, f"{p}.norm")
    o = g.op("Mul", o, g.op("Sigmoid", gate))
    return linear(c, o, w[f"{p}.out_proj.weight"], f"{p}.out_proj")


def routing_weights(c: NpuCtx, logits: str, top_k: int, name: str) -> str:
    """Router logits [1, T, E] -> weights [1, T, E]: softmax over the top-k logits, ~0 elsewhere (the
    top-k softmax probabilities renormalised to sum 1). The k-th largest comes from TopK, whose output
    the QNN EP quantizes like its input, so `logits >= it` holds for the chosen ones (against ReduceMax's
    requantized maximum it missed the maximum itself); QNN refuses Where, hence the mask as Cast + Add."""
    g = c.g
    top, _ = g.node("TopK", [logits, g.const(f"k{top_k}", [top_k])], 2, f"{name}.topk", axis=-1)  # [1, T, k]
    kth = g.op("Slice", top, g.const(f"start{top_k - 1}", [top_k - 1]), g.const(f"end{top_k}", [top_k]),
               g.const("axis_last", [-1]))  # [1, T, 1]: the k-th largest logit
    chosen = g.op("Cast", g.op("GreaterOrEqual", logits, kth), to=TensorProto.FLOAT)  # [1, T, E]: 1 or 0
    lifted = g.op("Add", logits, g.op("Mul", chosen, g.const("chosen_lift", [CHOSEN_LIFT], np.float32)))
    return g.op("Softmax", lifted, axis=-1)  # [1, T, E]: e^-100 relative weight for the unchosen


def moe(c: NpuCtx, a: Args, i: int, x: str) -> str:
    """x [1, T, hidden] -> sum_e weight_e expert_e(x): every expert on every token (see the module note)."""
    p, w, g = f"{a.prefix}.layers.{i}.block_sparse_moe", c.w, c.g
    E, top_k = int(a.cfg.get("num_local_experts", 1)), int(a.cfg.get("num_experts_per_tok", 1))
    ep = [f"{p}.experts.{e}" for e in range(E)]
    if E == 1:  # softmax over one expert, renormalised: weight 1
        return swiglu_mlp(c, x, w[f"{ep[0]}.w1.weight"], w[f"{ep[0]}.w3.weight"], w[f"{ep[0]}.w2.weight"], ep[0])
    weights = routing_weights(c, linear(c, x, w[f"{p}.gate.weight"], f"{p}.gate"), top_k, f"{p}.router")
    inter = w[f"{ep[0]}.w1.weight"].shape[0]
    gu = linear(c, x, [w[f"{e}.{n}.weight"] for n in ("w1", "w3") for e in ep], f"{p}.experts.gate_up")  # [1, T, 2EI]
    gate, up = g.node("Split", [gu, g.const("split_experts", [E * inter] * 2)], 2, f"{p}.experts.split", axis=-1)
    act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)  # [1, T, E I]: silu(gate) * up, each expert
    act = g.op("Reshape", act, g.const(f"shape_experts{E}x{inter}", [1, c.T, E, inter]))  # [1, T, E, I]
    weights = g.op("Reshape", weights, g.const(f"shape_experts{E}x1", [1, c.T, E, 1]))  # [1, T, E, 1]
    act = g.op("Mul", act, weights)  # [1, T, E, I]: each expert's activations times its routing weight
    act = g.op("Reshape", act, g.const(f"shape_flat{E * inter}", [1, c.T, E * inter]))  # [1, T, E I]
    down = np.concatenate([np.asarray(w[f"{e}.w2.weight"], np.float32) for e in ep], axis=1)  # [hidden, E I]
    return linear(c, act, down, f"{p}.experts.down")  # [1, T, hidden]: the weighted sum over experts


def _scaled(c: NpuCtx, h: str, out: str, alpha: float, beta: float) -> str:
    """alpha h + beta out (a factor of 1 is skipped)."""
    g = c.g
    h = h if alpha == 1 else g.op("Mul", h, g.const("alpha", [alpha], np.float32))
    out = out if beta == 1 else g.op("Mul", out, g.const("beta", [beta], np.float32))
    return g.op("Add", h, out)


def block(c: NpuCtx, a: Args, i: int, x: str) -> str:
    """One decoder layer with MiniMax's scaled residuals around the normed input: [1, T, hidden] -> same."""
    lp, cfg, kind = f"{a.prefix}.layers.{i}", a.cfg, a.layer_types[i]
    h = rms_norm(c, x, c.w[f"{lp}.input_layernorm.weight"], a.rms_norm_eps, f"{lp}.input_layernorm")
    pre = "linear_attn" if kind == "linear_attention" else "full_attn"
    h = _scaled(c, h, LAYERS[kind](c, a, i, h), cfg.get(f"{pre}_alpha_factor", 1), cfg.get(f"{pre}_beta_factor", 1))
    h = rms_norm(c, h, c.w[f"{lp}.post_attention_layernorm.weight"], a.rms_norm_eps, f"{lp}.post_attention_layernorm")
    return _scaled(c, h, moe(c, a, i, h), cfg.get("mlp_alpha_factor", 1), cfg.get("mlp_beta_factor", 1))


LAYERS = {"linear_attention": lightning, "full_attention": llama.self_attention}
