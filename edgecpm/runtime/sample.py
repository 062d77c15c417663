"""Samplers: small pure functions over a logits vector [vocab] (numpy), composed by make_sampler.

Each filter returns logits with the excluded tokens set to -inf; the final draw is greedy or a
categorical sample with a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NEG_INF = -np.inf


def greedy(logits: np.ndarray) -> int:
    return int(np.argmax(logits))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - np.max(logits)
    e = np.exp(z)
    return e / e.sum()


def apply_temperature(logits: np.ndarray, temp: float) -> np.ndarray:
    return logits / temp


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits."""
    if k <= 0 or k >= logits.size:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits >= kth, logits, NEG_INF)


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability sums to >= p."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits)
    probs = softmax(logits)[order]
    keep_sorted = np.cumsum(probs) - probs < p  # tokens before which the mass is still < p
    keep = np.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return np.where(keep, logits, NEG_INF)


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Keep tokens whose probability is at least min_p times the top token's."""
    if min_p <= 0.0:
        return logits
    probs = softmax(logits)
    return np.where(probs >= min_p * probs.max(), logits, NEG_INF)


def apply_repetition_penalty(logits: np.ndarray, previous: list[int], penalty: float) -> np.ndarray:
    """CTRL-style: divide positive logits of seen tokens by the penalty, multiply negative ones."""
    if penalty == 1.0 or not previous:
        return logits
    out = logits.copy()
    ids = np.unique(np.asarray(previous))
    seen = out[ids]
    out[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    return out


def make_distribution(temp: float = 0.0, top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0
                      ) -> Callable[[np.ndarray], np.ndarray]:
    """logits [vocab] -> the probabilities [vocab] (float64) a token is drawn from: one-hot at the
    argmax for temp 0, else temperature, then the top-k, top-p and min-p filters, then softmax."""
    if temp <= 0:
        def onehot(logits: np.ndarray) -> np.ndarray:
            p = np.zeros(logits.size)
            p[greedy(logits)] = 1.0
            return p

        return onehot

    def dist(logits: np.ndarray) -> np.ndarray:
        x = apply_temperature(logits.astype(np.float64), temp)
        return softmax(apply_min_p(apply_top_p(apply_top_k(x, top_k), top_p), min_p))

    return dist


def make_sampler(temp: float = 0.0, top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
                 seed: int | None = None) -> Callable[[np.ndarray], int]:
    """temp 0 -> greedy; else a seeded draw from make_distribution's probabilities."""
    if temp <= 0:
        return greedy
    rng, dist = np.random.default_rng(seed), make_distribution(temp, top_p, top_k, min_p)

    def sample(logits: np.ndarray) -> int:
        p = dist(logits)
        return int(rng.choice(p.size, p=p))

    return sample


def accept_draft(p: np.ndarray, q: np.ndarray | None, token: int, rng: np.random.Generator | None
                 ) -> tuple[bool, np.ndarray | None]:
    """Speculative sampling (Leviathan et al. 2023): keep the drafted `token` with probability
    min(1, p/q) under the target's p and the drafter's q [vocab] (None: the draft was certain, q
    one-hot); on rejection also return the residual max(p - q, 0), normalized, to draw the token from.
    Whatever q is, the kept-or-redrawn token is distributed exactly as p. rng None: greedy (p one-hot)."""
    qd = 1.0 if q is None else float(q[token])
    ratio = 1.0 if qd <= 0 else min(1.0, float(p[token]) / qd)  # qd 0: never drafted by a sampler
    if ratio >= 1.0 or (rng is not None and ratio > 0 and rng.random() < ratio):
        return True, None
    if q is None:
        residual = p.copy()
        residual[token] = 0.0
    else:
        residual = np.maximum(p - q, 0.0)
    total = residual.sum()
    return False, (residual / total if total > 0 else p)


def make_logits_processors(repetition_penalty: float = 1.0, context: int = 64):
    """Processors f(tokens_so_far, logits) -> logits, applied before sampling."""
    if repetition_penalty == 1.0:
        return []
    return [lambda toks, logits: apply_repetition_penalty(logits, toks[-context:], repetition_penalty)]
