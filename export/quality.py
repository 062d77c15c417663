"""The README's quality table: each recipe of the default model vs its exact weights (the fp32 export of
the same GGUF), measured as `edgecpm eval` does (llama-perplexity chunking, ctx 512, second half scored).

Usage (repo root): .venv/bin/python export/quality.py [--path prefill|decode] [--only 'NAME;...']
Text: tests/data/eval_text.txt + export/quality_text.txt (both written for edgecpm; 3,162 tokens -> 6
chunks -> 1,530 scored positions). The reference's logits are computed once and reused.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgecpm.export import export
from edgecpm.runtime import load
from edgecpm.runtime.evaluate import Totals, chunk_logits, chunks

ROOT = Path(__file__).parent.parent
TEXTS = [ROOT / "tests" / "data" / "eval_text.txt", ROOT / "export" / "quality_text.txt"]
RECIPES = {
    "carry-over (default for GGUF)": {},
    "int8 (fp16 head/embeddings)": dict(q_bits=8),
    "int4 g32 RTN (old default)": dict(q_bits=4, q_method="rtn"),
    "int4 g32 search, no calibration": dict(q_bits=4, q_symmetric=True, calibration="none"),
    "int4 g32 search + calibration": dict(q_bits=4, q_symmetric=True, q_method="search"),
    "int4 g32 min, search + calibration (default from float)": dict(q_bits=4, q_method="search"),
    "int4 g64 RTN": dict(q_bits=4, q_group_size=64, q_method="rtn"),
    "int4 g64 search + calibration": dict(q_bits=4, q_group_size=64, q_symmetric=True, q_method="search", q_mix="none"),
    "int4 g64 min, no calibration": dict(q_bits=4, q_group_size=64, calibration="none", q_mix="none"),
    "int4 g64 min, search + calibration": dict(q_bits=4, q_group_size=64, q_method="search", q_mix="none"),
    "int4 g32 min, gptq + calibration": dict(q_bits=4, q_method="gptq"),
    "int4 g64 min, gptq + calibration": dict(q_bits=4, q_group_size=64, q_method="gptq", q_mix="none"),
    "int4 g64 min, gptq + calibration, Q4_K_M layer mix (default at g64)": dict(q_bits=4, q_group_size=64),
    "int4 g64 symmetric gptq + calibration": dict(q_bits=4, q_group_size=64, q_symmetric=True, q_method="gptq",
                                                  q_mix="none"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", choices=["prefill", "decode"], default="prefill")
    ap.add_argument("--only", default="", help="recipe names separated by ';' (names hold commas)")
    a = ap.parse_args()
    text = "\n\n".join(p.read_text() for p in TEXTS)
    with tempfile.TemporaryDirectory() as tmp:
        ref, tok = load(export(None, f"{tmp}/fp32", q_bits=32, quiet=True), context=512)
        parts = chunks(tok.encode(text, add_bos=False), 512)
        refs = [chunk_logits(ref, c, a.path) for c in parts]
        print(f"{len(parts)} chunks, {a.path} path; vs the fp32 export", flush=True)
        for i, (name, kw) in enumerate(RECIPES.items()):
            if a.only and name not in a.only.split(";"):
                continue
            t0 = time.perf_counter()
            art = export(None, f"{tmp}/r{i}", quiet=True, **kw)
            secs = time.perf_counter() - t0
            engine, _ = load(art, context=512)
            t = Totals()
            for c, r in zip(parts, refs):
                t.add(r, chunk_logits(engine, c, a.path), c[257:])
            res, m = t.result(), json.loads((art / "edgecpm.json").read_text())
            print(f"| {name} | {m['weights_bytes'] / 2**20:.1f} MiB | {res['kl_mean']:.4f} | {100 * res['top1']:.1f} % "
                  f"| {res['ppl']:.2f} | {res['ref_ppl']:.2f} | {res['positions']} | export {secs:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
