"""ai.edgecpm AddBlockMins (the min correction of blocks w = d*q + m'): numpy reference == the weights it
stands for == its function body (onnxruntime and onnx.reference) == the native kernel (libedgecpm_ops),
to 1e-5, on decode (1 row), odd row counts (the kernel's 4-row tiles) and prefill-sized inputs (threads)."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from native import OPS_LIB, need_native
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgecpm.ops import BLOCK_MINS, reference
from edgecpm.ops.functions import function_body

F = TensorProto.FLOAT
# (rows, K, N, block): one row is the decode path (N 83: a tail after the 8-wide vectors), 3 and 7 rows the
# many-row one (7 x 1536 x 576 split over columns on threads), 512 rows split over rows on threads
SHAPES = [(1, 64, 48, 32), (1, 576, 960, 32), (1, 96, 83, 16), (3, 96, 81, 16), (7, 1536, 576, 32),
          (512, 576, 960, 32)]


def block_mins_case(rows, K, N, block, seed=0, dtype=np.float32):
    """(y [1, rows, N], x [1, rows, K], mins [K/block, N] of `dtype`, one-node model with its function body)."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((1, rows, N)).astype(np.float32)
    x = rng.standard_normal((1, rows, K)).astype(np.float32)
    mins = (0.05 * rng.standard_normal((K // block, N))).astype(dtype)  # GGUF-sized mins (d*8 + m)
    mtype = TensorProto.FLOAT16 if dtype == np.float16 else F
    types = [helper.make_tensor_type_proto(F, ["B", "S", d]) for d in (N, K)] + \
        [helper.make_tensor_type_proto(mtype, list(mins.shape))]
    node = helper.make_node(BLOCK_MINS, ["y", "x", "mins"], ["out"], domain="ai.edgecpm", block_size=block)
    ins = [helper.make_tensor_value_info(n, t, None) for n, t in (("y", F), ("x", F), ("mins", mtype))]
    graph = helper.make_graph([node], "t", ins, [helper.make_tensor_value_info("out", F, None)])
    model = helper.make_model(graph, functions=[function_body(node, types)],
                              opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.edgecpm", 1)])
    model.ir_version = 10
    return y, x, mins, model


def _session(model, native: bool):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if native:
        so.register_custom_ops_library(str(OPS_LIB))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_reference_is_the_weights_it_stands_for():
    """x @ W_min^T with W_min[n, k] = mins[k // block, n]: what the op adds to y."""
    y, x, mins, _ = block_mins_case(5, 96, 40, 32)
    w_min = np.repeat(mins.astype(np.float64), 32, axis=0)  # [K, N]
    want = y + (x.astype(np.float64) @ w_min).astype(np.float32)
    np.testing.assert_allclose(reference.add_block_mins(y, x, mins, block_size=32), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        reference.add_block_mins(y, x, mins, block_size=16)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rows,K,N,block", SHAPES)
def test_function_body_equals_reference(rows, K, N, block, dtype):
    y, x, mins, model = block_mins_case(rows, K, N, block, dtype=dtype)
    want = reference.add_block_mins(y, x, mins, block_size=block)
    feeds = {"y": y, "x": x, "mins": mins}
    (got,) = _session(model, native=False).run(None, feeds)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg="onnxruntime, function body")
    (got,) = ReferenceEvaluator(model).run(None, feeds)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg="onnx.reference, function body")


def test_function_body_is_four_nodes_and_refuses_bad_attributes():
    *_, model = block_mins_case(1, 64, 48, 32)
    body = [n.op_type for n in model.functions[0].node if n.op_type != "Constant"]
    assert body == ["Reshape", "ReduceSum", "MatMul", "Add"]
    *_, model = block_mins_case(1, 64, 48, 32, dtype=np.float16)  # + a Cast of the mins, folded at load
    assert [n.op_type for n in model.functions[0].node if n.op_type != "Constant"] == \
        ["Reshape", "ReduceSum", "Cast", "MatMul", "Add"]
    node = helper.make_node(BLOCK_MINS, ["y", "x", "mins"], ["out"], domain="ai.edgecpm")
    with pytest.raises(ValueError, match="block_size"):
        function_body(node, [helper.make_tensor_type_proto(F, [1, 1, 8])] * 3)


@need_native
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rows,K,N,block", SHAPES)
def test_native_equals_reference_and_function_body(rows, K, N, block, dtype):
    y, x, mins, model = block_mins_case(rows, K, N, block, seed=rows, dtype=dtype)
    feeds = {"y": y, "x": x, "mins": mins}
    (got,) = _session(model, native=True).run(None, feeds)
    np.testing.assert_allclose(got, reference.add_block_mins(y, x, mins, block_size=block), atol=1e-5, rtol=1e-5)
    (body,) = _session(model, native=False).run(None, feeds)
    np.testing.assert_allclose(got, body, atol=1e-5, rtol=1e-5)


@need_native
@pytest.mark.parametrize("rows", [1, 3])
def test_native_fp16_mins_subnormal_and_tiny(rows):
    """fp16 mins the bit-by-bit conversion (vector tails, CPUs without F16C) must get right too: y = 0, so each
    output is that column's correction alone, checked relative to its own size."""
    y, x, mins, model = block_mins_case(rows, 96, 83, 32, dtype=np.float16)
    y[:] = 0
    mins[:, ::4] = np.float16(6e-8) * np.arange(1, 4)[:, None]  # subnormals
    mins[:, 1::4] = np.float16(-3.1e-5)  # subnormal, negative
    mins[:, 2::4] = np.float16(-1.5e4)  # large
    (got,) = _session(model, native=True).run(None, {"y": y, "x": x, "mins": mins})
    np.testing.assert_allclose(got, reference.add_block_mins(y, x, mins, block_size=32), atol=0, rtol=1e-4)


@need_native
def test_native_portable_loops_equal_reference():
    """The loops CPUs without AVX2/F16C (and arm64) run, forced by EDGECPM_OPS_PORTABLE in a child process
    (the library picks its path once, when loaded)."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests'); import test_block_mins as t, numpy as np; "
            "[t.test_native_equals_reference_and_function_body(*s, d) for s in t.SHAPES[:5] "
            "for d in (np.float32, np.float16)]; t.test_native_fp16_mins_subnormal_and_tiny(1); print('ok')")
    env = {**os.environ, "EDGECPM_OPS_PORTABLE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


@need_native
def test_native_refuses_mins_that_do_not_fit():
    y, x, mins, model = block_mins_case(2, 64, 48, 32)
    with pytest.raises(Exception, match="AddBlockMins mins must be \\["):
        _session(model, native=True).run(None, {"y": y, "x": x, "mins": mins[:1]})
    with pytest.raises(Exception, match="same leading dims"):
        _session(model, native=True).run(None, {"y": y, "x": x[:, :1], "mins": mins})


def test_exporter_writes_fp16_mins_only_when_exact():
    from edgecpm.export.qlinear import exact_f16

    m = np.array([[0.5, -0.1875], [3.0, 1024.0]], np.float32)
    assert exact_f16(m).dtype == np.float16
    assert exact_f16(m + np.float32(1e-4)).dtype == np.float32  # 1e-4 has no fp16 twin: stays fp32


@need_native
@pytest.mark.parametrize("kind", ["Q4_1", "Q5_1", "Q4_K", "Q5_K"])
def test_native_carried_linear_reproduces_dequantize(tmp_path, kind):
    """A carried-over linear layer (MatMulNBits + AddBlockMins, fp32 activations) run with the native kernel
    is gguf.quants.dequantize's weights, as test_gguf_carry holds for the function body."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    from test_gguf_carry import TYPES, K, N, gguf_tensor

    from edgecpm.contract import Quantization
    from edgecpm.export.blocks import Ctx, linear
    from edgecpm.export.gguf_blocks import carry
    from edgecpm.export.graph import GraphBuilder

    raw = gguf_tensor(kind, np.random.default_rng(TYPES.index(kind)))
    ref = dequantize(raw, GGMLQuantizationType[kind]).reshape(N, K)
    g = GraphBuilder(tmp_path)
    c = Ctx(g=g, w=None, q=Quantization(method="gguf", accuracy_level=1), ctx_len=16)
    g.output(linear(c, g.input("e", F, [1, K, K]), carry(raw, kind, K), "w"), "y", F, None)
    g.finish(tmp_path / "m.onnx", "test")
    assert [n.op_type for n in g.nodes].count(BLOCK_MINS) == 1
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(OPS_LIB))
    eye = np.eye(K, dtype=np.float32)[None]  # [1, K, K]: row k of the output is row k of W^T
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), so).run(None, {"e": eye})[0][0].T  # [N, K]
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()


@need_native
def test_default_model_native_agrees_with_function_body(carried_default, monkeypatch):
    """The carried-over default model (120 AddBlockMins nodes) with the native kernel. Not to 1e-5: MatMulNBits'
    int8 activations make the model chaotic (one ulp in one mins table moves logits by ~1), so the two paths
    agree as two equally exact runs do: a small KL, the same top token at most positions."""
    from edgecpm.runtime import Engine

    monkeypatch.setenv("EDGECPM_NATIVE_OPS", str(OPS_LIB))
    ids = [1, 504, 3458, 314, 260, 1345, 282, 4000, 30, 2, 77, 1200]
    native, body = Engine(carried_default, 64), Engine(carried_default, 64, recurrent_kernel="function")
    assert native.kernel.kind == "native"
    logp = [e.step(ids, logits_at=list(range(len(ids)))) for e in (native, body)]
    logp = [z - z.max(-1, keepdims=True) for z in logp]
    p, q = [z - np.log(np.exp(z).sum(-1, keepdims=True)) for z in logp]
    assert (np.exp(q) * (q - p)).sum(-1).mean() < 0.02  # the mins left out: KL >> 1
    assert (p.argmax(-1) == q.argmax(-1)).mean() >= 0.75
