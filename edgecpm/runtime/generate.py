"""Generation in layers: a token generator, a text stream of small results, a convenience generate()."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from edgecpm.runtime.engine import Engine
from edgecpm.runtime.sample import make_distribution, make_logits_processors, make_sampler
from edgecpm.runtime.speculate import Drafter, SpecStats, speculative_step
from edgecpm.runtime.tokenizer import StreamingDetokenizer, Tokenizer


@dataclass
class GenerationResponse:
    """One streamed piece: a text delta and where the generation stands."""

    text: str
    token: int | None
    finish_reason: str | None  # "stop" (EOS or stop string), "length", or None while running
    prompt_tokens: int  # the whole prompt, including a prefix the state already held (chat reuse)
    generation_tokens: int
    prompt_tps: float  # of the tokens prefilled
    generation_tps: float
    entropy: float | None = None  # nats, of the model's distribution for this token (when asked for)
    prefill_tokens: int | None = None  # of prompt_tokens, those prefilled now (the rest came from the state)
    draft: SpecStats | None = None  # speculative decoding so far (when drafting)


def entropy(logits: np.ndarray) -> float:
    """Shannon entropy (nats) of softmax(logits)."""
    z = logits.astype(np.float64) - logits.max()
    p = np.exp(z)
    p /= p.sum()
    return float(-(p * np.log(np.maximum(p, 1e-300))).sum())


def generate_step(engine: Engine, new_tokens: list[int], sampler: Callable = None, processors=(),
                  max_tokens: int = 256, prefill_chunk: int = 512) -> Iterator[tuple[int, np.ndarray]]:
    """Prefill `new_tokens` on top of the engine's state, then yield (token, logits) one at a time.

    A token is fed back only when the next one is asked for, so the state never holds a token
    (like EOS) that the caller stopped on.
    """
    sampler = sampler or make_sampler()
    logits = engine.prefill(new_tokens, prefill_chunk)
    for n in range(max_tokens):
        for p in processors:
            logits = p(engine.state.tokens, logits)
        token = sampler(logits)
        yield token, logits
        if n + 1 < max_tokens:
            logits = engine.step([token])[0]


class _StopFilter:
    """Holds back text that may be the start of a stop string; reports a stop when one appears."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""

    def push(self, text: str) -> tuple[str, bool]:
        self.buf += text
        for s in self.stops:
            i = self.buf.find(s)
            if i >= 0:
                out, self.buf = self.buf[:i], ""
                return out, True
        cut = max(len(self.buf) - self.hold, 0)
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


def stream_tokens(engine: Engine, tokenizer: Tokenizer, new_tokens: list[int], max_tokens: int = 256,
                  temp: float = 0.0, top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
                  seed: int | None = None, repetition_penalty: float = 1.0, stop: list[str] | None = None,
                  prefill_chunk: int = 512, on_prefill: Callable | None = None,
                  with_entropy: bool = False, draft: Drafter | None = None,
                  draft_tokens: int = 8) -> Iterator[GenerationResponse]:
    """Stream text for `new_tokens` fed after the engine's current state (chat reuses that state).
    `draft` (edgecpm.runtime.speculate) proposes up to `draft_tokens` tokens per verification step.

    Stopping the iteration stops the generation (tokens are made only when asked for)."""
    procs, stats = make_logits_processors(repetition_penalty), SpecStats() if draft else None
    if draft is None:
        steps = generate_step(engine, new_tokens, make_sampler(temp, top_p, top_k, min_p, seed), procs,
                              max_tokens, prefill_chunk)
    else:
        rng = np.random.default_rng(seed) if temp > 0 else None
        steps = speculative_step(engine, new_tokens, draft, make_distribution(temp, top_p, top_k, min_p), rng,
                                 procs, max_tokens, prefill_chunk, draft_tokens, stats)
    detok, stops = StreamingDetokenizer(tokenizer), _StopFilter(stop or [])
    t0 = time.perf_counter()
    prompt_tps, t_first, n, held = 0.0, t0, 0, engine.state.pos  # held: prompt tokens already in the state

    def result(text, token, reason):
        gen_tps = (n - 1) / (time.perf_counter() - t_first) if n > 1 else 0.0
        return GenerationResponse(text, token, reason, held + len(new_tokens), n, prompt_tps, gen_tps, h,
                                  len(new_tokens), stats)

    h = None
    with contextlib.closing(steps):  # a speculative generator rolls back what the caller did not take
        for token, logits in steps:
            h = entropy(logits) if with_entropy else None
            if n == 0:
                t_first = time.perf_counter()
                prompt_tps = len(new_tokens) / (t_first - t0)
                if on_prefill:
                    on_prefill()
            n += 1
            if token in tokenizer.eos_token_ids:
                yield result(stops.push(detok.flush())[0] + stops.flush(), token, "stop")
                return
            text, stopped = stops.push(detok.add(token))
            if stopped:
                yield result(text, token, "stop")
                return
            if n == max_tokens:
                yield result(text + stops.push(detok.flush())[0] + stops.flush(), token, "length")
                return
            yield result(text, token, None)


def stream_generate(engine: Engine, tokenizer: Tokenizer, prompt: str | list[int], **kwargs
                    ) -> Iterator[GenerationResponse]:
    """Continue raw text (or token ids) from an empty state."""
    tokens = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    engine.reset()
    yield from stream_tokens(engine, tokenizer, tokens, **kwargs)


def generate(engine: Engine, tokenizer: Tokenizer, prompt: str | list[int], **kwargs) -> str:
    """The whole continuation as one string."""
    return "".join(r.text for r in stream_generate(engine, tokenizer, prompt, **kwargs))
