"""Block quantization in exactly the layout of onnxruntime's com.microsoft::MatMulNBits.

A weight W [N, K] (out features, in features) is cut along K into blocks of `group` values.
    B            uint8 [N, k_blocks, group * bits / 8]  4-bit: element 2i in the low nibble, 2i+1 high
    scales       float [N, k_blocks]
    zero_points  uint8 [N, ceil(k_blocks * bits / 8)]   packed like B; absent when symmetric
                 (MatMulNBits then uses 2^(bits-1))
K that is not a multiple of `group` is padded with zeros (k_blocks = ceil(K / group)).
`dequantize` is the plain numpy reference the packing is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecpm.contract import UserError

ROW_CHUNK = 8192  # rows quantized at a time: bounds the temporaries for a 250k-row lm_head


@dataclass
class QuantizedWeight:
    B: np.ndarray  # uint8 [N, k_blocks, blob]
    scales: np.ndarray  # float32 [N, k_blocks]
    zero_points: np.ndarray | None  # uint8 [N, ceil(k_blocks * bits / 8)]
    bits: int
    group: int
    K: int

    @property
    def N(self) -> int:
        return self.B.shape[0]


def check_recipe(bits: int, group: int) -> None:
    if bits not in (4, 8):
        raise UserError(f"{bits}-bit block quantization is not supported; use --q-bits 4 or 8 (or 16/32 for float)")
    if group not in (16, 32, 64, 128, 256) :
        raise UserError(f"--q-group-size {group} is not supported; use 32, 64 or 128")


def on_fp16_grid(m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Block mins m' [.., kb] (fp32) moved to the nearest fp16 value where that moves none by more than
    its block's scale d / 64 (a rounding of the codes is d / 2), else returned as they are. The exporter
    writes mins that are fp16 values in fp16 (qlinear.exact_f16): half the bytes a decode step reads."""
    h = m.astype(np.float16).astype(np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(h) & (np.abs(h - m) <= np.abs(d) / 64)
    return np.where(ok, h, m).astype(np.float32)


def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """uint8 values < 2^bits along the last axis -> packed bytes (4-bit: low nibble first)."""
    if bits == 8:
        return q.astype(np.uint8)
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), q.dtype)], axis=-1)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def _unpack(p: np.ndarray, bits: int, n: int) -> np.ndarray:
    if bits == 8:
        return p[..., :n].astype(np.int32)
    out = np.empty(p.shape[:-1] + (p.shape[-1] * 2,), np.int32)
    out[..., 0::2] = p & 0x0F
    out[..., 1::2] = p >> 4
    return out[..., :n]


def _quantize_rows(w: np.ndarray, bits: int, group: int, symmetric: bool):
    """w [n, kb*group] fp32 -> q uint8 [n, kb, group], scales [n, kb], zp uint8 [n, kb] or None."""
    n = w.shape[0]
    blocks = w.reshape(n, -1, group)  # [n, kb, group]
    qmax = (1 << bits) - 1
    if symmetric:
        # Like llama.cpp's Q4_0: the signed value of largest magnitude maps to -2^(bits-1).
        idx = np.abs(blocks).argmax(axis=-1)[..., None]
        peak = np.take_along_axis(blocks, idx, axis=-1)[..., 0]  # [n, kb]
        scales = peak / -(1 << (bits - 1))
        zp = None
        zero = 1 << (bits - 1)
    else:
        # uint8 zero points: MatMulNBits' fast (prepacked) path takes only these, not float ones.
        lo = np.minimum(blocks.min(axis=-1), 0.0)
        hi = np.maximum(blocks.max(axis=-1), 0.0)
        scales = (hi - lo) / qmax
        safe = np.where(scales == 0, 1.0, scales)
        zp = np.clip(np.round(-lo / safe), 0, qmax).astype(np.uint8)
        zero = zp.astype(np.float32)[..., None]
    safe = np.where(scales == 0, 1.0, scales)[..., None]
    q = np.clip(np.round(blocks / safe) + zero, 0, qmax).astype(np.uint8)
    return q, scales.astype(np.float32), zp


def quantize(w: np.ndarray, bits: int, group: int, symmetric: bool = True) -> QuantizedWeight:
    """Quantize W [N, K] (fp32) into MatMulNBits tensors, ROW_CHUNK rows at a time into arrays
    allocated once (a list of parts joined at the end would hold the result twice)."""
    check_recipe(bits, group)
    N, K = w.shape
    kb = -(-K // group)
    B = np.empty((N, kb, group * bits // 8), np.uint8)  # [N, kb, blob]
    S = np.empty((N, kb), np.float32)  # [N, kb]
    Z = None if symmetric else np.empty((N, -(-kb * bits // 8)), np.uint8)  # [N, packed kb]
    for r in range(0, N, ROW_CHUNK):
        rows = np.asarray(w[r : r + ROW_CHUNK], np.float32)
        if kb * group != K:  # pad K with zeros to whole blocks
            rows = np.pad(rows, ((0, 0), (0, kb * group - K)))
        q, s, z = _quantize_rows(rows, bits, group, symmetric)
        B[r : r + len(rows)] = _pack(q, bits)
        S[r : r + len(rows)] = s
        if Z is not None:
            Z[r : r + len(rows)] = _pack(z, bits)
    return QuantizedWeight(B, S, Z, bits, group, K)


def dequantize(qw: QuantizedWeight) -> np.ndarray:
    """Reference: MatMulNBits tensors -> W [N, K] fp32."""
    N, kb, _ = qw.B.shape
    q = _unpack(qw.B, qw.bits, qw.group)  # [N, kb, group]
    if qw.zero_points is None:
        zp = np.full((N, kb, 1), 1 << (qw.bits - 1), np.float32)
    else:
        zp = _unpack(qw.zero_points, qw.bits, kb).astype(np.float32)[..., None]  # [N, kb, 1]
    w = (q - zp) * qw.scales[..., None]  # [N, kb, group]
    return w.reshape(N, kb * qw.group)[:, : qw.K].astype(np.float32)
