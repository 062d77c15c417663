"""Qwen3-Next: Qwen3.5's Gated DeltaNet and gated attention layers (reused from qwen3_5_text) with a
sparse MoE feed-forward: many experts, top-k routing (softmax, top k, renormalised when
norm_topk_prob), and a shared expert scaled by sigmoid(shared_expert_gate x).

The GDN's input projections come grouped per key head: in_proj_qkvz rows are, for each key head,
[q (dk), k (dk), v (r dv), z (r dv)] and in_proj_ba rows [b (r), a (r)] (r = value heads per key
head). sanitize() reorders them to [q (all heads); k; v; z] and [b; a], so stacked they are
Qwen3.5's [qkv; z; b; a]. Layers in mlp_only_layers, or off the decoder_sparse_step, have a dense
SwiGLU MLP. The (1 + w) RMSNorms are folded by Qwen3.5's sanitize().
"""

from __future__ import annotations

import numpy as np

from edgecpm.export import decoder
from edgecpm.export.blocks import Ctx, linear, rotary_caches, swiglu_mlp
from edgecpm.export.decoder import Args
from edgecpm.export.models import qwen3_5_text
from edgecpm.export.moe import routed_moe, stack_experts


def model_args(cfg: dict) -> Args:
    return qwen3_5_text.model_args(cfg)


def _heads(args: Args) -> tuple[int, int, int, int]:
    cfg = args.cfg
    return (int(cfg["linear_num_key_heads"]), int(cfg["linear_num_value_heads"]), int(cfg["linear_key_head_dim"]),
            int(cfg["linear_value_head_dim"]))


def sanitize(name: str, w: np.ndarray, args: Args, source_kind: str) -> np.ndarray:
    hk, hv, dk, dv = _heads(args) if "linear_num_key_heads" in args.cfg else (1, 1, 0, 0)
    r = hv // hk
    if name.endswith("linear_attn.in_proj_qkvz.weight"):
        per = w.reshape(hk, 2 * dk + 2 * r * dv, -1)  # [hk, q|k|v|z, hidden]
        q, k, v, z = np.split(per, [dk, 2 * dk, 2 * dk + r * dv], axis=1)
        return np.concatenate([t.reshape(-1, w.shape[1]) for t in (q, k, v, z)])  # [q; k; v; z] all heads
    if name.endswith("linear_attn.in_proj_ba.weight"):
        per = w.reshape(hk, 2 * r, -1)  # [hk, b|a, hidden]
        return np.concatenate([per[:, :r].reshape(-1, w.shape[1]), per[:, r:].reshape(-1, w.shape[1])])
    return qwen3_5_text.sanitize(name, w, args, source_kind)


def gated_deltanet(c: Ctx, a: Args, i: int, x: str) -> str:
    p = f"{a.prefix}.layers.{i}.linear_attn"
    ws = [c.w[f"{p}.in_proj_qkvz.weight"], c.w[f"{p}.in_proj_ba.weight"]]  # [q; k; v; z], [b; a] (sanitize)
    return qwen3_5_text.gated_deltanet(c, a, i, x, in_proj=ws)


def is_sparse(a: Args, i: int) -> bool:
    cfg = a.cfg
    return (i not in (cfg.get("mlp_only_layers") or []) and int(cfg.get("num_experts", 0)) > 0
            and (i + 1) % int(cfg.get("decoder_sparse_step", 1)) == 0)


def mlp(c: Ctx, a: Args, i: int, x: str) -> str:
    p, w, g = f"{a.prefix}.layers.{i}.mlp", c.w, c.g
    if not is_sparse(a, i):
        return decoder.default_mlp(c, a, i, x)
    s = f"{p}.shared_expert"
    shared = swiglu_mlp(c, x, w[f"{s}.gate_proj.weight"], w[f"{s}.up_proj.weight"], w[f"{s}.down_proj.weight"], s)
    share = g.op("Sigmoid", linear(c, x, w[f"{p}.shared_expert_gate.weight"], f"{p}.shared_expert_gate", bits=32))
    E = int(a.cfg["num_experts"])
    if f"{p}.experts.gate_up_proj" in w:  # fused [E, 2I, H] (gate rows, then up rows), [E, H, I]
        fc1 = w[f"{p}.experts.gate_up_proj"]
        gate, up, down = fc1[:, : fc1.shape[1] // 2], fc1[:, fc1.shape[1] // 2 :], w[f"{p}.experts.down_proj"]
    else:  # Qwen's per-expert tensors
        gate, up, down = stack_experts(w, f"{p}.experts", E)
    routed = routed_moe(c, x, w[f"{p}.gate.weight"], gate, up, down, top_k=int(a.cfg["num_experts_per_tok"]),
                        normalize=bool(a.cfg.get("norm_topk_prob", True)), name=f"{p}.moe")
    return g.op("Add", routed, g.op("Mul", shared, share))  # [1, S, H] + [1, S, H] * [1, S, 1]


LAYERS = {"linear_attention": gated_deltanet, "full_attention": qwen3_5_text.attention}


def build(c: Ctx, a: Args, progress=None) -> None:
    rotary_caches(c, a.cfg, a.extra["rotary_dim"])
    decoder.build(c, a, LAYERS, mlp=mlp, progress=progress)
