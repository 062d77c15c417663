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


def bench(artifact=None, prompt_lengths=(128, 512), decode_tokens=64, depth=0, runs=3, context=None, threads=None,
          provider=(), prefill_chunk=512, recurrent_kernel="auto", as_json=False) -> dict:
    """Run the benchmark and print a table (or JSON)."""
    need = max(max(prompt_lengths), depth + decode_tokens + 1)
    ctx = context or max(need, 4096 if depth < 4096 else need)
    engine, _ = load(resolve_artifact(artifact), ctx, list(provider) or None, threads,
                     recurrent_kernel=recurrent_kernel, report_placement=True)
    res = measure(engine, prompt_lengths, decode_tokens, depth, runs, prefill_chunk)
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
    Console().print(table)
    return res
