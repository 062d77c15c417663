"""GPTQ-style error compensation (the recipe's "gptq" method; Frantar et al. 2022, numpy only).

For a linear layer y = x W^T with calibration inputs X [T, K], the output error of a quantized W' is
    sum_t |x_t (W - W')^T|^2 = tr((W - W') H (W - W')^T),   H = X^T X [K, K].
Columns are quantized in order; each column's rounding error is spread over the columns not yet
quantized through the upper Cholesky factor U of H^-1 (H damped by DAMP x its mean diagonal), so
that correlated inputs make up for each other's error. The rows of U are applied lazily, BLOCK
columns at a time. Each quantization block's scale (and min) is chosen when its first column is
reached, from the weights as updated so far, by the per-block search of edgecpm.export.quant_search
weighted by diag(H) (the per-channel mean square importance); the columns are then rounded against
those fixed parameters one by one.
"""

from __future__ import annotations

import numpy as np

from edgecpm.export.gguf_blocks import BlockWeight
from edgecpm.export.quant import QuantizedWeight, _pack, check_recipe, on_fp16_grid
from edgecpm.export.quant_search import _symmetric, _with_min

# Added to H's diagonal, times its mean diagonal. GPTQ's usual 0.01 assumes far more tokens than
# channels; a calibration text of ~1k tokens leaves H (K up to 6k) rank-deficient, and the
# compensation then fits that text: on held-out text (SmolLM2, export/quality.py's texts) the layers'
# output error at 0.01 was worse than the plain search's, at 0.1 mixed (down_proj worse), at 1.0
# 11-38 % lower (layers 7, 15, 22, g64; 3.0 or a damping by diag(H) itself: about the same).
DAMP = 1.0
BLOCK = 128  # columns per lazy update


def gram(x: np.ndarray, rows: int = 1024) -> np.ndarray:
    """X [T, K] -> X^T X [K, K] fp32, summed over chunks of `rows` tokens (X may be a memmap)."""
    K = x.shape[1]
    h = np.zeros((K, K), np.float32)
    for r in range(0, x.shape[0], rows):
        xc = np.asarray(x[r : r + rows], np.float32)  # [rows, K]
        h += xc.T @ xc
    return h


def layer_gram(memo: dict, path: str) -> np.ndarray:
    """H of the calibration inputs saved at `path` (X [T, K] .npy), kept for the next layer that reads
    the same input (q/k/v, gate/up, experts) and dropped for the next input: one H in memory at a time."""
    if memo.get("gptq_gram", (None,))[0] != path:
        memo.pop("gptq_gram", None)
        memo["gptq_gram"] = (path, gram(np.load(path, mmap_mode="r")))
    return memo["gptq_gram"][1]


def inverse_factor(h: np.ndarray) -> np.ndarray:
    """H [K, K] (symmetric, damped) -> upper triangular U [K, K] fp32 with H^-1 = U^T U.

    With J the order reversal, J H J = L L^T gives H = R R^T, R = J L J upper, so U = R^-1. fp32 is
    enough: the damping bounds H's condition number by about (largest eigenvalue / DAMP mean) + 1."""
    L = np.linalg.cholesky(np.ascontiguousarray(h[::-1, ::-1]))  # [K, K] lower
    return _upper_inverse(np.ascontiguousarray(L[::-1, ::-1]))  # R [K, K] upper, H = R R^T


def _upper_inverse(r: np.ndarray) -> np.ndarray:
    """Inverse of an upper triangular R [n, n] by halves, [[A, B], [0, C]]^-1 = [[A^-1, -A^-1 B C^-1],
    [0, C^-1]]: matrix products (about n^3 / 3 multiply-adds) instead of a general inverse's 2 n^3."""
    n = r.shape[0]
    if n <= 256:
        return np.triu(np.linalg.inv(r))
    k = n // 2
    ai, ci = _upper_inverse(r[:k, :k]), _upper_inverse(r[k:, k:])
    out = np.zeros_like(r)
    out[:k, :k], out[k:, k:] = ai, ci
    out[:k, k:] = -(ai @ r[:k, k:]) @ ci
    return out


def damped(h: np.ndarray, K: int) -> np.ndarray:
    """H padded to K (padding columns: unit diagonal, no coupling) plus DAMP x its mean diagonal."""
    n = h.shape[0]
    out = np.eye(K, dtype=np.float32)
    out[:n, :n] = h
    diag = np.diag(h)
    mean = float(diag.mean()) if diag.size and diag.mean() > 0 else 1.0
    out[np.arange(K), np.arange(K)] += DAMP * mean
    return out


def _block_params(x, imp, sigma2, bits, with_min):
    """Columns x [N, g] of one quantization block (as updated so far) -> (d, m) [N] each, x ~ d q + m
    (m = None for symmetric blocks, where q is centred)."""
    xb = x[:, None, :]  # [N, 1, g]
    v = np.sqrt(sigma2[:, None, None] + xb * xb) * imp[None, None, :]  # [N, 1, g]
    if with_min:
        _, d, m = _with_min(xb, v, bits)
        d, m = d[:, 0], m[:, 0]
        zero = (1 << (bits - 1)) * d
        return d, on_fp16_grid(m + zero, d) - zero  # the min that will be stored, so the sweep rounds with it
    _, d = _symmetric(xb, v, bits)
    return d[:, 0], None


def _round(col, d, m, bits):
    """One column [N] against its block's parameters -> (integer codes [N], dequantized [N])."""
    safe = np.where(d == 0, 1.0, d)
    if m is not None:
        q = np.clip(np.round((col - m) / safe), 0, (1 << bits) - 1)
        return q, d * q + m
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = np.clip(np.round(col / safe), lo, hi)
    return q - lo, d * q


def _sweep(Wt, U, imp, bits, group, with_min):
    """Quantize W^T [Kp, N] (one row per column of W, modified in place) in column order; returns
    q uint8 [N, Kp] and d, m [N, kb] (m None when symmetric)."""
    Kp, N = Wt.shape
    sigma2 = (Wt * Wt).mean(axis=0)  # [N] per row of W, as the search weights values
    Qt = np.zeros((Kp, N), np.uint8)
    D = np.zeros((Kp // group, N), np.float32)
    M = np.zeros((Kp // group, N), np.float32) if with_min else None
    step = max(BLOCK, group)
    for i1 in range(0, Kp, step):
        i2 = min(i1 + step, Kp)
        for b in range(i1 // group, i2 // group):  # the block's parameters, then its columns
            c0 = b * group
            D[b], m = _block_params(Wt[c0 : c0 + group].T, imp[c0 : c0 + group], sigma2, bits, with_min)
            if with_min:
                M[b] = m
            E = _columns(Wt, U, Qt, c0, c0 + group, i2, D[b], m, bits)
            Wt[c0 + group : i2] -= U[c0 : c0 + group, c0 + group : i2].T @ E  # the rest of this step
        E = (Wt[i1:i2] - _dequant(Qt[i1:i2], D, M, i1, group, bits)) / np.diag(U)[i1:i2, None]
        Wt[i2:] -= U[i1:i2, i2:].T @ E  # lazy update of the later steps: [Kp - i2, N]
    c = np.ascontiguousarray
    return c(Qt.T), c(D.T), None if M is None else c(M.T)


def _columns(Wt, U, Qt, c0, c1, i2, d, m, bits):
    """Round columns c0..c1 of one block in order, each error spread over the block's later columns;
    returns the scaled errors E [c1 - c0, N]."""
    E = np.zeros((c1 - c0, Wt.shape[1]), np.float32)
    for col in range(c0, c1):
        q, dq = _round(Wt[col], d, m, bits)
        Qt[col] = q
        E[col - c0] = err = (Wt[col] - dq) / U[col, col]  # [N]
        Wt[col + 1 : c1] -= U[col, col + 1 : c1, None] * err[None, :]
    return E


def _dequant(Qt, D, M, c0, group, bits):
    """Codes Qt [n, N] of columns c0.. -> their values [n, N] (as _round made them)."""
    b = (c0 + np.arange(len(Qt))) // group
    if M is not None:
        return D[b] * Qt + M[b]
    return D[b] * (Qt.astype(np.float32) - (1 << (bits - 1)))


def gptq_quantize(w: np.ndarray, bits: int, group: int, h: np.ndarray, with_min: bool = True):
    """W [N, K] and H = X^T X [K, K] -> BlockWeight (with_min; kind "search", run as the search's
    blocks) or QuantizedWeight (symmetric)."""
    check_recipe(bits, group)
    N, K = w.shape
    kb = -(-K // group)
    Kp = kb * group
    Wt = np.zeros((Kp, N), np.float32)
    Wt[:K] = w.T  # [Kp, N]: a column of W is a contiguous row
    diag = np.pad(np.maximum(np.diag(h), 0), (0, Kp - K))  # [Kp] sum of squares per input channel
    imp = diag / max(float(diag[:K].mean()), 1e-30)  # padding: weight 0 in the block search
    U = inverse_factor(damped(h, Kp))
    Q, D, M = _sweep(Wt, U, imp.astype(np.float32), bits, group, with_min)
    q = Q.reshape(N, kb, group)
    if with_min:
        return BlockWeight(q, D, on_fp16_grid(M + (1 << (bits - 1)) * D, D), bits, group, "search")
    return QuantizedWeight(_pack(q, bits), D, None, bits, group, K)
