"""Plain numpy references for the ai.edgecpm operators (the recurrent ones: ONNX opset 27 semantics).

Sequential, one token at a time, float64 inside: slow and obviously right. Every other kernel
(function body, onnxruntime's, a native one) is tested against these.
"""

from __future__ import annotations

import numpy as np

UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _heads(x: np.ndarray, h: int) -> np.ndarray:
    """[B, T, h * d] -> [B, T, h, d]"""
    return x.reshape(*x.shape[:2], h, -1)


def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, q_num_heads: int,
                     kv_num_heads: int, update_rule: str = "gated_delta", scale: float = 0.0):
    """Returns (output [B, T, max(Hq, Hkv) * dv], present_state [B, Hkv, dk, dv])."""
    if update_rule not in UPDATE_RULES:
        raise ValueError(f"update_rule {update_rule!r}; expected one of {UPDATE_RULES}")
    hq, hkv = q_num_heads, kv_num_heads
    q, k, v = _heads(query, hq), _heads(key, hkv), _heads(value, hkv)  # [B, T, H, d]
    B, T, _, dk = q.shape
    dv = v.shape[-1]
    scale = scale or 1.0 / np.sqrt(dk)
    S = np.zeros((B, hkv, dk, dv)) if past_state is None else past_state.astype(np.float64)  # [B, Hkv, dk, dv]
    g = None if decay is None else _heads(decay, hkv)  # [B, T, Hkv, 1 or dk]
    b = None if beta is None else beta.reshape(B, T, -1)  # [B, T, Hkv or 1]
    heads = max(hq, hkv)
    out = np.zeros((B, T, heads, dv))  # [B, T, heads, dv]
    for t in range(T):
        kt, vt = k[:, t].astype(np.float64), v[:, t].astype(np.float64)  # [B, Hkv, d]
        if update_rule in ("gated", "gated_delta"):
            S = S * np.exp(g[:, t].astype(np.float64))[..., None]  # decay per head or per key dim
        if update_rule in ("delta", "gated_delta"):
            vt = b[:, t, :, None] * (vt - np.einsum("bhkv,bhk->bhv", S, kt))
        S = S + np.einsum("bhk,bhv->bhkv", kt, vt)
        for h in range(heads):
            qh = q[:, t, h if hq >= hkv else h * hq // hkv]  # [B, dk]
            Sh = S[:, h * hkv // hq if hq >= hkv else h]  # [B, dk, dv]
            out[:, t, h] = scale * np.einsum("bk,bkv->bv", qh, Sh)
    return out.reshape(B, T, heads * dv).astype(query.dtype), S.astype(query.dtype)


def causal_conv_with_state(input, weight, bias=None, past_state=None, *, activation: str = "none"):
    """Depthwise causal conv. input [B, C, L], weight [C, 1, K], past_state [B, C, K-1].

    Returns (output [B, C, L], present_state [B, C, K-1]).
    """
    B, C, L = input.shape
    K = weight.shape[-1]
    past = np.zeros((B, C, K - 1), input.dtype) if past_state is None else past_state
    x = np.concatenate([past, input], axis=2).astype(np.float64)  # [B, C, K-1+L]
    w = weight[:, 0, :].astype(np.float64)  # [C, K]
    y = np.stack([np.einsum("bck,ck->bc", x[:, :, t : t + K], w) for t in range(L)], axis=2)  # [B, C, L]
    if bias is not None:
        y = y + bias[None, :, None]
    if activation in ("silu", "swish"):
        y = y / (1.0 + np.exp(-y))
    elif activation != "none":
        raise ValueError(f"activation {activation!r}; expected silu, swish or none")
    return y.astype(input.dtype), x[:, :, x.shape[2] - (K - 1) :].astype(input.dtype)


def add_block_mins(y, x, mins, *, block_size: int):
    """y + (per-block sums of x) @ mins: the min correction of blocks `w = d*q + m'`.

    y [..., N], x [..., K], mins [K / block_size, N] (fp32 or fp16) -> [..., N].
    """
    kb, N = mins.shape
    if x.shape[-1] != kb * block_size or y.shape[-1] != N:
        raise ValueError(f"x [..., {x.shape[-1]}] and y [..., {y.shape[-1]}] do not fit mins {mins.shape} "
                         f"with block_size {block_size}")
    sums = x.astype(np.float64).reshape(*x.shape[:-1], kb, block_size).sum(-1)  # [..., kb]
    return (y.astype(np.float64) + sums @ mins.astype(np.float64)).astype(y.dtype)
