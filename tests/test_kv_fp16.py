"""fp16 KV cache (`edgecpm export --kv-dtype float16`, issue 13 goal 3): half the bytes per token, the
attention run in fp16, and logits within the quality issue's KL budget of the fp32-KV artifact."""

from pathlib import Path

import numpy as np
import pytest

from edgecpm.export import export
from edgecpm.runtime import load
from edgecpm.runtime.evaluate import Totals, chunk_logits, chunks

TEXT = Path(__file__).parent / "data" / "eval_text.txt"


def kv_specs(engine):
    return [(s, a) for s, a, _ in engine.state.kv]


@pytest.mark.parametrize("kind", ["llama", "qwen3_5_text"])
def test_fp16_kv_state_and_decode_parity(tiny, kind):
    ref, _ = tiny(kind, 32)
    half, _ = tiny(kind, 32, kv_dtype="float16")
    a, _ = load(ref, context=64)
    b, _ = load(half, context=64)
    assert kv_specs(b) and all(s.dtype == "float16" and buf.dtype == np.float16 for s, buf in kv_specs(b))
    assert sum(buf.nbytes for _, buf in kv_specs(b)) * 2 == sum(buf.nbytes for _, buf in kv_specs(a))
    ids = list(np.random.default_rng(1).integers(3, 200, 40))
    la, lb = chunk_logits(a, ids, "decode"), chunk_logits(b, ids, "decode")  # [19, V] decode steps read the cache
    t = Totals()
    t.add(la.astype(np.float64), lb.astype(np.float64), np.asarray(ids[21:]))
    res = t.result()
    assert res["kl_mean"] < 1e-3 and res["top1"] >= 0.95, res
    assert np.abs(la - lb).max() > 0  # the fp16 path really ran


def test_fp16_kv_on_the_default_model_within_the_kl_budget(carried_default, tmp_path):
    """KL(fp32 KV || fp16 KV) on the default model's carried-over blocks, decode path (every step reads
    the cache): within the carry-over budget of 0.005 (measured ~1e-4)."""
    half = export(None, str(tmp_path / "kv16"), kv_dtype="float16", quiet=True)
    a, tok = load(carried_default, context=512)
    b, _ = load(half, context=512)
    part = chunks(tok.encode(TEXT.read_text(), add_bos=False), 512)[0][:192]  # 95 decode steps
    t = Totals()
    t.add(chunk_logits(a, part).astype(np.float64), chunk_logits(b, part).astype(np.float64), np.asarray(part[97:]))
    res = t.result()
    assert res["kl_mean"] <= 0.005 and res["top1"] >= 0.95, res
