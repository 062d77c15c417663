"""Quantization quality of the default model: top-1 agreement and KL(fp32 || recipe) per position.

Usage (repo root, after `make test`): .venv/bin/python export/quality.py
Exports SmolLM2-135M-Instruct (the embedded GGUF) with each recipe into a temp folder and compares its
logits with the fp32 export's on one fixed English text.
"""

import tempfile

import numpy as np

from edgecpm.export import export
from edgecpm.runtime import load

TEXT = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the "
        "capital of Germany. Water boils at one hundred degrees Celsius at sea level.")
RECIPES = {
    "int8 (fp16 head/embeddings)": dict(q_bits=8),
    "int8 (8-bit head/embeddings)": dict(q_bits=8, lm_head_bits=8, embed_bits=8),
    "int4 g32 sym": dict(q_bits=4),
    "int4 g32 asym": dict(q_bits=4, q_symmetric=False),
    "int4 g64": dict(q_bits=4, q_group_size=64),
    "int4 g128": dict(q_bits=4, q_group_size=128),
}


def logits(folder: str) -> np.ndarray:
    engine, tok = load(folder)
    ids = tok.encode(TEXT)
    return engine.step(ids, logits_at=list(range(len(ids))))  # [S, vocab]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ref = logits(str(export(None, f"{tmp}/fp32", q_bits=32, quiet=True)))
        lp = log_softmax(ref)
        print(f"{len(ref)} positions; vs the fp32 export")
        for name, kw in RECIPES.items():
            out = logits(str(export(None, f"{tmp}/{len(name)}{kw}", quiet=True, **kw)))
            top1 = float(np.mean(out.argmax(-1) == ref.argmax(-1)))
            kl = float(np.mean((np.exp(lp) * (lp - log_softmax(out))).sum(-1)))
            print(f"{name:30s} top-1 {top1:.2f}  KL {kl:.3f}")


if __name__ == "__main__":
    main()
