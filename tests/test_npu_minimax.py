"""MiniMax-01's NPU graphs in fp32 (unquantized), on onnxruntime's CPU, on the tiny 2-expert MiniMax:
the prefill graph's chunked Lightning form against the decode graph (one recurrence step) fed the same
tokens one at a time, a mutant with the decay dropped from the chunked form only (it must fail the same
comparison), and the decode graph's logits (dense routed MoE, scaled residuals) against the fp32 CPU
artifact's. The quantized graphs on the QNN simulator: tests/test_npu.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import VOCAB
from test_npu_chunked import _replay, worst_mismatch

from edgecpm.contract import LOGITS, load_manifest
from edgecpm.export.npu import chunked, lightning

CHUNK = 8
TOLERANCE = 1e-4  # relative to each tensor's largest value; measured ~1e-7 (fp32 rounding)


@pytest.fixture(scope="module")
def hf(tiny):
    """The tiny MiniMax checkpoint (2 experts, top-1; 3 Lightning layers, 1 softmax attention)."""
    fp32, _ = tiny("minimax", 32)
    return load_manifest(fp32).source["path"], fp32


def _ids(n: int) -> list[int]:
    return np.random.default_rng(4).integers(3, VOCAB, n).tolist()


def _mismatch(source, folder) -> dict[str, float]:
    """Per output (logits, each state after each of two chunks): max |chunked - recurrent| / max |recurrent|."""
    prefill, decode = _replay(source, CHUNK, folder / "prefill"), _replay(source, 1, folder / "decode")
    assert {s.kind for s in prefill.specs} == {"kv", "recurrent"}
    return worst_mismatch(prefill, decode, _ids(2 * CHUNK), CHUNK)


def _decode_error(source, ids: list[int], ref: np.ndarray, folder) -> float:
    """The decode graph fed `ids` one at a time: max |logits - ref| / max |ref| (ref [len(ids), vocab])."""
    decode = _replay(source, 1, folder)
    got = []
    for t in ids:
        decode.step([t])
        got.append(decode.outputs[LOGITS][0, 0])
    err = float(np.abs(np.stack(got) - ref).max() / np.abs(ref).max())
    print(f"max relative |dlogit| {err:.1e}")
    return err


@pytest.mark.parametrize("sub_chunk", [64, 3])  # one chunk; sub-chunks of 3, 3, 2 with the state carried
def test_chunked_lightning_prefill_equals_the_recurrence_token_by_token(hf, tmp_path, monkeypatch, sub_chunk):
    monkeypatch.setattr(chunked, "SUB_CHUNK", sub_chunk)
    worst = _mismatch(hf[0], tmp_path)
    print({k: f"{v:.1e}" for k, v in worst.items()})
    assert max(worst.values()) < TOLERANCE, worst


def test_the_comparison_fails_when_the_decay_is_dropped(hf, tmp_path, monkeypatch):
    """The chunked form's decay tables with slope 0 (lam = 1: no forgetting); decode keeps its decay."""
    original = lightning.chunk_decays
    monkeypatch.setattr(lightning, "chunk_decays", lambda slopes, n: original(np.zeros_like(slopes), n))
    worst = _mismatch(hf[0], tmp_path)
    print({k: f"{v:.1e}" for k, v in worst.items()})
    recurrent = max(v for k, v in worst.items() if k.endswith(".recurrent"))
    assert worst[LOGITS] > 10 * TOLERANCE and recurrent > 100 * TOLERANCE


def test_fp32_decode_graph_equals_the_cpu_artifact(hf, tmp_path):
    """The NPU graph's math (Lightning, softmax attention, dense top-k MoE, scaled residuals) in fp32 is
    the CPU artifact's (its LinearAttention and routed MoE contrib ops) over 24 tokens."""
    from edgecpm.runtime import Engine

    ids = _ids(24)
    ref = Engine(hf[1]).step(ids, logits_at=list(range(len(ids))))  # [24, vocab]
    assert _decode_error(hf[0], ids, ref, tmp_path / "decode") < TOLERANCE


def test_the_graphs_use_only_plain_ops(hf, tmp_path):
    """No Loop/Scan/CumSum/Trilu/contrib op; the decay is constant (no Exp in the Lightning layers)."""
    import onnx

    _replay(hf[0], CHUNK, tmp_path / "prefill")
    graph = onnx.load(str(tmp_path / "prefill" / "model.onnx"), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Loop", "Scan", "CumSum", "Trilu", "If", "Exp", "MoE", "QMoE", "LinearAttention"}
    assert all(n.domain in ("", "ai.onnx") for n in graph.node) and "MatMul" in ops


def test_fp32_decode_graph_with_top2_of_4_experts_equals_transformers(tmp_path):
    """The TopK routing with k > 1 (renormalised top-2 of 4 experts) against transformers' own MiniMax."""
    import torch
    import transformers as tf
    from conftest import HYBRID, boost, write_tokenizer

    torch.manual_seed(1)
    cfg = tf.MiniMaxConfig(**HYBRID, layer_types=["linear_attention"] * 3 + ["full_attention"], num_local_experts=4,
                           num_experts_per_tok=2, tie_word_embeddings=False)
    model = tf.MiniMaxForCausalLM(cfg).float().eval()
    boost(model)
    model.save_pretrained(tmp_path / "hf")
    write_tokenizer(tmp_path / "hf")
    ids = _ids(12)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()  # [12, vocab]
    assert _decode_error(tmp_path / "hf", ids, ref, tmp_path / "decode") < TOLERANCE
