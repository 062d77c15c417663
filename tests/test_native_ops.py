"""libedgecpm_ops (runtime/kernels): the native ai.edgecpm kernels == numpy reference == onnxruntime's
com.microsoft kernels, on the cases tests/test_ops.py uses, plus longer sequences that cross the chunked
prefill's chunk boundary; and the Python runtime with --recurrent-kernel native on the hybrid models."""

import numpy as np
import onnxruntime as ort
import pytest
from native import OPS_LIB, need_native
from test_ops import CASES, _model, _run, conv_case

from edgecpm.ops import reference

pytestmark = need_native


def _native(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.register_custom_ops_library(str(OPS_LIB))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _la_inputs(rule, hq, hkv, per_key, T, dk=4, dv=3, seed=0, past=True):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, T, hq * dk)).astype(np.float32)
    k = rng.standard_normal((1, T, hkv, dk)).astype(np.float32)
    k = (k / np.linalg.norm(k, axis=-1, keepdims=True)).reshape(1, T, hkv * dk)
    v = rng.standard_normal((1, T, hkv * dv)).astype(np.float32)
    s = rng.standard_normal((1, hkv, dk, dv)).astype(np.float32) if past else None
    g = -rng.random((1, T, hkv * (dk if per_key else 1))).astype(np.float32) if "gated" in rule else None
    b = rng.random((1, T, hkv)).astype(np.float32) if "delta" in rule else None
    names = ["q", "k", "v", "s" if s is not None else "", "g" if g is not None else "", "b" if b is not None else ""]
    arrays = [q, k, v, s, g, b]
    while names[-1] == "":
        names.pop(), arrays.pop()
    return names, arrays


@pytest.mark.parametrize("T", [1, 7, 130])  # 130: three chunks of the chunked prefill
@pytest.mark.parametrize("rule,hq,hkv,per_key", CASES + [("gated_delta", 2, 2, True), ("linear", 4, 2, False)])
def test_native_linear_attention_equals_reference_and_ort(rule, hq, hkv, per_key, T):
    names, arrays = _la_inputs(rule, hq, hkv, per_key, T)
    attrs = dict(q_num_heads=hq, kv_num_heads=hkv, update_rule=rule)
    feeds = {n: a for n, a in zip(names, arrays) if a is not None}
    want = reference.linear_attention(*arrays, *([None] * (6 - len(arrays))), **attrs)
    model = _model("LinearAttention", names, arrays, attrs)
    got = _native(model, feeds)
    ms = _run(model, feeds, "ort")
    for w, x, m in zip(want, got, ms):
        np.testing.assert_allclose(x, w, atol=1e-5, rtol=1e-5, err_msg="native vs reference")
        np.testing.assert_allclose(x, m, atol=1e-5, rtol=1e-5, err_msg="native vs com.microsoft")


def test_native_linear_attention_without_past_state():
    names, arrays = _la_inputs("gated_delta", 2, 2, False, 9, past=False)
    attrs = dict(q_num_heads=2, kv_num_heads=2, update_rule="gated_delta")
    feeds = {n: a for n, a in zip(names, arrays) if a is not None}
    want = reference.linear_attention(*arrays, **attrs)
    for w, x in zip(want, _native(_model("LinearAttention", names, arrays, attrs), feeds)):
        np.testing.assert_allclose(x, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T", [1, 6, 100])
@pytest.mark.parametrize("activation,bias", [("silu", False), ("none", True)])
def test_native_causal_conv_equals_reference_and_ort(T, activation, bias):
    _, _, feeds, want, model = conv_case(T, activation, bias)
    for wnt, got, ms in zip(want, _native(model, feeds), _run(model, feeds, "ort")):
        np.testing.assert_allclose(got, wnt, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got, ms, atol=1e-5, rtol=1e-5)


# --- the Python runtime with --recurrent-kernel native (EDGECPM_NATIVE_OPS) on the hybrid models ------------

HYBRIDS = ["qwen3_5", "lfm2", "minimax", "minimax1"]


@pytest.fixture
def native_env(monkeypatch):
    monkeypatch.setenv("EDGECPM_NATIVE_OPS", str(OPS_LIB))


@pytest.mark.parametrize("kind", HYBRIDS)
def test_python_runtime_with_native_kernels_matches_transformers(tiny, kind, native_env):
    from conftest import torch_logits
    from test_hybrid import _ids

    from edgecpm.runtime import Engine

    art, model = tiny(kind, 32)
    ids = _ids(1, 42)
    ref = torch_logits(model, ids)
    e = Engine(art, recurrent_kernel="native")
    assert e.kernel.kind == "native"
    assert np.abs(e.step(ids[:37], logits_at=list(range(37))) - ref[:37]).max() <= 1e-4
    for i in range(37, 42):
        assert np.abs(e.step(ids[i : i + 1])[0] - ref[i]).max() <= 1e-4


@pytest.mark.parametrize("kind", ["qwen3_5", "lfm2", "minimax"])
def test_python_runtime_native_equals_ort_whole_chunked_and_token_by_token(tiny, kind, native_env):
    from test_hybrid import _ids
    from test_hybrid import _run as run_chunks

    from edgecpm.runtime import Engine

    art, _ = tiny(kind, 32)
    ids = _ids(2, 37)
    base_logits, base_state = run_chunks(Engine(art, recurrent_kernel="ort"), ids, 37)
    e = Engine(art, recurrent_kernel="native")
    for chunk in (37, 8, 1):
        logits, state = run_chunks(e, ids, chunk)
        np.testing.assert_allclose(logits, base_logits, atol=1e-5, err_msg=f"native chunk {chunk}")
        for name, v in state.items():
            np.testing.assert_allclose(v, base_state[name], atol=1e-5, err_msg=f"native {chunk} {name}")


def test_python_chat_and_snapshots_with_native_kernels(tiny, native_env):
    from test_hybrid import (
        test_chat_over_hybrid_carries_state_and_equals_fresh_run,
        test_snapshot_branches_equal_fresh_runs,
    )

    test_chat_over_hybrid_carries_state_and_equals_fresh_run(tiny)  # auto picks native when EDGECPM_NATIVE_OPS is set
    test_snapshot_branches_equal_fresh_runs(tiny)
