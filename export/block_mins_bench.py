"""Decode speed of the carried-over GGUF (blocks with a min) against the old RTN g32 artifact, on the
default model: one process, rounds interleaved, medians.

Usage (repo root): .venv/bin/python export/block_mins_bench.py [--rounds 5] [--tokens 64] [--threads 2]
Exports both artifacts of the embedded GGUF into a temporary folder (or uses --carry / --rtn), then times
    rtn          --q-bits 4 --q-group-size 32 --q-method rtn (the old default)
    native       the carry-over (default) with libedgecpm_ops' AddBlockMins kernel (runtime/build or
                 EDGECPM_NATIVE_OPS)
    function     the carry-over with AddBlockMins' function body inlined (the 4 nodes every
                 onnxruntime runs: what artifacts before the op ran)
Prints tok/s per round (order rotated each round), medians, ratios to rtn (of the medians, and the
median of per-round ratios, steadier on a shared box), the nodes each session runs, and `uptime`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _export(out: Path, *args: str) -> Path:
    cmd = [sys.executable, "-m", "edgecpm", "export", "-o", str(out), "--force", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def _decode_tps(engine, tokens: int, rng) -> float:
    engine.reset()
    engine.prefill(rng.integers(0, engine.vocab_size, 8).tolist())
    tok = [int(rng.integers(0, engine.vocab_size))]
    t0 = time.perf_counter()
    for _ in range(tokens):
        engine.step(tok)
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    from edgecpm.ops import kernels
    from edgecpm.runtime import Engine

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--carry", type=Path, help="an existing carry-over artifact of the default GGUF")
    ap.add_argument("--rtn", type=Path, help="an existing RTN g32 artifact of it")
    a = ap.parse_args()
    if not (os.environ.get(kernels.NATIVE_ENV) or kernels.built_library()):
        sys.exit("no libedgecpm_ops: run `make native` or set EDGECPM_NATIVE_OPS")
    with tempfile.TemporaryDirectory() as tmp:
        carry = a.carry or _export(Path(tmp, "carry"))
        rtn = a.rtn or _export(Path(tmp, "rtn"), "--q-bits", "4", "--q-group-size", "32", "--q-method", "rtn")
        log = lambda m: None  # noqa: E731
        engines = {"rtn": Engine(rtn, 256, threads=a.threads, log=log, report_placement=True),
                   "native": Engine(carry, 256, threads=a.threads, log=log, recurrent_kernel="native",
                                    report_placement=True),
                   "function": Engine(carry, 256, threads=a.threads, log=log, recurrent_kernel="function",
                                      report_placement=True)}
        rng = np.random.default_rng(0)
        rates = {k: [] for k in engines}
        for e in engines.values():
            _decode_tps(e, 8, rng)  # warm-up
        names = list(engines)
        for r in range(a.rounds):
            for k in names[r % 3:] + names[: r % 3]:  # rotated: no variant always runs first
                rates[k].append(_decode_tps(engines[k], a.tokens, rng))
            print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
        med = {k: statistics.median(v) for k, v in rates.items()}
        for k, e in engines.items():
            paired = statistics.median(x / y for x, y in zip(rates[k], rates["rtn"]))  # same round: same load
            print(f"{k:9s} median {med[k]:6.1f} tok/s ({min(rates[k]):.1f}-{max(rates[k]):.1f}), "
                  f"x{med[k] / med['rtn']:.3f} of rtn (median of per-round ratios x{paired:.3f}), "
                  f"nodes {e.placement}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
