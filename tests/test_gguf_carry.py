"""GGUF blocks carried over into MatMulNBits / GatherBlockQuantized reproduce gguf.quants.dequantize.

Q4_0/Q4_1/Q8_0/Q5_0/Q5_1 tensors come from the gguf package's own quantizer. It has none for the
K-quants (gguf.quants.quantize raises NotImplementedError), so Q4_K/Q5_K/Q6_K tensors are random
valid blocks (random integer bits and 6-bit scales, sane fp16 super-block scales) that
gguf.quants.dequantize then defines.
"""

import numpy as np
import onnxruntime as ort
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize
from onnx import TensorProto

from edgecpm.contract import Quantization
from edgecpm.export.blocks import Ctx, embedding, linear
from edgecpm.export.gguf_blocks import FORMATS, carry
from edgecpm.export.graph import GraphBuilder

N, K = 48, 512
TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]


def gguf_tensor(kind: str, rng, rows: int = N) -> np.ndarray:
    """Raw GGUF bytes [rows, K/values * block bytes] of type `kind`."""
    w = (rng.standard_normal((rows, K)) * rng.random((rows, 1))).astype(np.float32)
    try:
        return quantize(w, GGMLQuantizationType[kind])
    except NotImplementedError:
        _, nbytes, values, _, _ = FORMATS[kind]
        raw = rng.integers(0, 256, (rows, K // values, nbytes), dtype=np.uint8)
        scales = (rng.random(raw.shape[:2] + (2,)) * 0.02 + 1e-3).astype(np.float16).view(np.uint8)
        if kind == "Q6_K":
            raw[..., 208:210] = scales[..., :2]  # d at the end of the block
        else:
            raw[..., 0:4] = scales.reshape(raw.shape[:2] + (4,))  # d, dmin
        return raw.reshape(rows, -1)


def run(tmp_path, build, inputs: dict) -> np.ndarray:
    """Build a graph with blocks.linear/embedding into tmp_path and run it with fp32 activations."""
    g = GraphBuilder(tmp_path)
    c = Ctx(g=g, w=None, q=Quantization(method="gguf", accuracy_level=1), ctx_len=16)
    ins = {n: g.input(n, TensorProto.FLOAT if a.dtype == np.float32 else TensorProto.INT64, list(a.shape))
           for n, a in inputs.items()}
    g.output(build(c, ins), "y", TensorProto.FLOAT, None)
    g.finish(tmp_path / "m.onnx", "test")
    return ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, inputs)[0]


@pytest.mark.parametrize("kind", TYPES)
def test_matmulnbits_reproduces_dequantize(tmp_path, kind):
    rng = np.random.default_rng(TYPES.index(kind))
    raw = gguf_tensor(kind, rng)
    ref = dequantize(raw, GGMLQuantizationType[kind]).reshape(N, K)
    bw = carry(raw, kind, K)
    eye = np.eye(K, dtype=np.float32)[None]  # [1, K, K]: row k of the output is row k of W^T
    x = rng.standard_normal((1, 3, K)).astype(np.float32)
    got = run(tmp_path, lambda c, i: linear(c, i["e"], bw, "w"), {"e": eye})[0].T  # [N, K]
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
    y = run(tmp_path / "..", lambda c, i: linear(c, i["x"], bw, "w"), {"x": x})
    np.testing.assert_allclose(y, x @ ref.T, rtol=1e-4, atol=1e-5 * np.abs(x @ ref.T).max())


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "Q6_K", "Q4_K"])
def test_gather_block_quantized_reproduces_dequantize(tmp_path, kind):
    rng = np.random.default_rng(100 + TYPES.index(kind))
    raw = gguf_tensor(kind, rng)
    ref = dequantize(raw, GGMLQuantizationType[kind]).reshape(N, K)
    ids = np.array([[0, 7, 47, 7]], np.int64)
    got = run(tmp_path, lambda c, i: embedding(c, i["ids"], carry(raw, kind, K), 0), {"ids": ids})
    assert np.abs(got[0] - ref[ids[0]]).max() <= 1e-6 * np.abs(ref).max()


def test_mixed_formats_in_one_projection(tmp_path):
    """q/k in Q4_K and v in Q6_K (a Q4_K_M file) become separate nodes, concatenated, still exact."""
    rng = np.random.default_rng(7)
    raws = [gguf_tensor(k, rng, 16) for k in ("Q4_K", "Q4_K", "Q6_K")]
    parts = [carry(r, k, K) for r, k in zip(raws, ("Q4_K", "Q4_K", "Q6_K"))]
    ref = np.concatenate([dequantize(r, GGMLQuantizationType[k]).reshape(16, K)
                          for r, k in zip(raws, ("Q4_K", "Q4_K", "Q6_K"))])
    x = rng.standard_normal((1, 2, K)).astype(np.float32)
    y = run(tmp_path, lambda c, i: linear(c, i["x"], parts, "qkv"), {"x": x})
    np.testing.assert_allclose(y, x @ ref.T, rtol=1e-4, atol=1e-5 * np.abs(x @ ref.T).max())


def test_default_model_carries_its_blocks_and_stores_the_tied_embedding_once(carried_default):
    import onnx

    from edgecpm.contract import load_manifest
    from edgecpm.export.embedded import default_gguf

    m = load_manifest(carried_default)
    assert m.quantization.method == "gguf"
    assert m.quantization.carried == {"Q4_1": 120, "Q8_0": 2}  # 30 layers x 4 projections; embedding + head
    graph = onnx.load(str(carried_default / "model.onnx"), load_external_data=False).graph
    data = {n.op_type: n.input[0] for n in graph.node if n.op_type == "GatherBlockQuantized"}
    head = [n for n in graph.node if n.name == "n/lm_head"][0]
    assert head.input[1] == data["GatherBlockQuantized"]  # one initializer for embedding and lm_head
    ops = [n.op_type for n in graph.node]
    assert ops.count("AddBlockMins") == 120 and "ReduceSum" not in ops  # one min correction per projection
    assert m.operators == ["AddBlockMins"]
    mins = [i for i in graph.initializer if i.name.endswith(".block_mins")]
    assert sum(i.data_type == TensorProto.FLOAT16 for i in mins) >= 110  # fp16 where exact: nearly all Q4_1 m + 8d
    assert m.weights_bytes < 1.25 * default_gguf().stat().st_size
