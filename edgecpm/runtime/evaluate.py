"""Quality of an artifact against a reference artifact: perplexity, KL(ref || artifact), top-1 agreement.

Chunking is llama-perplexity's (`--kl-divergence`): the text's tokens are cut into chunks of `ctx`
tokens (a tail shorter than a chunk is dropped); each chunk starts from an empty state; the logits at
positions ctx/2 .. ctx-2 of a chunk predict the tokens at ctx/2+1 .. ctx-1, so a chunk scores
ctx - 1 - ctx/2 positions (255 for ctx 512). No BOS is added unless the tokenizer adds one, in which
case it replaces the first token of every chunk, as llama.cpp does.

path "decode" feeds the unscored first half in one step and then the scored half one token per step
(the kernels generation runs); "prefill" feeds each chunk in one step (faster; attention's many-row path
rounds differently, and with accuracy_level 4 MatMulNBits' int8 activations grow that, so the figures
differ a little).
Needs only numpy and the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecpm.contract import UserError


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """[n, vocab] -> float64 log-probabilities over the full vocabulary."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@dataclass
class Totals:
    """Running sums over scored positions; `result()` turns them into the reported figures."""

    positions: int = 0
    nll: float = 0.0  # sum of -log p_artifact(target)
    ref_nll: float = 0.0  # sum of -log p_reference(target)
    kl: float = 0.0  # sum of KL(ref || artifact)
    kl_max: float = 0.0
    top1: int = 0  # positions where both argmaxes agree

    def add(self, ref_logits: np.ndarray, logits: np.ndarray, targets: np.ndarray) -> None:
        """Score one chunk: logits [n, vocab] of both models, targets [n] (the next tokens)."""
        lr, la = log_softmax(ref_logits), log_softmax(logits)
        rows = np.arange(len(targets))
        kl = (np.exp(lr) * (lr - la)).sum(-1)  # [n]
        self.positions += len(targets)
        self.nll -= float(la[rows, targets].sum())
        self.ref_nll -= float(lr[rows, targets].sum())
        self.kl += float(kl.sum())
        self.kl_max = max(self.kl_max, float(kl.max()))
        self.top1 += int((lr.argmax(-1) == la.argmax(-1)).sum())

    def result(self) -> dict:
        n = max(self.positions, 1)
        return {"positions": self.positions, "ppl": float(np.exp(self.nll / n)),
                "ref_ppl": float(np.exp(self.ref_nll / n)), "kl_mean": self.kl / n, "kl_max": self.kl_max,
                "top1": self.top1 / n}


def chunks(tokens: list[int], ctx: int, bos: int | None = None) -> list[list[int]]:
    """Whole chunks of `ctx` tokens; with a BOS id, it replaces each chunk's first token."""
    if ctx < 4:
        raise UserError(f"--ctx {ctx} is too small; use at least 4 (llama-perplexity uses 512)")
    out = [list(tokens[i : i + ctx]) for i in range(0, len(tokens) - ctx + 1, ctx)]
    if not out:
        raise UserError(f"the text has {len(tokens)} tokens, fewer than one chunk of --ctx {ctx}; "
                        "use a longer text or a smaller --ctx")
    if bos is not None:
        for c in out:
            c[0] = bos
    return out


def chunk_logits(engine, chunk: list[int], path: str = "decode") -> np.ndarray:
    """Logits [ctx - 1 - ctx/2, vocab] at the scored positions of one chunk, from an empty state."""
    ctx, first = len(chunk), len(chunk) // 2
    engine.reset()
    if path == "prefill":
        return engine.step(chunk, logits_at=list(range(first, ctx - 1)))
    if path != "decode":
        raise ValueError(f"path {path!r}")
    rows = [engine.step(chunk[: first + 1])[-1]]  # logits at position `first`
    rows += [engine.step([t])[-1] for t in chunk[first + 1 : ctx - 1]]
    return np.stack(rows)


def evaluate(engine, ref_engine, tokens: list[int], ctx: int = 512, path: str = "decode", bos: int | None = None,
             progress=None) -> dict:
    """Score `engine` against `ref_engine` on `tokens`; progress(chunks_done, chunks_total) after each chunk."""
    if engine.vocab_size != ref_engine.vocab_size:
        raise UserError(f"the artifact's vocabulary ({engine.vocab_size}) differs from the reference's "
                        f"({ref_engine.vocab_size}); compare exports of the same model")
    if ctx > min(engine.ctx, ref_engine.ctx):
        raise UserError(f"--ctx {ctx} exceeds the context the artifacts were loaded with "
                        f"({min(engine.ctx, ref_engine.ctx)}); use a smaller --ctx")
    parts, totals = chunks(tokens, ctx, bos), Totals()
    for i, chunk in enumerate(parts):
        targets = np.asarray(chunk[ctx // 2 + 1 :], np.int64)  # [ctx - 1 - ctx/2]
        totals.add(chunk_logits(ref_engine, chunk, path), chunk_logits(engine, chunk, path), targets)
        if progress:
            progress(i + 1, len(parts))
    return {**totals.result(), "chunks": len(parts), "ctx": ctx, "path": path}
