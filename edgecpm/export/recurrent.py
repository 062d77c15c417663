"""Graph blocks for linear (recurrent) layers: fixed-size state I/O and the `ai.edgecpm` ops.

Activations are [1, S, channels]. The ops take ONNX opset-27 layouts: CausalConvWithState wants
channels-first [1, C, S]; LinearAttention wants packed heads [1, S, H * d].
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from edgecpm.contract import StateSpec
from edgecpm.export.blocks import F32, Ctx


def _t(*shape):
    """A float TypeProto; strings are symbolic dims."""
    return helper.make_tensor_type_proto(F32, list(shape))


def fixed_state(c: Ctx, layer: int, kind: str, shape: tuple) -> tuple[str, StateSpec]:
    """Declare a fixed-size state input (past_state.L.kind); returns (input name, spec)."""
    spec = StateSpec(f"past_state.{layer}.{kind}", f"present_state.{layer}.{kind}", kind, layer, tuple(shape))
    c.g.input(spec.input, F32, ["batch", *shape[1:]])
    c.states.append(spec)
    return spec.input, spec


def state_output(c: Ctx, value: str, spec: StateSpec) -> None:
    c.g.output(value, spec.output, F32, ["batch", *spec.shape[1:]])


def causal_conv(c: Ctx, layer: int, x: str, weight: np.ndarray, name: str, bias: np.ndarray | None = None,
                activation: str = "none") -> str:
    """Depthwise causal conv over time with a carried state. x [1, S, C] -> [1, S, C]; weight [C, 1, K]."""
    g = c.g
    C, _, K = weight.shape
    past, spec = fixed_state(c, layer, "conv", (1, C, K - 1))  # [1, C, K-1]
    xt = g.op("Transpose", x, perm=[0, 2, 1])  # [1, C, S]
    ins = [xt, g.init(f"{name}.weight", weight.astype(np.float32))]
    ins.append(g.init(f"{name}.bias", bias.astype(np.float32)) if bias is not None else "")
    ins.append(past)
    types = [_t(1, C, "S"), _t(C, 1, K), _t(C) if bias is not None else None, _t(1, C, K - 1)]
    y, present = g.custom("CausalConvWithState", ins, types, 2, name, activation=activation)  # [1, C, S]
    state_output(c, present, spec)
    return g.op("Transpose", y, perm=[0, 2, 1])  # [1, S, C]


def linear_attention(c: Ctx, layer: int, q: str, k: str, v: str, decay: str | None, beta: str | None, *,
                     q_heads: int, kv_heads: int, dk: int, dv: int, rule: str, name: str,
                     scale: float = 0.0) -> str:
    """LinearAttention over a recurrent state [1, kv_heads, dk, dv].

    q [1, S, q_heads*dk], k [1, S, kv_heads*dk], v [1, S, kv_heads*dv], decay [1, S, kv_heads] (per-head),
    beta [1, S, kv_heads] -> [1, S, max(q_heads, kv_heads)*dv].
    """
    past, spec = fixed_state(c, layer, "recurrent", (1, kv_heads, dk, dv))
    ins = [q, k, v, past, decay or "", beta or ""]
    types = [_t(1, "S", q_heads * dk), _t(1, "S", kv_heads * dk), _t(1, "S", kv_heads * dv),
             _t(1, kv_heads, dk, dv), _t(1, "S", kv_heads) if decay else None,
             _t(1, "S", kv_heads) if beta else None]
    while ins[-1] == "":
        ins.pop(), types.pop()
    attrs = dict(q_num_heads=q_heads, kv_num_heads=kv_heads, update_rule=rule)
    if scale:
        attrs["scale"] = float(scale)
    out, present = c.g.custom("LinearAttention", ins, types, 2, name, **attrs)
    state_output(c, present, spec)
    return out


def l2_normalize_heads(c: Ctx, x: str, heads: int, dim: int, eps: float, name: str) -> str:
    """Per-head x / sqrt(sum(x^2) + eps) (the FLA l2norm). [1, S, heads*dim] -> same."""
    g = c.g
    x4 = g.op("Reshape", x, g.const("shape_heads", [0, 0, heads, dim]))  # [1, S, heads, dim]
    ss = g.op("ReduceSumSquare", x4, g.const("axis_last", [-1]), keepdims=1)  # [1, S, heads, 1]
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", ss, g.const("eps", [eps], np.float32))))
    y = g.op("Mul", x4, inv, name=name)  # [1, S, heads, dim]
    return g.op("Reshape", y, g.const("shape_flat", [0, 0, heads * dim]))  # [1, S, heads*dim]


def repeat_heads(c: Ctx, x: str, heads: int, dim: int, r: int) -> str:
    """repeat_interleave over heads: [1, S, heads*dim] -> [1, S, heads*r*dim]."""
    if r == 1:
        return x
    g = c.g
    x5 = g.op("Reshape", x, g.const("shape_h1d", [0, 0, heads, 1, dim]))  # [1, S, heads, 1, dim]
    x5 = g.op("Tile", x5, g.const("tile_heads", [1, 1, 1, r, 1]))  # [1, S, heads, r, dim]
    return g.op("Reshape", x5, g.const("shape_flat", [0, 0, heads * r * dim]))  # [1, S, heads*r*dim]


def per_head_constant(c: Ctx, like: str, values: np.ndarray, name: str) -> str:
    """A per-head constant [H] broadcast to [1, S, H], S taken from `like` [1, S, *]."""
    g = c.g
    const = g.init(f"{name}", values.astype(np.float32).reshape(1, 1, -1))  # [1, 1, H]
    bs = g.op("Shape", like, start=0, end=2)  # [2] = (1, S)
    shape = g.op("Concat", bs, g.const("num_heads", [values.size]), axis=0)  # [3]
    return g.op("Expand", const, shape)  # [1, S, H]
