"""Graph blocks every architecture shares: norms, (quantized) linear layers, embedding, rotary caches,
GroupQueryAttention with a shared KV buffer, SwiGLU MLP.

Activations are fp32 [1, S, hidden] throughout (S = tokens in this step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto

from edgecpm.contract import Quantization, StateSpec
from edgecpm.export.gguf_blocks import BlockWeight
from edgecpm.export.gptq import gptq_quantize, layer_gram
from edgecpm.export.graph import MS, GraphBuilder
from edgecpm.export.qlinear import (
    as_float,
    carried_linear,
    carried_parts,
    forced_bits,
    gather_blocks,
    matmul_nbits,
)
from edgecpm.export.quant import quantize
from edgecpm.export.quant_search import search_quantize

F32, F16, I64, I32 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.INT32


@dataclass
class Ctx:
    """What a layer builder needs: the graph, the weights, the recipe and the shared graph inputs."""

    g: GraphBuilder
    w: object  # export.checkpoint.Weights: w[name] -> fp32 array
    q: Quantization
    ctx_len: int
    seqlens_k: str = ""
    total_len: str = ""
    cos: str = ""
    sin: str = ""
    states: list[StateSpec] = field(default_factory=list)
    memo: dict = field(default_factory=dict)  # values made once per graph (e.g. block sums of an input)
    carried: dict = field(default_factory=dict)  # GGUF type -> tensors carried over exactly
    embed_bits: int = 0  # what the embedding was written with
    importance: dict = field(default_factory=dict)  # layer name -> importance [K] (gptq: path of its inputs)


def quantize_float(c: Ctx, w: np.ndarray, bits: int, name: str):
    """Float weight [N, K] -> MatMulNBits tensors by the recipe's method: int4 "search" (and the
    leftovers of a GGUF carry-over) -> error-minimizing blocks weighted by the layer's calibration
    importance, with a per-block min when asymmetric; int4 "gptq" -> the same blocks with the error
    compensation of edgecpm.export.gptq (a layer with no calibration inputs: the search); otherwise
    round-to-nearest."""
    if c.q.method in ("search", "gguf", "gptq") and bits == 4:
        calib, with_min = c.importance.get(name), not c.q.symmetric
        if c.q.method == "gptq" and calib is not None:
            return gptq_quantize(w, bits, c.q.group_size, layer_gram(c.memo, calib), with_min=with_min)
        return search_quantize(w, bits, c.q.group_size, None if c.q.method == "gptq" else calib, with_min=with_min)
    return quantize(w, bits, c.q.group_size, c.q.symmetric or bits == 8)  # 8-bit symmetric: a tied head shares


def linear(c: Ctx, x: str, w, name: str, bits: int | None = None, bias: np.ndarray | None = None) -> str:
    """y = x @ w.T (+ bias). w: [N, K] float, a GGUF BlockWeight, or a list of either stacked along N.
    GGUF blocks are carried over exactly unless bits are forced; else int4/int8 -> MatMulNBits,
    16 -> fp16 storage, 32 -> fp32."""
    ws = w if isinstance(w, list) else [w]
    forced = forced_bits(c, name, bits)
    if not forced and all(isinstance(p, BlockWeight) for p in ws):
        return carried_parts(c, x, ws, name, bias)
    w = np.concatenate([as_float(p) for p in ws]) if len(ws) > 1 else as_float(ws[0])  # [N, K]
    g, bits = c.g, forced or c.q.bits
    if bits in (4, 8):
        qw = quantize_float(c, w, bits, name)
        if isinstance(qw, BlockWeight):  # blocks with a min: the exact split, as for GGUF Q4_1
            return carried_linear(c, x, qw, name, bias)
        return matmul_nbits(c, x, qw, name, bias)
    wt = np.ascontiguousarray(w.T)  # [K, N]
    if bits == 16:
        wt = g.op("Cast", g.init(f"{name}.weight_fp16", wt.astype(np.float16)), to=F32)
    else:
        wt = g.init(f"{name}.weight", wt.astype(np.float32))
    y = g.op("MatMul", x, wt, name=name)
    return g.op("Add", y, g.init(f"{name}.bias", bias.astype(np.float32))) if bias is not None else y


def rms_norm(c: Ctx, x: str, weight: np.ndarray, eps: float, name: str) -> str:
    return c.g.op("SimplifiedLayerNormalization", x, c.g.init(f"{name}.weight", weight.astype(np.float32)),
                  name=name, axis=-1, epsilon=eps, stash_type=1)


def add_rms_norm(c: Ctx, x: str, residual: str | None, weight: np.ndarray, eps: float, name: str):
    """(norm(x + residual), x + residual); the first layer has no residual yet."""
    if residual is None:
        return rms_norm(c, x, weight, eps, name), x
    out, _, _, total = c.g.node("SkipSimplifiedLayerNormalization",
                                [x, residual, c.g.init(f"{name}.weight", weight.astype(np.float32))], 4, name,
                                domain=MS, epsilon=eps)
    return out, total


def embedding(c: Ctx, ids: str, table, bits: int, name: str = "model.embed_tokens") -> str:
    """ids [1, S] -> [1, S, hidden]. GGUF blocks (bits 0) and 4/8 bits -> GatherBlockQuantized."""
    g = c.g
    if not bits and isinstance(table, BlockWeight) and table.block >= 16:
        c.carried[table.kind] = c.carried.get(table.kind, 0) + 1
        c.embed_bits = table.bits
        return gather_blocks(c, ids, table.packed(), name, table.m)
    table = as_float(table)
    bits = bits or c.q.bits
    c.embed_bits = bits
    if bits in (4, 8) and table.shape[1] % c.q.group_size == 0:
        return gather_blocks(c, ids, quantize(table, bits, c.q.group_size, symmetric=True), name)
    dtype = np.float16 if bits in (4, 8, 16) else np.float32
    t = g.init(f"{name}.weight", table.astype(dtype))
    out = g.op("Gather", t, ids, name=name, axis=0)
    return g.op("Cast", out, to=F32) if dtype == np.float16 else out


def inv_freq(cfg: dict, rot_dim: int) -> np.ndarray:
    """Rotary inverse frequencies [rot_dim/2], with llama3 / linear scaling from the HF config."""
    rp = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    inv = 1.0 / theta ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim)
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind == "linear":
        inv = inv / float(rp["factor"])
    elif kind == "llama3":
        factor, lo, hi = float(rp["factor"]), float(rp["low_freq_factor"]), float(rp["high_freq_factor"])
        old = float(rp["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        mid = (wavelen <= old / lo) & (wavelen >= old / hi)
        inv = np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    elif kind not in ("default", None):
        raise NotImplementedError(f"rope type {kind!r}")
    return inv


def rotary_caches(c: Ctx, cfg: dict, rot_dim: int) -> None:
    """cos/sin caches [ctx, rot_dim/2] shared by all attention layers."""
    freqs = np.outer(np.arange(c.ctx_len, dtype=np.float64), inv_freq(cfg, rot_dim))  # [ctx, rot/2]
    c.cos = c.g.init("rotary.cos_cache", np.cos(freqs).astype(np.float32))
    c.sin = c.g.init("rotary.sin_cache", np.sin(freqs).astype(np.float32))


def head_norm(c: Ctx, x: str, weight: np.ndarray, heads: int, head_dim: int, eps: float, name: str) -> str:
    """Per-head RMSNorm: [1, S, heads*hd] -> [1, S, heads, hd] -> norm -> [1, S, heads*hd]."""
    g = c.g
    y = g.op("Reshape", x, g.const("shape_heads", [0, 0, heads, head_dim]))  # [1, S, heads, hd]
    y = rms_norm(c, y, weight, eps, name)
    return g.op("Reshape", y, g.const("shape_flat", [0, 0, heads * head_dim]))  # [1, S, heads*hd]


@dataclass
class AttnShape:
    heads: int
    kv_heads: int
    head_dim: int
    qk_norm_eps: float = 0.0  # > 0: per-head q/k RMSNorm (Qwen3)


def gqa(c: Ctx, layer: int, q: str, k: str, v: str, a: AttnShape, name: str) -> str:
    """GroupQueryAttention over a shared KV buffer [1, kv_heads, ctx, hd]; q/k/v [1, S, *]. With the
    recipe's kv_dtype float16 the attention runs in fp16 (GroupQueryAttention takes one type for q/k/v,
    the cache and the rotary caches): q/k/v are cast in, the output back to fp32."""
    g, half = c.g, c.q.kv_dtype == "float16"
    past_k, past_v = f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"
    pres_k, pres_v = f"present.{layer}.key", f"present.{layer}.value"
    shape, elem = ["batch", a.kv_heads, "ctx", a.head_dim], F16 if half else F32
    for i, o in ((past_k, pres_k), (past_v, pres_v)):
        g.input(i, elem, shape)
        c.states.append(StateSpec(i, o, "kv", layer, (1, a.kv_heads, "ctx", a.head_dim), c.q.kv_dtype))
    cos, sin = (c.cos, c.sin) if not half else rotary_fp16(c)
    if half:
        q, k, v = (g.op("Cast", t, to=F16) if t else t for t in (q, k, v))  # packed qkv: k, v ""
    attrs = {"num_heads": a.heads, "kv_num_heads": a.kv_heads, "do_rotary": 1}
    out, pk, pv = g.node("GroupQueryAttention", [q, k, v, past_k, past_v, c.seqlens_k, c.total_len,
                                                 cos, sin], 3, name, domain=MS, **attrs)
    g.output(pk, pres_k, elem, shape)
    g.output(pv, pres_v, elem, shape)
    return g.op("Cast", out, to=F32) if half else out


def rotary_fp16(c: Ctx) -> tuple[str, str]:
    """The rotary caches as fp16 (made once per graph from the fp32 ones)."""
    if "rotary_fp16" not in c.memo:
        c.memo["rotary_fp16"] = tuple(c.g.op("Cast", t, to=F16) for t in (c.cos, c.sin))
    return c.memo["rotary_fp16"]


def swiglu_mlp(c: Ctx, x: str, gate: np.ndarray, up: np.ndarray, down: np.ndarray, prefix: str) -> str:
    """down(silu(gate x) * up x), gate and up fused into one matmul."""
    g = c.g
    gu = linear(c, x, [gate, up], f"{prefix}.gate_up_proj")  # [1, S, 2I]
    a, b = g.node("Split", [gu, g.const("split_mlp", [gate.shape[0], up.shape[0]])], 2, f"{prefix}.split", axis=-1)
    act = g.op("Mul", a, g.op("Sigmoid", a))  # silu
    return linear(c, g.op("Mul", act, b), down, f"{prefix}.down_proj")
