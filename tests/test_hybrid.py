"""Hybrid models (Qwen3.5 Gated DeltaNet, LFM2 short conv, MiniMax Lightning + MoE) through the
ai.edgecpm recurrent-state ops, against transformers' own classes."""

import numpy as np
import pytest
from conftest import VOCAB, torch_logits

from edgecpm.runtime import ChatSession, Engine, Tokenizer, stream_generate

KINDS = ["qwen3_5", "lfm2", "minimax", "minimax1"]  # minimax: 2 experts; minimax1: 1 expert


def _ids(seed: int, n: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, VOCAB, n).tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_prefill_and_decode_match_transformers(tiny, kind):
    art, model = tiny(kind, 32)
    ids = _ids(1, 42)
    ref = torch_logits(model, ids)  # [42, vocab]
    e = Engine(art, recurrent_kernel="ort")  # the native kernels: tests/test_native_ops.py
    assert e.kernel.kind == "ort"
    assert np.abs(e.step(ids[:37], logits_at=list(range(37))) - ref[:37]).max() <= 1e-4  # 37-token prefill
    for i in range(37, 42):  # 5 decode steps
        assert np.abs(e.step(ids[i : i + 1])[0] - ref[i]).max() <= 1e-4


def _run(engine: Engine, ids: list[int], chunk: int) -> tuple[np.ndarray, dict]:
    """Logits at every position, fed `chunk` tokens per step; then the state tensors."""
    engine.reset()
    out = [engine.step(ids[i : i + chunk], logits_at=list(range(len(ids[i : i + chunk]))))
           for i in range(0, len(ids), chunk)]
    return np.concatenate(out), {k: v.copy() for k, v in engine.state.arrays().items()}


@pytest.mark.parametrize("kind", ["qwen3_5", "lfm2", "minimax"])
def test_whole_chunked_and_token_by_token_agree_for_every_kernel(tiny, kind):
    art, _ = tiny(kind, 32)
    ids = _ids(2, 37)
    base_logits, base_state = _run(Engine(art, recurrent_kernel="ort"), ids, 37)
    assert {k.split(".")[-1] for k in base_state} & {"conv", "recurrent"}  # fixed-size states are compared too
    for kernel in ("ort", "function"):
        e = Engine(art, recurrent_kernel=kernel)
        for chunk in (37, 8, 1):  # whole prefill, chunks of 8, token by token
            logits, state = _run(e, ids, chunk)
            np.testing.assert_allclose(logits, base_logits, atol=1e-5, err_msg=f"{kernel} chunk {chunk}")
            for name, v in state.items():
                np.testing.assert_allclose(v, base_state[name], atol=1e-5, err_msg=f"{kernel} {chunk} {name}")


@pytest.mark.parametrize("kind", KINDS)
def test_int4_top1_agreement(tiny, kind):
    art, model = tiny(kind, 4)
    e = Engine(art)
    agree = []
    for seed in range(6):
        ids = _ids(10 + seed, 40)
        e.reset()
        agree.append(e.step(ids, logits_at=list(range(40))).argmax(-1) == torch_logits(model, ids).argmax(-1))
    assert np.mean(agree) >= 0.90


def check_chat_reuse(art) -> None:
    """A second chat turn reuses the first turn's state and equals a fresh run over the conversation."""
    engine = Engine(art)
    tok = Tokenizer(engine.folder, engine.manifest)
    chat = ChatSession(engine, tok)
    chat.ask("Hello world", max_tokens=10)
    second = chat.ask("how are you today?", max_tokens=10)
    full = tok.encode_chat(chat.messages[:-1])
    assert chat.last_prefill < len(full)  # the first turn's state was carried over
    engine.reset()
    assert second == "".join(r.text for r in stream_generate(engine, tok, full, max_tokens=10))


def check_snapshot_branches(art) -> None:
    """Two branches from one snapshot equal fresh runs; the snapshot holds no KV."""
    e = Engine(art)
    prompt, a, b = _ids(3, 20), _ids(4, 6), _ids(5, 6)
    e.prefill(prompt)
    snap = e.state.snapshot()
    assert snap.nbytes == sum(s.nbytes(e.ctx) for s in e.manifest.state if not s.per_token)  # no KV copied
    branch_a = _run_from(e, a)
    e.state.restore(snap)
    branch_b = _run_from(e, b)
    for suffix, got in ((a, branch_a), (b, branch_b)):
        fresh, _ = _run(e, prompt + suffix, 64)
        np.testing.assert_allclose(got, fresh[len(prompt) :], atol=1e-5)


def test_chat_over_hybrid_carries_state_and_equals_fresh_run(tiny):
    check_chat_reuse(tiny("qwen3_5", 32)[0])


def test_snapshot_branches_equal_fresh_runs(tiny):
    check_snapshot_branches(tiny("minimax", 32)[0])


def _run_from(e: Engine, suffix: list[int]) -> np.ndarray:
    return np.stack([e.step([t])[0] for t in suffix])


def test_info_state_bytes_for_the_qwen3_5_2b_state_shape(tmp_path):
    """Qwen3.5-2B's state dims (18 GDN layers of 16 x 128 x 128, conv 6144 x 3; 6 attention layers with
    2 KV heads of 256) on a tiny hidden size: state bytes depend only on those."""
    import torch
    import transformers as tf
    from conftest import HYBRID, write_tokenizer

    from edgecpm.app.commands import info
    from edgecpm.export import export

    cfg = tf.Qwen3_5TextConfig(**{**HYBRID, "num_hidden_layers": 24, "num_attention_heads": 8, "head_dim": 256,
                                  "intermediate_size": 32}, linear_num_key_heads=16, linear_num_value_heads=16,
                               linear_key_head_dim=128, linear_value_head_dim=128, linear_conv_kernel_dim=4)
    torch.manual_seed(0)
    tf.Qwen3_5ForCausalLM(cfg).save_pretrained(tmp_path / "hf")
    write_tokenizer(tmp_path / "hf")
    art = export(str(tmp_path / "hf"), str(tmp_path / "art"), q_bits=32, quiet=True)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        info(str(art), context=4096)
    text = buf.getvalue()
    assert "recurrent 18.00 MiB (18 layers) + conv 1.27 MiB (18 layers)" in text  # ~19.3 MiB fixed in all
    assert "24.0 KiB per context token (KV of 6 attention layers)" in text  # 6 x 2 x 2 heads x 256 x 4 B


def test_unknown_layer_type_is_a_one_line_error(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import HYBRID

    folder = tmp_path / "odd"
    folder.mkdir()
    types = ["linear_attention", "mamba", "linear_attention", "full_attention"]
    cfg = {**HYBRID, "model_type": "qwen3_5_text", "layer_types": types, "linear_num_key_heads": 2}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "edgecpm", "export", str(folder), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "'mamba'" in r.stderr and "full_attention, linear_attention" in r.stderr
    assert not (tmp_path / "out").exists()
