"""Routed mixture of experts: top-k experts per token, only the chosen experts' weights read.

One onnxruntime `com.microsoft` node per MoE layer (CPU kernels in onnxruntime >= 1.22):
    int4 / int8 recipe  -> QMoE: experts block-quantized (MatMulNBits' packing and symmetric zero
                           point 2^(bits-1), `block_size` = the recipe's group), accuracy_level as
                           the recipe's
    16 / 32             -> MoE: fp32 experts (the op takes no fp16 weights with fp32 activations)
Both take the router's logits, apply a softmax over all experts, pick the top k and (with
`normalize_routing_weights`) renormalise the k weights: the routing of MiniMax, Qwen3-Next
(norm_topk_prob) and Granite (a softmax over the top-k logits is the same). An expert is a SwiGLU
MLP down(silu(gate x) * up x); the CPU kernels want gate and up rows interleaved in one FC1
(swiglu_fusion 1) and activation_alpha 1 / beta 0 (their SwiGLU is g sigmoid(alpha g) (u + beta)).
Measured on CPU against a TopK -> GatherBlockQuantized -> MatMul graph: export/moe_bench.py.

`reference` is the numpy oracle (float64, token by token) both are tested against.
"""

from __future__ import annotations

import numpy as np

from edgecpm.export.blocks import Ctx
from edgecpm.export.graph import MS
from edgecpm.export.quant import quantize


def interleave(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """gate, up [..., I, H] -> FC1 [..., 2I, H] with rows g0, u0, g1, u1, ... (swiglu_fusion 1)."""
    *lead, inter, hidden = gate.shape
    return np.stack([gate, up], axis=-2).reshape(*lead, 2 * inter, hidden)  # [..., I, 2, H] -> [..., 2I, H]


class PerExpert:
    """Expert e's tensor `{prefix}.{e}.{name}.weight`, read from the checkpoint when asked for, so
    packing 512 experts holds one expert in memory at a time. Indexable like an [E, N, K] array."""

    def __init__(self, w, prefix: str, name: str, count: int):
        self.w, self.prefix, self.name, self.count = w, prefix, name, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, e: int) -> np.ndarray:
        return np.asarray(self.w[f"{self.prefix}.{e}.{self.name}.weight"], np.float32)


def stack_experts(w, prefix: str, count: int, names=("gate_proj", "up_proj", "down_proj")):
    """Per-expert checkpoint tensors -> (gate, up [E, I, H], down [E, H, I]) as lazy PerExpert views."""
    return tuple(PerExpert(w, prefix, n, count) for n in names)


def _quantized(expert, count: int, bits: int, group: int, symmetric: bool):
    """expert(e) [N, K] fp32 for e < count -> (packed uint8 [E, N, K*bits/8], scales [E, N, K/group],
    zero points [E, N, ceil(K/group*bits/8)] or None), one expert at a time."""
    packed, scales, zps = [], [], []
    for e in range(count):
        qw = quantize(expert(e), bits, group, symmetric)
        packed.append(qw.B.reshape(qw.N, -1))  # [N, kb, blob] -> [N, K*bits/8]
        scales.append(qw.scales)  # [N, kb]
        if qw.zero_points is not None:
            zps.append(qw.zero_points)  # [N, ceil(kb*bits/8)]
    return np.stack(packed), np.stack(scales), (np.stack(zps) if zps else None)


def routed_moe(c: Ctx, x: str, router: np.ndarray, gate, up, down, *, top_k: int, normalize: bool,
               name: str) -> str:
    """x [1, S, H] -> sum over the top-k experts of weight * expert(x): [1, S, H].

    router [E, H]; gate, up [E, I, H]; down [E, H, I] (HF's [out, in] per expert): arrays or PerExpert.
    """
    g = c.g
    E, H = router.shape
    inter = gate[0].shape[0]
    logits = g.op("MatMul", x, g.init(f"{name}.router.weight", np.ascontiguousarray(router.T, np.float32)))
    logits = g.op("Reshape", logits, g.const("shape_tokens_experts", [-1, E]))  # [1, S, E] -> [S, E]
    attrs = dict(k=int(top_k), activation_type="swiglu", swiglu_fusion=1, activation_alpha=1.0, activation_beta=0.0,
                 normalize_routing_weights=int(normalize))
    fc1 = lambda e: interleave(np.asarray(gate[e], np.float32), np.asarray(up[e], np.float32))  # noqa: E731 [2I, H]
    fc2 = lambda e: np.asarray(down[e], np.float32)  # noqa: E731 [H, I]
    bits, group = c.q.bits, c.q.group_size
    if bits in (4, 8) and H % group == 0 and inter % group == 0:
        sym = c.q.symmetric or bits == 8
        w1, s1, z1 = _quantized(fc1, E, bits, group, sym)
        w2, s2, z2 = _quantized(fc2, E, bits, group, sym)
        ins = [x, logits, g.init(f"{name}.fc1.qweight", w1), g.init(f"{name}.fc1.scales", s1), "",
               g.init(f"{name}.fc2.qweight", w2), g.init(f"{name}.fc2.scales", s2)]
        ins += ["", "", "", "", g.init(f"{name}.fc1.qzeros", z1) if z1 is not None else "",
                g.init(f"{name}.fc2.qzeros", z2) if z2 is not None else "", ""]  # fc2 bias, fc3, zero points
        if not normalize:  # QMoE's own softmax weights differ by ~1e-3 when not renormalised: give exact ones
            ins.append(g.op("Softmax", logits, axis=-1))  # router_weights [S, E]
            attrs["normalize_routing_weights"] = 0
        while ins[-1] == "":
            ins.pop()
        return g.op("QMoE", *ins, name=name, domain=MS, expert_weight_bits=bits, block_size=group,
                    accuracy_level=c.q.accuracy_level, weights_prepacked=0, **attrs)
    w1 = g.init(f"{name}.fc1.weight", np.stack([fc1(e) for e in range(E)]))  # [E, 2I, H]
    w2 = g.init(f"{name}.fc2.weight", np.stack([fc2(e) for e in range(E)]))  # [E, H, I]
    return g.op("MoE", x, logits, w1, "", w2, name=name, domain=MS, **attrs)


def routing(logits: np.ndarray, top_k: int, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """logits [T, E] -> (expert indices [T, k], weights [T, k]): softmax, top k, renormalised or not."""
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)  # [T, E]
    idx = np.argsort(-p, axis=-1, kind="stable")[:, :top_k]  # [T, k]
    w = np.take_along_axis(p, idx, axis=-1)  # [T, k]
    return idx, (w / w.sum(-1, keepdims=True) if normalize else w)


def reference(x: np.ndarray, router: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray, *,
              top_k: int, normalize: bool) -> np.ndarray:
    """Numpy oracle of `routed_moe`: x [T, H] -> [T, H], float64 inside, only chosen experts run."""
    x64 = x.astype(np.float64)
    idx, w = routing(x64 @ router.T.astype(np.float64), top_k, normalize)
    out = np.zeros_like(x64)  # [T, H]
    for t in range(x64.shape[0]):
        for j, e in enumerate(idx[t]):
            a, b = gate[e] @ x64[t], up[e] @ x64[t]  # [I]
            out[t] += w[t, j] * (down[e] @ (a / (1 + np.exp(-a)) * b))
    return out.astype(x.dtype)
