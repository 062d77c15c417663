"""Error-minimizing block quantization (the recipe's "search" method), our own take on the per-block
scale / min searches of llama.cpp's K-quants (make_qx_quants, make_qkx2_quants).

For each block of `group` weights x with importance weights v (per input channel: the mean square of
the activations that multiply it, from a calibration text, times sqrt(sigma^2 + x^2) as llama.cpp
does), try a small grid of candidate scales; for each, round, then refit the scale (and the min) by
weighted least squares, and keep the candidate with the smallest weighted error
    sum_i v_i (x_i - d (q_i - zero) - m)^2.
Symmetric blocks (no min) go straight to MatMulNBits; blocks with a min become a BlockWeight, the
same exact MatMulNBits + block-sums split the GGUF carry-over uses.
"""

from __future__ import annotations

import numpy as np

from edgecpm.export.gguf_blocks import BlockWeight
from edgecpm.export.quant import QuantizedWeight, _pack, check_recipe, on_fp16_grid

CHUNK = 512  # rows searched at a time: temporaries stay in cache-sized pieces
STEPS = np.arange(-4, 5) * 0.1
MIN_STEPS = np.arange(-10, 11) * 0.1  # llama.cpp's make_qkx2_quants range for Q4_K: levels +-1 in 0.1 steps
REFINE = 3  # candidate offsets on the number of levels (llama.cpp uses 0.1 steps)


def _weights(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """Per-value weights [n, kb, g] for blocks x [n, kb, g]."""
    sigma2 = (x * x).mean(axis=(1, 2), keepdims=True)  # [n, 1, 1] per row
    v = np.sqrt(sigma2 + x * x)
    if importance is not None:
        v = v * importance.reshape(1, x.shape[1], x.shape[2])
    return v


def _symmetric(x: np.ndarray, v: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocks x [n, kb, g] -> q uint8 (values with zero 2^(bits-1)) [n, kb, g], d [n, kb]."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    idx = np.abs(x).argmax(axis=-1)[..., None]
    peak = np.take_along_axis(x, idx, axis=-1)  # [n, kb, 1] signed value of largest magnitude
    xs = x / np.where(peak == 0, 1.0, peak)  # [n, kb, g] in [-1, 1]
    best_d = np.zeros(x.shape[:2], np.float32)
    best = np.full(x.shape[:2], -np.inf, np.float32)
    best_q = np.zeros(x.shape, np.int8)
    for levels in np.concatenate([lo + STEPS, hi + STEPS]).tolist():
        q = np.clip(np.round(xs * levels), lo, hi)  # [n, kb, g]
        vq = v * q
        sxq, sqq = (vq * x).sum(-1), (vq * q).sum(-1)  # [n, kb]
        score = np.where(sqq > 0, sxq * sxq / np.maximum(sqq, 1e-30), 0)  # error = sum v x^2 - score
        better = score > best
        best = np.where(better, score, best)
        best_d = np.where(better, sxq / np.maximum(sqq, 1e-30), best_d)
        np.copyto(best_q, q, where=better[..., None], casting="unsafe")
    return (best_q.astype(np.int16) - lo).astype(np.uint8), best_d.astype(np.float32)


def _fit(sums, v, x, q):
    """Weighted least squares for x ~ d q + m per block; returns d, m, error [n, kb].

    sums = (sum v, sum v x, sum v x^2) [n, kb] each, computed once per block."""
    sw, sx, sxx = sums
    vq = v * q
    sl, sll, sxl = vq.sum(-1), (vq * q).sum(-1), (vq * x).sum(-1)
    det = sw * sll - sl * sl
    ok = det > 1e-12 * np.maximum(sw * sll, 1e-30)
    d = np.where(ok, (sw * sxl - sx * sl) / np.where(ok, det, 1), 0)
    m = np.where(ok, (sll * sx - sl * sxl) / np.where(ok, det, 1), sx / np.maximum(sw, 1e-30))
    err = sxx - 2 * d * sxl - 2 * m * sx + d * d * sll + 2 * d * m * sl + m * m * sw  # sum v (x - d q - m)^2
    return d, m, err


def _with_min(x: np.ndarray, v: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks x [n, kb, g] -> q uint8 [n, kb, g] (0..2^bits-1), d, m [n, kb] with x ~ d q + m."""
    top = (1 << bits) - 1
    lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    xs = (x - lo) / np.where(hi > lo, hi - lo, 1.0)  # [n, kb, g] in [0, 1]
    best_err = np.full(x.shape[:2], np.inf, np.float32)
    best_q = np.zeros(x.shape, np.uint8)
    best_d = np.zeros(x.shape[:2], np.float32)
    best_m = lo[..., 0].astype(np.float32)
    sums = (v.sum(-1), (v * x).sum(-1), (v * x * x).sum(-1))
    for levels in (top + MIN_STEPS).tolist():
        q = np.clip(np.round(xs * levels), 0, top)
        d, m, err = _fit(sums, v, x, q)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_d, best_m = np.where(better, d, best_d), np.where(better, m, best_m)
        np.copyto(best_q, q, where=better[..., None], casting="unsafe")
    # refinements: round against the best fit, refit, keep it where it helps
    best_q = best_q.astype(np.float32)
    for _ in range(REFINE):
        safe = np.where(best_d == 0, 1.0, best_d)[..., None]
        q = np.clip(np.round((x - best_m[..., None]) / safe), 0, top)
        d, m, err = _fit(sums, v, x, q)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        np.copyto(best_q, q, where=better[..., None])
        best_d, best_m = np.where(better, d, best_d), np.where(better, m, best_m)
    return best_q.astype(np.uint8), best_d.astype(np.float32), best_m.astype(np.float32)


def search_quantize(w: np.ndarray, bits: int, group: int, importance: np.ndarray | None = None,
                    with_min: bool = False):
    """W [N, K] -> QuantizedWeight (symmetric) or BlockWeight (with_min), by weighted error search.

    importance: [K] per input channel (mean square activation), or None for no calibration.
    """
    check_recipe(bits, group)
    N, K = w.shape
    kb = -(-K // group)
    imp = None
    if importance is not None:
        imp = np.asarray(importance, np.float32).reshape(-1)
        imp = np.pad(imp / max(float(imp.mean()), 1e-30), (0, kb * group - K))  # [kb * group]
    qs, ds, ms = [], [], []
    for r in range(0, N, CHUNK):
        rows = np.asarray(w[r : r + CHUNK], np.float32)
        if kb * group != K:
            rows = np.pad(rows, ((0, 0), (0, kb * group - K)))
        x = rows.reshape(len(rows), kb, group)  # [n, kb, g]
        v = _weights(x, imp)
        if with_min:
            q, d, m = _with_min(x, v, bits)
            ms.append(on_fp16_grid(m + (1 << (bits - 1)) * d, d))  # d q + m = d (q - zero) + m'
        else:
            q, d = _symmetric(x, v, bits)
        qs.append(q)
        ds.append(d)
    q, d = np.concatenate(qs), np.concatenate(ds)
    if with_min:
        return BlockWeight(q, d, np.concatenate(ms).astype(np.float32), bits, group, "search")
    return QuantizedWeight(_pack(q, bits), d, None, bits, group, K)
