"""MatMulNBits packing: our numpy dequantization reference vs onnxruntime's kernel, and vs the input."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edgecpm.contract import UserError
from edgecpm.export.quant import dequantize, quantize


def run_matmulnbits(qw, x):
    names = ["x", "B", "s"] + (["z"] if qw.zero_points is not None else [])
    inits = [numpy_helper.from_array(qw.B, "B"), numpy_helper.from_array(qw.scales, "s")]
    if qw.zero_points is not None:
        inits.append(numpy_helper.from_array(qw.zero_points, "z"))
    node = helper.make_node("MatMulNBits", names, ["y"], domain="com.microsoft", K=qw.K, N=qw.N, bits=qw.bits,
                            block_size=qw.group, accuracy_level=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, list(x.shape))],
                              [helper.make_tensor_value_info("y", 1, [x.shape[0], qw.N])], inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("K", [256, 200])  # 200: not a multiple of any group size -> zero padding
def test_packing_matches_onnxruntime(bits, symmetric, group, K):
    rng = np.random.default_rng(bits * 1000 + group + K)
    w = rng.standard_normal((24, K)).astype(np.float32)
    x = rng.standard_normal((3, K)).astype(np.float32)
    qw = quantize(w, bits, group, symmetric)
    assert qw.B.shape == (24, -(-K // group), group * bits // 8)
    ref = dequantize(qw)
    np.testing.assert_allclose(run_matmulnbits(qw, x), x @ ref.T, atol=1e-4, rtol=1e-4)
    # the quantization error is what the grid allows: at most ~one step per block
    step = np.abs(w).max() / (7 if bits == 4 else 127)
    assert np.abs(ref - w).max() <= step * (1.01 if symmetric else 1.0)


def test_exact_grid_values_survive():
    """Values already on a symmetric int4 grid come back exactly."""
    q = np.random.default_rng(0).integers(-8, 8, (4, 64)).astype(np.float32)
    q[:, ::32] = -8  # every block has its -8 peak
    qw = quantize(q * 0.5, 4, 32, True)
    np.testing.assert_array_equal(dequantize(qw), q * 0.5)


def test_refuses_unsupported_recipe():
    w = np.zeros((4, 64), np.float32)
    with pytest.raises(UserError, match="--q-bits"):
        quantize(w, 3, 32)
    with pytest.raises(UserError, match="--q-group-size"):
        quantize(w, 4, 48)
