"""Tiny random Llama / Qwen3 / MiniCPM: exported logits vs transformers (the ground truth)."""

import numpy as np
import pytest
from conftest import VOCAB, torch_logits

from edgecpm.runtime import Engine

KINDS = ["llama", "qwen3", "minicpm"]


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_prefill_and_decode_match_transformers(tiny, kind):
    art, model = tiny(kind, 32)
    ids = np.random.default_rng(1).integers(0, VOCAB, 25)
    ref = torch_logits(model, ids)  # [25, vocab]
    e = Engine(art)
    out = e.step(ids[:20], logits_at=list(range(20)))  # 20-token prefill
    assert np.abs(out - ref[:20]).max() <= 1e-4
    for i in range(20, 25):  # 5 single-token steps
        assert np.abs(e.step(ids[i : i + 1])[0] - ref[i]).max() <= 1e-4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits,need", [(8, 0.99), (4, 0.90)])
def test_quantized_top1_agreement(tiny, kind, bits, need):
    art, model = tiny(kind, bits)
    e = Engine(art)
    agree = []
    for ids in np.random.default_rng(2).integers(0, VOCAB, (10, 24)):  # 240 positions, short random contexts
        e.reset()
        agree.append(e.step(ids, logits_at=list(range(24))).argmax(-1) == torch_logits(model, ids).argmax(-1))
    assert np.mean(agree) >= need


def test_chunked_prefill_equals_whole(tiny):
    art, _ = tiny("qwen3", 32)
    ids = np.random.default_rng(3).integers(0, VOCAB, 37).tolist()
    e = Engine(art)
    whole = e.prefill(ids, chunk=64)
    kv_whole = {k: v.copy() for k, v in e.state.arrays().items()}
    e.reset()
    chunked = e.prefill(ids, chunk=8)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    for k, v in e.state.arrays().items():
        np.testing.assert_allclose(v, kv_whole[k], atol=1e-5)


def test_manifest_describes_the_artifact(tiny):
    from edgecpm.contract import load_manifest

    art, _ = tiny("llama", 4)
    m = load_manifest(art)
    assert m.architecture == "llama" and m.quantization.bits == 4 and m.quantization.lm_head_bits == 8
    assert [s.kind for s in m.state] == ["kv"] * 4 and m.state[0].shape == (1, 2, "ctx", 16)
    assert {"model.onnx", "model.onnx.data", "tokenizer.json"} <= set(m.files)
    assert m.source["kind"] == "hf" and len(m.source["sha256"]) == 64


def test_greedy_equals_transformers_generate_on_tiny_llama(tiny):
    import torch

    from edgecpm.runtime import Tokenizer, stream_generate

    art, model = tiny("llama", 32)
    e = Engine(art)
    tok = Tokenizer(e.folder, e.manifest)
    ids = np.random.default_rng(4).integers(3, VOCAB, 12).tolist()
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False, pad_token_id=0)[0, 12:].tolist()
    ours = [r.token for r in stream_generate(e, tok, ids, max_tokens=32)]
    assert ours == ref and len(ref) >= 8
