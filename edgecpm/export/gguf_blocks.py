"""GGUF block formats carried over into MatMulNBits / GatherBlockQuantized without re-rounding.

Every supported format is, per block of `block` values, w = d * (q - zero) + m with integer q:
    Q4_0  4-bit  block 32  w = d (q - 8)                        exact
    Q4_1  4-bit  block 32  w = d q + m                          exact (m' = m + 8d, see below)
    Q8_0  8-bit  block 32  w = d q, q int8 -> q + 128             exact
    Q5_0 / Q5_1  8-bit container, block 32                      exact
    Q4_K  4-bit  block 32  d = d_super * sc, m = -dmin * mn     exact (6-bit sc/mn times fp16)
    Q5_K  8-bit container, block 32, as Q4_K with a fifth bit   exact
    Q6_K  8-bit container, block 16, w = d_super * sc (q - 32)  exact (int8 sc times fp16)
MatMulNBits without zero points computes d * (q - 2^(bits-1)), so a block with a minimum keeps its
integers and scales and stores m' = m + 2^(bits-1) d: x.W^T = MatMulNBits(x; q, d) + (per-block sums
of x) . M'^T (blocks.linear adds that term). Float zero points would be exact too, but onnxruntime's
one-row kernel has no fast path for them (export/zero_points_bench.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecpm.export.quant import QuantizedWeight, _pack


@dataclass
class BlockWeight:
    """A weight [N, K] kept in its source's blocks: w[n, b*block + j] = d[n, b] (q[n, b, j] - zero) + m[n, b]."""

    q: np.ndarray  # uint8 [N, kb, block], values < 2^bits
    d: np.ndarray  # float32 [N, kb]
    m: np.ndarray | None  # float32 [N, kb] (m' above), None when every block is symmetric
    bits: int
    block: int
    kind: str  # the GGUF type name

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[0], self.q.shape[1] * self.block

    @property
    def zero(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def layout(self) -> tuple:
        """Weights with the same layout can be stacked into one MatMulNBits."""
        return self.bits, self.block, self.m is not None

    def take_rows(self, idx: np.ndarray) -> BlockWeight:
        return BlockWeight(self.q[idx], self.d[idx], None if self.m is None else self.m[idx], self.bits,
                           self.block, self.kind)

    def dequantize(self) -> np.ndarray:
        w = (self.q.astype(np.float32) - self.zero) * self.d[..., None]  # [N, kb, block]
        if self.m is not None:
            w += self.m[..., None]
        return w.reshape(self.shape)

    def packed(self) -> QuantizedWeight:
        """MatMulNBits tensors (symmetric: no zero points; the minimum is the caller's correction)."""
        return QuantizedWeight(_pack(self.q, self.bits), self.d, None, self.bits, self.block, self.shape[1])


def stack(ws: list[BlockWeight]) -> BlockWeight:
    """Concatenate along N weights of one layout (e.g. q, k, v into one qkv projection)."""
    m = np.concatenate([w.m for w in ws]) if ws[0].m is not None else None
    kinds = "+".join(sorted({w.kind for w in ws}))
    return BlockWeight(np.concatenate([w.q for w in ws]), np.concatenate([w.d for w in ws]), m, ws[0].bits,
                       ws[0].block, kinds)


def _f16(raw: np.ndarray) -> np.ndarray:
    """[..., 2] uint8 -> [...] float32 from little-endian fp16."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., n] bytes -> [..., 2n]: the n low nibbles, then the n high nibbles (ggml's order)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _q4_0(b):  # b [R, nb, 18]
    return _nibbles(b[..., 2:]), _f16(b[..., 0:2]), None


def _q4_1(b):  # b [R, nb, 20]
    return _nibbles(b[..., 4:]), _f16(b[..., 0:2]), _f16(b[..., 2:4])


def _q8_0(b):  # b [R, nb, 34]
    return b[..., 2:].view(np.int8).astype(np.int16) + 128, _f16(b[..., 0:2]), None


def _q5_high(qh: np.ndarray) -> np.ndarray:
    """qh [..., 4] -> [..., 32] bit j of the little-endian uint32."""
    bits = np.unpackbits(qh, axis=-1, bitorder="little")  # [..., 32]
    return bits.astype(np.uint8)


def _q5_0(b):  # b [R, nb, 22]: d, qh[4], qs[16]; w = d (q - 16)
    q = _nibbles(b[..., 6:]) | (_q5_high(b[..., 2:6]) << 4)
    return q.astype(np.int16) + 112, _f16(b[..., 0:2]), None


def _q5_1(b):  # b [R, nb, 24]: d, m, qh[4], qs[16]; w = d q + m
    q = _nibbles(b[..., 8:]) | (_q5_high(b[..., 4:8]) << 4)
    return q, _f16(b[..., 0:2]), _f16(b[..., 2:4])


def _k_scales(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K 12 packed bytes [..., 12] -> 6-bit (scale, min) [..., 8] each."""
    sc = sc.astype(np.uint8)
    lo, hi, ex = sc[..., 0:4], sc[..., 4:8], sc[..., 8:12]
    scale = np.concatenate([lo & 63, (ex & 0x0F) | ((lo >> 6) << 4)], axis=-1)
    mins = np.concatenate([hi & 63, (ex >> 4) | ((hi >> 6) << 4)], axis=-1)
    return scale.astype(np.float32), mins.astype(np.float32)


def _k_split(b, q):
    """Super-block (d, dmin, 12 scale bytes) + q [R, nb, 256] -> per-32 q [R, nb*8, 32], d, m."""
    sc, mn = _k_scales(b[..., 4:16])  # [R, nb, 8]
    d = _f16(b[..., 0:2])[..., None] * sc  # [R, nb, 8]
    m = -_f16(b[..., 2:4])[..., None] * mn
    R = q.shape[0]
    return q.reshape(R, -1, 32), d.reshape(R, -1), m.reshape(R, -1)


def _q4_k(b):  # b [R, nb, 144]: d, dmin, scales[12], qs[128] as 4 chunks of 32 bytes (64 values each)
    qs = b[..., 16:].reshape(*b.shape[:2], 4, 32)
    return _k_split(b, _nibbles(qs).reshape(*b.shape[:2], 256))


def _q5_k(b):  # b [R, nb, 176]: d, dmin, scales[12], qh[32], qs[128]
    qs = b[..., 48:].reshape(*b.shape[:2], 4, 32)
    qh = b[..., 16:48]  # [R, nb, 32]: bit 2c -> chunk c's first 32 values, bit 2c+1 -> its next 32
    high = np.stack([(qh >> s) & 1 for s in range(8)], axis=-2)  # [R, nb, 8, 32]
    q = _nibbles(qs).reshape(*b.shape[:2], 256) | (high.reshape(*b.shape[:2], 256) << 4)
    return _k_split(b, q)


def _q6_k(b):  # b [R, nb, 210]: ql[128], qh[64], scales int8[16], d; two halves of 128 values
    R, nb = b.shape[:2]
    ql = b[..., :128].reshape(R, nb, 2, 64)
    qh = b[..., 128:192].reshape(R, nb, 2, 32)
    low = np.concatenate([ql[..., :32] & 0x0F, ql[..., 32:] & 0x0F, ql[..., :32] >> 4, ql[..., 32:] >> 4], axis=-1)
    high = np.concatenate([(qh >> s) & 3 for s in (0, 2, 4, 6)], axis=-1)  # [R, nb, 2, 128]
    q = (low | (high << 4)).reshape(R, nb * 16, 16)  # values 0..63; w = d sc (q - 32)
    d = _f16(b[..., 208:210])[..., None] * b[..., 192:208].view(np.int8).astype(np.float32)  # [R, nb, 16]
    return q.astype(np.int16) + 96, d.reshape(R, -1), None


# GGUF type name -> (decoder, block bytes, values per block, container bits, carried block size)
FORMATS = {
    "Q4_0": (_q4_0, 18, 32, 4, 32), "Q4_1": (_q4_1, 20, 32, 4, 32), "Q8_0": (_q8_0, 34, 32, 8, 32),
    "Q5_0": (_q5_0, 22, 32, 8, 32), "Q5_1": (_q5_1, 24, 32, 8, 32),
    "Q4_K": (_q4_k, 144, 256, 4, 32), "Q5_K": (_q5_k, 176, 256, 8, 32), "Q6_K": (_q6_k, 210, 256, 8, 16),
}


def carry(raw: np.ndarray, kind: str, K: int) -> BlockWeight:
    """GGUF tensor bytes [N, K/values * bytes] of type `kind` -> BlockWeight [N, K] (exact)."""
    fn, nbytes, values, bits, block = FORMATS[kind]
    N = raw.shape[0]
    b = np.asarray(raw, np.uint8).reshape(N, K // values, nbytes)  # [N, blocks, bytes]
    q, d, m = fn(b)
    q = np.asarray(q).reshape(N, K // block, block)
    zero = 1 << (bits - 1)
    if m is not None:
        m = (m.reshape(N, -1) + zero * d.reshape(N, -1)).astype(np.float32)  # d q + m = d (q - zero) + m'
    return BlockWeight(q.astype(np.uint8), d.reshape(N, -1).astype(np.float32), m, bits, block, kind)
