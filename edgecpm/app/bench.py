"""`edgecpm bench`: prefill and decode speed, time to first token, peak RSS (medians of N runs)."""

from __future__ import annotations

import json
import resource
import statistics
import time

import numpy as np

from edgecpm.app.defaults import resolve_artifact
from edgecpm.runtime import load


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rss_mb() -> float:
    """This process's resident set now, in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def measure(engine, prefill=(128, 512), decode=64, depth=0, runs=3, chunk=512, seed=0) -> dict:
    """Medians over `runs`: prefill tok/s per length, decode tok/s after `depth` tokens, TTFT at the first
    length; resident memory after load, after the prefills and after the decode (`rss_mb`)."""
    rng = np.random.default_rng(seed)
    vocab = engine.vocab_size
    res = {"runs": runs, "context": engine.ctx, "provider": engine.providers[0], "rss_mb": {"load": rss_mb()}}
    engine.reset()
    engine.prefill(rng.integers(0, vocab, 16).tolist())  # warm-up
    for n in prefill:
        times = []
        for _ in range(runs):
            engine.reset()
            toks = rng.integers(0, vocab, n).tolist()
            times.append(_timed(lambda t=toks: engine.prefill(t, chunk)))
        res[f"prefill_{n}_tps"] = n / statistics.median(times)
        res.setdefault("ttft_ms", statistics.median(times) * 1e3)
    res["rss_mb"][f"prefill_{max(prefill)}"] = rss_mb()
    rates = []
    for _ in range(runs):
        engine.reset()
        engine.prefill(rng.integers(0, vocab, max(depth, 1)).tolist(), chunk)
        token = [int(rng.integers(0, vocab))]
        t = _timed(lambda tok=token: [engine.step(tok) for _ in range(decode)])
        rates.append(decode / t)
    res[f"decode_{decode}_tps"] = statistics.median(rates)
    res["decode_tps_spread"] = [min(rates), max(rates)]
    res["decode_depth"] = max(depth, 1)
    res["rss_mb"][f"decode_{decode}"] = rss_mb()
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


COPY_PROMPT = ("Fix the typos in this paragraph and write it out in full: Ths is a smple paragraf with sevral "
               "typos that need to be fixd. The quick brown fox jumpd over the lazzy dog, and then it ran awya "
               "into the forrest where nobody could fnd it agian.")


def measure_draft(engine, tokenizer, drafter, prompt: str = COPY_PROMPT, tokens: int = 128, runs: int = 3,
                  draft_tokens: int = 8) -> dict:
    """Greedy chat answers to `prompt` without and with `drafter`, interleaved `runs` times: decode
    tok/s of each (medians), the speedup, the acceptance rate and tokens per target step."""
    from edgecpm.runtime.generate import stream_tokens

    ids = tokenizer.encode_chat([{"role": "user", "content": prompt}])
    rates, texts, stats = {"plain": [], "draft": []}, {}, None
    for _ in range(runs):
        for mode in rates:
            engine.reset()
            kw = {"draft": drafter, "draft_tokens": draft_tokens} if mode == "draft" else {}
            out = list(stream_tokens(engine, tokenizer, ids, max_tokens=tokens, **kw))
            rates[mode].append(out[-1].generation_tps)
            texts[mode] = [r.token for r in out]
            stats = out[-1].draft or stats
    plain, draft = statistics.median(rates["plain"]), statistics.median(rates["draft"])
    return {"plain_decode_tps": plain, "draft_decode_tps": draft, "speedup": draft / plain,
            "acceptance": stats.acceptance, "tokens_per_step": stats.tokens_per_step,
            "drafted": stats.drafted, "accepted": stats.accepted, "same_tokens": texts["plain"] == texts["draft"],
            "tokens": len(texts["draft"]), "rss_mb": rss_mb()}


def bench(artifact=None, prompt_lengths=(128, 512), decode_tokens=64, depth=0, runs=3, context=None, threads=None,
          provider=(), prefill_chunk=512, recurrent_kernel="auto", as_json=False, draft=None, draft_model=None,
          draft_tokens=8, draft_prompt=None) -> dict:
    """Run the benchmark and print a table (or JSON). With a drafter, also a speculative-decoding
    phase (measure_draft) on `draft_prompt` (default: a copy-heavy typo fix)."""
    from edgecpm.app.drafting import make_drafter

    need = max(max(prompt_lengths), depth + decode_tokens + 1)
    ctx = context or max(need, 4096 if depth < 4096 else need)
    engine, tok = load(resolve_artifact(artifact), ctx, list(provider) or None, threads,
                       recurrent_kernel=recurrent_kernel, report_placement=True)
    drafter = make_drafter(draft, draft_model, engine, threads)
    res = measure(engine, prompt_lengths, decode_tokens, depth, runs, prefill_chunk)
    if drafter is not None:
        res["draft"] = measure_draft(engine, tok, drafter, draft_prompt or COPY_PROMPT, decode_tokens * 2, runs,
                                     draft_tokens)
        res["draft"]["drafter"] = draft or str(draft_model)
        res["rss_mb"]["draft"] = res["draft"].pop("rss_mb")
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["artifact"] = str(engine.folder)
    res["recurrent_kernel"] = engine.kernel.kind if engine.kernel else None
    res["nodes_per_provider"] = engine.placement
    if as_json:
        print(json.dumps(res, indent=2))
        return res
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"edgecpm bench: {engine.folder.name} ({res['provider']}, median of {runs})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for n in prompt_lengths:
        table.add_row(f"prefill {n} tok/s", f"{res[f'prefill_{n}_tps']:.1f}")
    dec = res[f"decode_{decode_tokens}_tps"]
    table.add_row(f"decode {decode_tokens} tok/s (at depth {res['decode_depth']})", f"{dec:.1f}")
    table.add_row(f"time to first token ({prompt_lengths[0]}-token prompt)", f"{res['ttft_ms']:.0f} ms")
    for phase, mb in res["rss_mb"].items():
        table.add_row(f"RSS after {phase.replace('_', ' ')}", f"{mb:.0f} MB")
    table.add_row("peak RSS", f"{res['peak_rss_mb']:.0f} MB")
    if "draft" in res:
        d = res["draft"]
        table.add_row(f"draft {d['drafter']}: decode tok/s plain -> drafted",
                      f"{d['plain_decode_tps']:.1f} -> {d['draft_decode_tps']:.1f} ({d['speedup']:.2f}x)")
        table.add_row("draft acceptance / tokens per step",
                      f"{(d['acceptance'] or 0) * 100:.0f} % / {d['tokens_per_step'] or 1:.2f}")
    Console().print(table)
    return res
