"""Quantized linear layers and embeddings: MatMulNBits / GatherBlockQuantized nodes from float weights
(re-quantized by the recipe's method) or from GGUF blocks carried over exactly (edgecpm.export.gguf_blocks).

Activations are fp32 [1, S, features].
"""

from __future__ import annotations

import re

import numpy as np
from onnx import TensorProto, helper

from edgecpm.export.gguf_blocks import BlockWeight, stack
from edgecpm.export.graph import MS
from edgecpm.export.quant import QuantizedWeight
from edgecpm.ops import BLOCK_MINS


def _t(*shape):
    """A float TypeProto; strings are symbolic dims."""
    return helper.make_tensor_type_proto(TensorProto.FLOAT, list(shape))


NP_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}


def exact_f16(a: np.ndarray) -> np.ndarray:
    """`a` as fp16 when that loses nothing (half the bytes a decode step reads), else as it is (fp32).
    Carried-over Q4_1 blocks' m + 8d nearly always is: m and 8d are fp16 of similar size."""
    h = a.astype(np.float16)
    return h if np.array_equal(h.astype(a.dtype), a) else a


MIX_BITS = 8  # what the recipe's mix raises a tensor to
_DOWN = re.compile(r"\.layers\.(\d+)\..*down_proj$")


def forced_bits(c, name: str, bits: int | None) -> int:
    """Bits a tensor must be written with (0 = the recipe's; GGUF blocks are then carried as they are):
    `bits` if given, else MIX_BITS where the recipe's mix names the tensor."""
    if bits:
        return bits
    return MIX_BITS if c.q.mix == "k_m" and more_bits(name, c.w.args.num_hidden_layers) else 0


def more_bits(name: str, layers: int) -> bool:
    """llama.cpp's use_more_bits for Q4_K_M: the MLP down projection of layer i < n/8, i >= 7n/8, or
    every third layer between (the layers whose errors cost the most)."""
    m = _DOWN.search(name)
    if not m:
        return False
    i, eighth = int(m.group(1)), layers // 8
    return i < eighth or i >= 7 * layers // 8 or (i - eighth) % 3 == 2


def as_float(w) -> np.ndarray:
    return w.dequantize() if isinstance(w, BlockWeight) else np.asarray(w, np.float32)


def matmul_nbits(c, x: str, qw: QuantizedWeight, name: str, bias: np.ndarray | None = None) -> str:
    """x [1, S, K] -> [1, S, N] through one MatMulNBits node."""
    g = c.g
    ins = [g.init(f"{name}.qweight", qw.B), g.init(f"{name}.scales", qw.scales)]
    ins.append(g.init(f"{name}.qzeros", qw.zero_points) if qw.zero_points is not None else "")
    if bias is not None:
        ins += ["", g.init(f"{name}.bias", bias.astype(np.float32))]
    while ins[-1] == "":
        ins.pop()
    return g.op("MatMulNBits", x, *ins, name=name, domain=MS, K=qw.K, N=qw.N, bits=qw.bits,
                block_size=qw.group, accuracy_level=c.q.accuracy_level)


def carried_linear(c, x: str, bw: BlockWeight, name: str, bias: np.ndarray | None = None) -> str:
    """y = x W^T for GGUF blocks: MatMulNBits on (q, d) plus, for blocks with a minimum, one
    ai.edgecpm AddBlockMins node adding block_sums(x) @ M'^T (M' [N, kb], fp16 when exact, else fp32),
    which makes it exact."""
    if bw.kind != "search":
        c.carried[bw.kind] = c.carried.get(bw.kind, 0) + 1
    c.memo[("bits", name)] = bw.bits
    y = matmul_nbits(c, x, bw.packed(), name, bias)  # [1, S, N]
    if bw.m is None:
        return y
    N, K = bw.shape
    m = exact_f16(np.ascontiguousarray(bw.m.T))  # [kb, N]
    mins = c.g.init(f"{name}.block_mins", m)
    types = [_t(1, "S", N), _t(1, "S", K), helper.make_tensor_type_proto(NP_TYPE[m.dtype], list(m.shape))]
    return c.g.custom(BLOCK_MINS, [y, x, mins], types, 1, f"{name}.mins", block_size=bw.block)[0]  # [1, S, N]


def carried_parts(c, x: str, ws: list[BlockWeight], name: str, bias: np.ndarray | None) -> str:
    """Weights to be stacked along N (q/k/v, gate/up): one node when their layouts agree, else one
    per run of equal layouts, concatenated (a Q4_K_M file mixes Q4_K and Q6_K)."""
    runs: list[list[BlockWeight]] = []
    for w in ws:
        if runs and runs[-1][0].layout == w.layout:
            runs[-1].append(w)
        else:
            runs.append([w])
    if len(runs) == 1:
        return carried_linear(c, x, stack(ws), name, bias)
    outs, start = [], 0
    for i, run in enumerate(runs):
        n = sum(w.shape[0] for w in run)
        b = None if bias is None else bias[start : start + n]
        outs.append(carried_linear(c, x, stack(run), f"{name}.part{i}", b))
        start += n
    return c.g.op("Concat", *outs, axis=-1)


def gather_blocks(c, ids: str, qw: QuantizedWeight, name: str, mins: np.ndarray | None = None) -> str:
    """ids [1, S] -> [1, S, K] via GatherBlockQuantized. Data is stored [V, kb, blob], the shape of
    MatMulNBits' B, so a tied lm_head with the same blocks shares these bytes (graph dedupe)."""
    g = c.g
    V, kb, _ = qw.B.shape
    scales = qw.scales.reshape(V, kb, 1)  # GatherBlockQuantized wants the data's rank
    y = g.op("GatherBlockQuantized", g.init(f"{name}.qweight", qw.B), ids, g.init(f"{name}.scales", scales),
             name=name, domain=MS, bits=qw.bits, block_size=qw.group, gather_axis=0, quantize_axis=2)  # [1, S, kb, g]
    if mins is not None:
        m = g.op("Gather", g.init(f"{name}.block_mins", mins.reshape(V, kb, 1)), ids, axis=0)  # [1, S, kb, 1]
        y = g.op("Add", y, m)
    return g.op("Reshape", y, g.const("shape_hidden", [0, 0, kb * qw.group]))  # [1, S, K]
