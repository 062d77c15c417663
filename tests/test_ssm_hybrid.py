"""Mamba2 hybrids (Granite-4.0-H, Falcon-H1, Nemotron-H) and Qwen3-Next through the ai.edgecpm ops and
the routed MoE, against transformers' own classes: the checks every hybrid passes (tests/test_hybrid.py)."""

import contextlib
import io

import numpy as np
import pytest
import ssm_models
from conftest import HYBRID, torch_logits, write_tokenizer
from native import OPS_LIB, need_native
from test_hybrid import _ids, _run, check_chat_reuse, check_snapshot_branches

from edgecpm.runtime import Engine

KINDS = list(ssm_models.KINDS)


@pytest.fixture(scope="session")
def ssm(tmp_path_factory):
    """ssm(kind, bits) -> (artifact folder, reference torch model); cached per session."""
    from edgecpm.export import export

    cache: dict = {}

    def get(kind: str, bits: int = 32):
        if kind not in cache:
            folder = tmp_path_factory.mktemp(f"hf-{kind}")
            cache[kind] = (folder, ssm_models.make(kind, folder))
        folder, model = cache[kind]
        if (kind, bits) not in cache:
            out = tmp_path_factory.mktemp("art") / f"{kind}-q{bits}"
            cache[(kind, bits)] = export(str(folder), str(out), q_bits=bits, quiet=True)
        return cache[(kind, bits)], model

    return get


# falcon_h1_norm: with the gated RMSNorm; granitemoehybrid_dense: no experts, rotary attention
@pytest.mark.parametrize("kind", KINDS + ["falcon_h1_norm", "granitemoehybrid_dense"])
def test_fp32_prefill_and_decode_match_transformers(ssm, kind):
    art, model = ssm(kind, 32)
    ids = _ids(1, 42)
    ref = torch_logits(model, ids)  # [42, vocab]
    e = Engine(art, recurrent_kernel="ort")  # the native kernels: the native test below
    assert e.kernel.kind == "ort"
    assert np.abs(e.step(ids[:37], logits_at=list(range(37))) - ref[:37]).max() <= 1e-4  # 37-token prefill
    for i in range(37, 42):  # 5 decode steps
        assert np.abs(e.step(ids[i : i + 1])[0] - ref[i]).max() <= 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_whole_chunked_and_token_by_token_agree_for_every_kernel(ssm, kind):
    art, _ = ssm(kind, 32)
    ids = _ids(2, 37)
    base_logits, base_state = _run(Engine(art, recurrent_kernel="ort"), ids, 37)
    assert {k.split(".")[-1] for k in base_state} >= {"conv", "recurrent"}
    for kernel in ("ort", "function"):
        e = Engine(art, recurrent_kernel=kernel)
        for chunk in (37, 8, 1):
            logits, state = _run(e, ids, chunk)
            np.testing.assert_allclose(logits, base_logits, atol=1e-5, err_msg=f"{kernel} chunk {chunk}")
            for name, v in state.items():
                np.testing.assert_allclose(v, base_state[name], atol=1e-5, err_msg=f"{kernel} {chunk} {name}")


@pytest.mark.parametrize("kind", KINDS)
def test_int4_top1_agreement(ssm, kind):
    art, model = ssm(kind, 4)
    e = Engine(art)
    agree, margins = [], []
    for seed in range(6):
        ids = _ids(10 + seed, 40)
        e.reset()
        ref = torch_logits(model, ids)
        agree.append(e.step(ids, logits_at=list(range(40))).argmax(-1) == ref.argmax(-1))
        top2 = np.sort(ref, axis=-1)[:, -2:]
        margins.append(top2[:, 1] - top2[:, 0])
    assert np.median(margins) > 0.2  # the reference's argmax is not a near-tie
    assert np.mean(agree) >= 0.90


@pytest.mark.parametrize("kind", KINDS)
def test_chat_carries_state_and_equals_fresh_run(ssm, kind):
    check_chat_reuse(ssm(kind, 32)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_branches_equal_fresh_runs(ssm, kind):
    check_snapshot_branches(ssm(kind, 32)[0])


def _info(art) -> str:
    from edgecpm.app.commands import info

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        info(str(art), context=4096)
    return buf.getvalue()


def test_info_state_bytes_for_a_falcon_h1_0_5b_state_shape(tmp_path):
    """Falcon-H1-0.5B's state dims as its config gives them (36 hybrid layers, mamba_d_ssm 1536 = 24 heads
    x 64, d_state 128, 1 group, conv 4; attention 2 KV heads of 64) on a tiny hidden size: Mamba2's state
    is [24, 128, 64] per layer (27 MiB in all), its conv carry (1536 + 2 x 128) x 3, KV 36 KiB per token."""
    import torch
    import transformers as tf

    cfg = tf.FalconH1Config(**{**HYBRID, "num_hidden_layers": 36, "num_attention_heads": 8, "head_dim": 64,
                               "intermediate_size": 32}, mamba_d_ssm=1536, mamba_n_heads=24, mamba_d_head=64,
                            mamba_d_state=128, mamba_n_groups=1, mamba_d_conv=4)
    torch.manual_seed(0)
    tf.FalconH1ForCausalLM(cfg).save_pretrained(tmp_path / "hf")
    write_tokenizer(tmp_path / "hf")
    from edgecpm.export import export

    text = _info(export(str(tmp_path / "hf"), str(tmp_path / "art"), q_bits=32, quiet=True))
    assert "recurrent 27.00 MiB (36 layers) + conv 0.74 MiB (36 layers)" in text  # 36 x 24 x 128 x 64 x 4 B
    assert "36.0 KiB per context token (KV of 36 attention layers)" in text  # 36 x 2 x 2 heads x 64 x 4 B


@pytest.mark.parametrize("kind", KINDS)
def test_info_shows_the_state_of_each_family(ssm, kind):
    art, _ = ssm(kind, 32)
    text = _info(art)
    spec = {"granitemoehybrid": (3, 1), "falcon_h1": (4, 4), "nemotron_h": (2, 1), "qwen3_next": (3, 1)}[kind]
    assert f"({spec[0]} layers) + conv" in text and f"(KV of {spec[1]} attention layers)" in text


def test_nemotron_moe_blocks_are_a_one_line_refusal():
    from edgecpm.contract import UserError
    from edgecpm.export.models import nemotron_h

    cfg = {**HYBRID, "model_type": "nemotron_h", "layers_block_type": ["linear_attention", "moe"]}
    with pytest.raises(UserError, match="squared-ReLU experts") as e:
        nemotron_h.model_args(cfg)
    assert "\n" not in str(e.value)


@need_native
@pytest.mark.parametrize("kind", KINDS)
def test_native_kernels_match_transformers(ssm, kind, monkeypatch):
    monkeypatch.setenv("EDGECPM_NATIVE_OPS", str(OPS_LIB))
    art, model = ssm(kind, 32)
    ids = _ids(1, 42)
    ref = torch_logits(model, ids)
    e = Engine(art, recurrent_kernel="native")
    assert np.abs(e.step(ids[:37], logits_at=list(range(37))) - ref[:37]).max() <= 1e-4
    for i in range(37, 42):
        assert np.abs(e.step(ids[i : i + 1])[0] - ref[i]).max() <= 1e-4
