"""The Mamba2 (SSD) mixer on the `ai.edgecpm` ops, shared by Falcon-H1, Granite-4.0-H and Nemotron-H.

    in_proj x -> z [I] | xBC [I + 2 G n] | dt [H]
    xBC = silu(causal conv(xBC))                      CausalConvWithState (activation silu)
    x, B, C = split(xBC)                              x [H, p], B and C [G, n] (G groups of heads)
    dt = softplus(dt + dt_bias), clipped to time_step_limit
    S_t = exp(dt A) S_{t-1} + B_t (dt x_t)^T,  y_t = C_t S_t      LinearAttention, rule "gated"
    y = y + D x;  y = norm/gate(y, z);  out_proj

Mapping onto LinearAttention (state [1, H, n, p], i.e. HF's [H, p, n] transposed): keys = B
repeated to the H heads, values = x * dt (the discretised input: the op has no per-token value
scale), queries = C with q_num_heads = G < kv_num_heads = H (the op's inverse GQA: query group g
serves heads g*H/G .. (g+1)*H/G - 1, exactly Mamba2's grouping), decay g = dt * A with
A = -exp(A_log) per head, scale 1. The D skip, the z gate and the grouped gated RMSNorm are not part
of the op's semantics: they are plain ONNX ops around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgecpm.export.blocks import Ctx, linear
from edgecpm.export.recurrent import causal_conv, linear_attention, repeat_heads

NORMS = ("none", "gate_then_norm", "norm_then_gate")


@dataclass(frozen=True)
class SSD:
    """A Mamba2 mixer's sizes and variant (HF names in the comments)."""

    heads: int  # mamba_n_heads / mamba_num_heads
    head_dim: int  # mamba_d_head / mamba_head_dim (p)
    groups: int  # n_groups (G)
    state: int  # d_state / ssm_state_size (n)
    eps: float
    norm: str = "gate_then_norm"  # "none": y * silu(z), no norm weight (Falcon-H1 without mamba_rms_norm)
    norm_groups: int = 1  # the gated RMSNorm normalizes each of these slices of the I channels
    dt_min: float = 0.0  # time_step_limit
    dt_max: float = math.inf

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim


def time_step_limit(value) -> tuple[float, float]:
    """A config's time_step_limit as (min, max): None, numbers, or transformers' {"__float__": "Infinity"}."""
    if not value:
        return 0.0, math.inf
    as_float = lambda v: float(v["__float__"]) if isinstance(v, dict) else float(v)  # noqa: E731
    return as_float(value[0]), as_float(value[1])


def grouped_rms_norm(c: Ctx, x: str, weight: np.ndarray, groups: int, eps: float, name: str) -> str:
    """RMSNorm over `groups` equal slices of the last axis, then * weight. [1, S, C] -> [1, S, C]."""
    g, C = c.g, weight.shape[0]
    xg = g.op("Reshape", x, g.const("shape_groups", [0, 0, groups, C // groups]))  # [1, S, G, C/G]
    ones = g.init(f"{name}.unit", np.ones(C // groups, np.float32))
    xg = g.op("SimplifiedLayerNormalization", xg, ones, name=name, axis=-1, epsilon=eps, stash_type=1)
    xn = g.op("Reshape", xg, g.const("shape_flat", [0, 0, C]))  # [1, S, C]
    return g.op("Mul", xn, g.init(f"{name}.weight", weight.astype(np.float32)))


def _silu(c: Ctx, x: str) -> str:
    return c.g.op("Mul", x, c.g.op("Sigmoid", x))


def _bias(c: Ctx, name: str):
    return c.w[name] if name in c.w else None


def mixer(c: Ctx, layer: int, x: str, p: str, s: SSD) -> str:
    """The Mamba2 mixer whose tensors are `{p}.in_proj.weight`, `{p}.conv1d.*`, `{p}.dt_bias`,
    `{p}.A_log`, `{p}.D`, `{p}.norm.weight`, `{p}.out_proj.*`. x [1, S, hidden] -> [1, S, hidden]."""
    g, w = c.g, c.w
    H, P, G, N, inner = s.heads, s.head_dim, s.groups, s.state, s.inner
    y = linear(c, x, w[f"{p}.in_proj.weight"], f"{p}.in_proj", bias=_bias(c, f"{p}.in_proj.bias"))
    sizes = g.const("split_ssd", [inner, inner + 2 * G * N, H])
    z, xbc, dt = g.node("Split", [y, sizes], 3, f"{p}.split", axis=-1)  # [1, S, I], [1, S, I + 2GN], [1, S, H]
    xbc = causal_conv(c, layer, xbc, w[f"{p}.conv1d.weight"], f"{p}.conv1d", bias=_bias(c, f"{p}.conv1d.bias"),
                      activation="silu")  # [1, S, I + 2GN]
    xs, b, cq = g.node("Split", [xbc, g.const("split_xbc", [inner, G * N, G * N])], 3,
                       f"{p}.split_xbc", axis=-1)  # [1, S, I], [1, S, GN], [1, S, GN]
    dt = g.op("Softplus", g.op("Add", dt, g.init(f"{p}.dt_bias", w[f"{p}.dt_bias"].astype(np.float32))))  # [1,S,H]
    if s.dt_min > 0:  # time_step_limit (transformers clips in its prefill scan only; so do we, always)
        dt = g.op("Max", dt, g.const("dt_min", [s.dt_min], np.float32))
    if math.isfinite(s.dt_max):
        dt = g.op("Min", dt, g.const("dt_max", [s.dt_max], np.float32))
    neg_a = -np.exp(w[f"{p}.A_log"].astype(np.float64)).astype(np.float32)  # [H]
    decay = g.op("Mul", dt, g.init(f"{p}.neg_A", neg_a))  # [1, S, H]: dt * A
    x4 = g.op("Reshape", xs, g.const("shape_heads", [0, 0, H, P]))  # [1, S, H, p]
    v = g.op("Mul", x4, g.op("Unsqueeze", dt, g.const("axis_last", [-1])))  # [1, S, H, p] * [1, S, H, 1]
    v = g.op("Reshape", v, g.const("shape_flat", [0, 0, inner]))  # [1, S, H p]
    k = repeat_heads(c, b, G, N, H // G)  # [1, S, H n]
    o = linear_attention(c, layer, cq, k, v, decay, None, q_heads=G, kv_heads=H, dk=N, dv=P, rule="gated",
                         scale=1.0, name=f"{p}.ssd")  # [1, S, H p]
    skip = np.repeat(w[f"{p}.D"].astype(np.float32), P)  # [H p]: D per head, over its p channels
    o = g.op("Add", o, g.op("Mul", xs, g.init(f"{p}.D_skip", skip)))
    o = _gate(c, o, z, p, s)
    return linear(c, o, w[f"{p}.out_proj.weight"], f"{p}.out_proj", bias=_bias(c, f"{p}.out_proj.bias"))


def _gate(c: Ctx, y: str, z: str, p: str, s: SSD) -> str:
    """The output gate and norm: y * silu(z), norm(y * silu(z)) or norm(y) * silu(z)."""
    if s.norm == "none":
        return c.g.op("Mul", y, _silu(c, z))
    weight = c.w[f"{p}.norm.weight"]
    if s.norm == "gate_then_norm":
        return grouped_rms_norm(c, c.g.op("Mul", y, _silu(c, z)), weight, s.norm_groups, s.eps, f"{p}.norm")
    return c.g.op("Mul", grouped_rms_norm(c, y, weight, s.norm_groups, s.eps, f"{p}.norm"), _silu(c, z))
