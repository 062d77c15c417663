"""Speculative decoding with rollback of fixed-size state: drafts checked by one target step.

Verification. A round feeds the tokens the state lacks (`pending`: the last drawn token, plus tokens
accepted in a round that was rolled back) followed by k drafts, and reads logits at the last pending
position and at every draft: k+1 predictions from one pass over the weights. Draft i is kept with
the target's probability (speculative sampling; greedy: when it is the argmax); the first rejected
draft is replaced by a token drawn from the residual; when all are kept, a bonus token is drawn from
the last logits. The output is distributed exactly as plain decoding's (greedy: the same tokens, up
to the rounding of a many-row step against a one-row one).

Rollback. KV rows roll back by position. Recurrent and conv state cannot, but the step read its
input buffer and wrote the other one, so the state before the round is still there (State.rewind):
the round's accepted tokens become pending and are fed again at the start of the next round's step.
That costs their rows' compute in the next step, not another pass over the weights, and no copy.
A round with nothing drafted is a plain decode step.

Draft length adapts: up to k tokens after a round that kept all its drafts (growing by 2), one more
than were kept after a round that rejected one; a round that kept none pauses drafting for 1, 2, 4,
.. 8 rounds (reset by a kept draft), so text with nothing to copy runs as plain decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgecpm.runtime.engine import Engine
from edgecpm.runtime.sample import accept_draft
from edgecpm.runtime.state import common_prefix

Dist = Callable[[np.ndarray], np.ndarray]  # logits [vocab] -> probabilities [vocab]


@dataclass
class SpecStats:
    """What drafting did in one generation: drafted and accepted tokens, verification steps."""

    drafted: int = 0
    accepted: int = 0
    steps: int = 0  # target steps that checked at least one draft
    rounds: int = 0  # target steps after the prefill, drafts or not
    tokens: int = 0  # tokens those rounds produced

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def tokens_per_step(self) -> float | None:
        return self.tokens / self.rounds if self.rounds else None


class Drafter(Protocol):
    def propose(self, context: list[int], k: int, dist: Dist, rng) -> tuple[list[int], list | None]:
        """Up to k tokens to follow `context`, and the drafter's probabilities [vocab] for each
        (None: the drafts were certain, e.g. copied or greedy)."""


@dataclass
class NgramDrafter:
    """Prompt lookup: the tokens that followed the latest earlier occurrence of the context's last
    n tokens (n from max_n down to min_n). Needs no model; wins where the answer copies its input."""

    max_n: int = 3
    min_n: int = 2

    def propose(self, context, k, dist=None, rng=None):
        a = np.asarray(context)
        L = a.size
        for n in range(self.max_n, self.min_n - 1, -1):
            if k <= 0 or L <= n:
                continue
            windows = np.lib.stride_tricks.sliding_window_view(a[: L - 1], n)  # [L-n, n]: a[i:i+n], i+n < L
            hits = np.flatnonzero((windows == a[L - n :]).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return a[start : start + k].tolist(), None
        return [], None


class ModelDrafter:
    """Drafts with a smaller artifact of the same tokenizer. Its state follows the target's tokens:
    each round it rolls back to their common prefix (by position, to where its last step began, or
    to a snapshot taken before drafting) and prefills the rest."""

    def __init__(self, engine: Engine):
        self.engine, self.snap = engine, None

    def _catch_up(self, context: list[int]) -> np.ndarray:
        st = self.engine.state
        keep = min(common_prefix(st.tokens, context), len(context) - 1)  # >= 1 token to feed
        if not st.truncate(keep):
            if st.step_start is not None and st.step_start <= keep:
                st.rewind(keep)
            elif self.snap is not None and self.snap.pos <= keep and list(self.snap.tokens) == context[: self.snap.pos]:
                st.restore(self.snap)
            else:
                st.reset()
        logits = self.engine.prefill(context[st.pos :])
        self.snap = st.snapshot() if st.recurrent else None
        return logits

    def propose(self, context, k, dist, rng):
        if k <= 0 or len(context) + k > self.engine.ctx:
            return [], None
        logits = self._catch_up(context)
        drafts, probs = [], []
        for i in range(k):
            q = dist(logits)
            token = int(np.argmax(q)) if rng is None else int(rng.choice(q.size, p=q))
            drafts.append(token)
            probs.append(q)
            if i + 1 < k:
                logits = self.engine.step([token])[0]
        return drafts, (None if rng is None else probs)


def _draw(p: np.ndarray, rng) -> int:
    return int(np.argmax(p)) if rng is None else int(rng.choice(p.size, p=p))


def _process(processors, history: list[int], logits: np.ndarray) -> np.ndarray:
    for f in processors:
        logits = f(history, logits)
    return logits


def speculative_step(engine: Engine, new_tokens: list[int], drafter: Drafter, dist: Dist, rng=None,
                     processors=(), max_tokens: int = 256, prefill_chunk: int = 512, k: int = 8,
                     stats: SpecStats | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """generate_step with drafts: prefill, then yield (token, logits) as rounds of verification
    accept them. rng None = greedy (dist one-hot). When the caller stops, the state is rolled back so
    that it holds no token past the last one consumed before the one it stopped on."""
    stats = stats if stats is not None else SpecStats()
    st = engine.state
    logits = _process(processors, st.tokens, engine.prefill(new_tokens, prefill_chunk))
    pending, n = [_draw(dist(logits), rng)], 1
    limit = st.pos  # the most tokens the state may hold if the caller stops at the token being yielded
    want, pause, backoff = k, 0, 1  # draft length now; rounds left without drafting (see above)
    try:
        yield pending[0], logits
        while n < max_tokens:
            context, base, m = st.tokens + pending, st.pos, len(pending)
            room = min(want, max_tokens - n - 1, engine.ctx - base - m) if pause == 0 else 0
            pause = max(pause - 1, 0)
            drafts, q = drafter.propose(context, room, dist, rng) if room > 0 else ([], None)
            out = engine.step(pending + drafts, logits_at=list(range(m - 1, m + len(drafts))))  # [len+1, V]
            stats.steps, stats.rounds = stats.steps + bool(drafts), stats.rounds + 1
            stats.drafted += len(drafts)
            for i in range(len(drafts) + 1):
                logits = _process(processors, context + drafts[:i], out[i])
                p = dist(logits)
                if i == len(drafts):
                    token = _draw(p, rng)
                    break
                ok, residual = accept_draft(p, None if q is None else q[i], drafts[i], rng)
                if not ok:
                    token = _draw(residual, rng)
                    break
                stats.accepted, stats.tokens = stats.accepted + 1, stats.tokens + 1
                n, limit = n + 1, base + m + i
                yield drafts[i], logits
            if drafts:
                want = min(k, want + 2) if i == len(drafts) else i + 1
                pause, backoff = (backoff, min(2 * backoff, 8)) if i == 0 else (0, 1)
            fed = pending + drafts
            reached = st.rewind(base + m + i) if i < len(drafts) else st.pos
            pending = fed[reached - base : m + i] + [token]
            n, limit, stats.tokens = n + 1, st.pos, stats.tokens + 1
            yield token, logits
    finally:
        if st.pos > limit:
            st.rewind(limit)
