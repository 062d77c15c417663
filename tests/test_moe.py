"""Routed MoE (edgecpm.export.moe): the com.microsoft MoE / QMoE nodes equal the numpy reference, the
reference equals transformers' MoE blocks, and the exported MoE models read only the routed experts."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgecpm.contract import Quantization
from edgecpm.export import moe
from edgecpm.export.blocks import F32, Ctx
from edgecpm.export.graph import GraphBuilder
from edgecpm.export.quant import dequantize, quantize

E, H, INTER, K = 8, 64, 32, 3


def _weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    router = rng.standard_normal((E, H)).astype(np.float32)
    gate, up = (rng.standard_normal((E, INTER, H)).astype(np.float32) * 0.2 for _ in range(2))
    down = rng.standard_normal((E, H, INTER)).astype(np.float32) * 0.2
    return router, gate, up, down


def _run_node(tmp_path, bits: int, normalize: bool, x: np.ndarray, weights, symmetric: bool = True) -> np.ndarray:
    g = GraphBuilder(tmp_path)
    c = Ctx(g=g, w={}, q=Quantization(bits=bits, group_size=32, symmetric=symmetric, accuracy_level=0), ctx_len=1)
    y = moe.routed_moe(c, g.input("x", F32, [1, "S", H]), *weights, top_k=K, normalize=normalize, name="moe")
    g.output(y, "y", F32, [1, "S", H])
    g.finish(tmp_path / "m.onnx", "test")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x[None]})[0][0]


def _dequantized(w: np.ndarray, symmetric: bool, bits: int) -> np.ndarray:
    """What the quantized experts hold: each expert quantized and dequantized as QMoE reads it."""
    return np.stack([dequantize(quantize(w[e], bits, 32, symmetric)) for e in range(w.shape[0])])


@pytest.mark.parametrize("bits,symmetric", [(32, True), (4, True), (4, False), (8, True)])
@pytest.mark.parametrize("normalize", [True, False])
def test_node_equals_numpy_reference(tmp_path, bits, symmetric, normalize):
    router, gate, up, down = _weights()
    x = np.random.default_rng(1).standard_normal((7, H)).astype(np.float32)  # 7 tokens
    got = _run_node(tmp_path, bits, normalize, x, (router, gate, up, down), symmetric)
    if bits in (4, 8):  # the same experts, as the blocks hold them (int4: fp32 activations at accuracy_level 0)
        fc1 = _dequantized(moe.interleave(gate, up), symmetric, bits)  # [E, 2I, H] rows g0, u0, ...
        gate, up, down = fc1[:, 0::2], fc1[:, 1::2], _dequantized(down, symmetric, bits)
    want = moe.reference(x, router, gate, up, down, top_k=K, normalize=normalize)
    # 8-bit blocks have only an int8-activation kernel in onnxruntime: measured 1.4 % of the output scale
    np.testing.assert_allclose(got, want, atol=1e-5 if bits != 8 else 0.03 * np.abs(want).max())


def _check_block(block, x: np.ndarray, router, gate, up, down, top_k: int, extra=None) -> None:
    import torch

    with torch.no_grad():
        got = block(torch.tensor(x[None])).float().numpy()[0]
    want = moe.reference(x, router, gate, up, down, top_k=top_k, normalize=True)
    np.testing.assert_allclose(got - (extra if extra is not None else 0), want, atol=1e-5)


def test_reference_equals_transformers_minimax_and_qwen3_next_blocks():
    import torch
    import transformers as tf
    from transformers.models.minimax.modeling_minimax import MiniMaxSparseMoeBlock
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextSparseMoeBlock

    torch.manual_seed(0)
    x = np.random.default_rng(2).standard_normal((9, H)).astype(np.float32)
    cfg = tf.MiniMaxConfig(hidden_size=H, intermediate_size=INTER, num_local_experts=E, num_experts_per_tok=K)
    mm = MiniMaxSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in mm.parameters():  # a bare block's expert tensors are torch.empty
            p.normal_(0, 0.3)
    sd = {k: v.numpy() for k, v in mm.state_dict().items()}
    fc1 = sd["experts.gate_up_proj"]  # [E, 2I, H]: gate rows, then up rows
    _check_block(mm, x, sd["gate.weight"], fc1[:, :INTER], fc1[:, INTER:], sd["experts.down_proj"], K)

    cfg = tf.Qwen3NextConfig(hidden_size=H, moe_intermediate_size=INTER, shared_expert_intermediate_size=INTER,
                             num_experts=E, num_experts_per_tok=K, norm_topk_prob=True)
    qn = Qwen3NextSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in qn.parameters():
            p.normal_(0, 0.3)
        xt = torch.tensor(x)
        shared = (torch.sigmoid(qn.shared_expert_gate(xt)) * qn.shared_expert(xt)).numpy()
    sd = {k: v.numpy() for k, v in qn.state_dict().items()}
    fc1 = sd["experts.gate_up_proj"]
    _check_block(qn, x, sd["gate.weight"], fc1[:, :INTER], fc1[:, INTER:], sd["experts.down_proj"], K, shared)


def test_exported_minimax_reads_only_routed_experts(tiny):
    """One QMoE node per MoE layer, and no per-expert MatMulNBits (the old graph ran every expert)."""
    art, _ = tiny("minimax", 4)
    nodes = onnx.load(str(art / "model.onnx"), load_external_data=False).graph.node
    assert [n.op_type for n in nodes].count("QMoE") == 4  # one per layer, every layer has the MoE
    assert not [n.name for n in nodes if ".experts." in n.name]  # no node of its own for any expert
