"""The ai.edgecpm recurrent-state ops: function body == onnxruntime's kernel == numpy reference ==
onnx.reference (opset 27), for every update rule, GQA both ways, per-head and per-key decay, T = 1 and T > 1."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgecpm.ops import kernels, reference
from edgecpm.ops.functions import function_body

F = TensorProto.FLOAT


def _model(op, names, arrays, attrs, n_out=2):
    """One ai.edgecpm node with its function body; inputs with T as a symbolic dim."""
    types = [None if a is None else helper.make_tensor_type_proto(F, list(a.shape)) for a in arrays]
    node = helper.make_node(op, names, ["out", "state"], domain="ai.edgecpm", **attrs)
    fn = function_body(node, types)
    ins = [helper.make_tensor_value_info(n, F, list(a.shape)) for n, a in zip(names, arrays) if a is not None]
    outs = [helper.make_tensor_value_info(n, F, None) for n in ("out", "state")]
    graph = helper.make_graph([node], "t", ins, outs)
    m = helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 21),
                                                                 helper.make_opsetid("ai.edgecpm", 1)])
    m.ir_version = 10
    return m


def _run(model: onnx.ModelProto, feeds: dict, kernel: str):
    data = model.SerializeToString()
    if kernel == "ort":
        data, moved = kernels.retarget(data)
        assert moved == 1
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _std(model, names, arrays, op, attrs):
    node = helper.make_node(op, names, ["out", "state"], **attrs)
    ins = [helper.make_tensor_value_info(n, F, list(a.shape)) for n, a in zip(names, arrays) if a is not None]
    graph = helper.make_graph([node], "t", ins, [helper.make_tensor_value_info(n, F, None) for n in ("out", "state")])
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 27)]))


CASES = [  # (rule, Hq, Hkv, decay per key dim)
    ("linear", 2, 2, False), ("gated", 4, 2, False), ("gated", 2, 2, True), ("delta", 2, 1, False),
    ("gated_delta", 2, 2, False), ("gated_delta", 4, 2, False), ("gated_delta", 2, 4, False),
]


@pytest.mark.parametrize("T", [1, 7])
@pytest.mark.parametrize("rule,hq,hkv,per_key", CASES)
def test_linear_attention_kernels_agree(rule, hq, hkv, per_key, T):
    rng = np.random.default_rng(0)
    dk, dv = 4, 3
    q = rng.standard_normal((1, T, hq * dk)).astype(np.float32)
    k = rng.standard_normal((1, T, hkv, dk)).astype(np.float32)
    k = (k / np.linalg.norm(k, axis=-1, keepdims=True)).reshape(1, T, hkv * dk)  # L2-normalised keys
    v = rng.standard_normal((1, T, hkv * dv)).astype(np.float32)
    s = rng.standard_normal((1, hkv, dk, dv)).astype(np.float32)
    g = -rng.random((1, T, hkv * (dk if per_key else 1))).astype(np.float32) if "gated" in rule else None
    b = rng.random((1, T, hkv)).astype(np.float32) if "delta" in rule else None
    names = ["q", "k", "v", "s", "g" if g is not None else "", "b" if b is not None else ""]
    arrays = [q, k, v, s, g, b]
    while names[-1] == "":
        names.pop(), arrays.pop()
    attrs = dict(q_num_heads=hq, kv_num_heads=hkv, update_rule=rule)
    feeds = {n: a for n, a in zip(names, arrays) if a is not None}
    want = reference.linear_attention(q, k, v, s, g, b, **attrs)
    model = _model("LinearAttention", names, arrays, attrs)
    for kernel in ("function", "ort"):
        got = _run(model, feeds, kernel)
        for w, x in zip(want, got):
            np.testing.assert_allclose(x, w, atol=1e-5, rtol=1e-5, err_msg=kernel)
    if hq >= hkv:  # ONNX's opset 27 defines Hq >= Hkv only
        got = _std(model, names, arrays, "LinearAttention", attrs).run(None, feeds)
        for w, x in zip(want, got):
            np.testing.assert_allclose(x, w, atol=1e-5, rtol=1e-5, err_msg="onnx.reference")


def conv_case(T: int, activation: str, bias: bool):
    """A CausalConvWithState case: (input names, arrays, feeds, reference outputs, one-node model)."""
    rng = np.random.default_rng(1)
    C, K = 5, 4
    x = rng.standard_normal((1, C, T)).astype(np.float32)
    w = rng.standard_normal((C, 1, K)).astype(np.float32)
    bb = rng.standard_normal(C).astype(np.float32) if bias else None
    s = rng.standard_normal((1, C, K - 1)).astype(np.float32)
    names, arrays = ["x", "w", "bias" if bias else "", "s"], [x, w, bb, s]
    feeds = {n: a for n, a in zip(names, arrays) if a is not None}
    want = reference.causal_conv_with_state(x, w, bb, s, activation=activation)
    return names, arrays, feeds, want, _model("CausalConvWithState", names, arrays, dict(activation=activation))


@pytest.mark.parametrize("T", [1, 6])
@pytest.mark.parametrize("activation,bias", [("silu", False), ("none", True)])
def test_causal_conv_kernels_agree(T, activation, bias):
    names, arrays, feeds, want, model = conv_case(T, activation, bias)
    for kernel in ("function", "ort"):
        for wnt, got in zip(want, _run(model, feeds, kernel)):
            np.testing.assert_allclose(got, wnt, atol=1e-5, rtol=1e-5, err_msg=kernel)
    got = _std(model, names, arrays, "CausalConvWithState", dict(activation=activation)).run(None, feeds)
    for wnt, g in zip(want, got):
        np.testing.assert_allclose(g, wnt, atol=1e-5, rtol=1e-5, err_msg="onnx.reference")


def test_kernel_choice(monkeypatch):
    monkeypatch.delenv(kernels.NATIVE_ENV, raising=False)
    built = kernels.built_library()
    assert kernels.choose("auto").kind == ("native" if built else "ort")  # make native's library, else ORT's
    monkeypatch.setattr(kernels, "built_library", lambda: None)
    assert kernels.choose("auto").kind == "ort"  # onnxruntime >= 1.31 has the kernels
    assert kernels.choose("function").kind == "function"
    with pytest.raises(Exception, match="--recurrent-kernel"):
        kernels.choose("cuda-graph")
    with pytest.raises(Exception, match="EDGECPM_NATIVE_OPS"):
        kernels.choose("native")
