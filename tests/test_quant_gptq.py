"""GPTQ error compensation (edgecpm.export.gptq): on a layer with correlated inputs it must reconstruct
the layer's outputs better than round-to-nearest and the per-block search, under the output error
tr((W - W') H (W - W')^T) it minimizes; its blocks pack like the search's; its calibration inputs
never reach the artifact."""

import json

import numpy as np
import pytest

from edgecpm.export.gptq import gptq_quantize, gram, inverse_factor
from edgecpm.export.qlinear import exact_f16
from edgecpm.export.quant import dequantize, on_fp16_grid, quantize
from edgecpm.export.quant_search import search_quantize


def correlated_layer(seed: int, N: int = 128, K: int = 320, T: int = 1024):
    """W [N, K] and inputs X [T, K] whose channels are mixed (correlated) and unevenly scaled."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((K, K)) * 0.3 + np.eye(K)
    x = (rng.standard_normal((T, K)) @ mix * rng.uniform(0.2, 3.0, K)).astype(np.float32)
    return rng.standard_normal((N, K)).astype(np.float32), x


def output_error(w: np.ndarray, wq: np.ndarray, h: np.ndarray) -> float:
    """tr(E H E^T) / tr(W H W^T): the relative squared error of the layer's outputs on the inputs."""
    e, w = (w - wq).astype(np.float64), w.astype(np.float64)
    return float(np.einsum("nk,kl,nl->", e, h, e) / np.einsum("nk,kl,nl->", w, h, w))


def as_float(qw) -> np.ndarray:
    return qw.dequantize() if hasattr(qw, "dequantize") else dequantize(qw)


@pytest.mark.parametrize("group", [32, 64])
@pytest.mark.parametrize("with_min", [True, False])
def test_gptq_reconstructs_outputs_better_than_rtn_and_search(group, with_min):
    w, x = correlated_layer(group + with_min)
    h = gram(x)
    rtn = output_error(w, dequantize(quantize(w, 4, group, symmetric=not with_min)), h)
    search = output_error(w, as_float(search_quantize(w, 4, group, np.diag(h) / len(x), with_min)), h)
    gptq = output_error(w, as_float(gptq_quantize(w, 4, group, h, with_min)), h)
    assert search < rtn, (search, rtn)
    assert gptq < 0.75 * search, (gptq, search, rtn)


def test_blocks_are_in_range_and_padding_is_handled():
    w, x = correlated_layer(7, N=16, K=200)  # 200: not a multiple of 64 -> padded blocks
    for with_min in (True, False):
        qw = gptq_quantize(w, 4, 64, gram(x), with_min)
        wq = as_float(qw)[:, :200]
        assert wq.shape == w.shape and np.isfinite(wq).all()
        # each value is within a few of its block's steps of the input (the error is spread, not dropped)
        assert np.abs(wq - w).max() < 0.5 * np.abs(w).max()


@pytest.mark.parametrize("method", ["search", "gptq"])
def test_block_mins_are_written_in_fp16(method):
    """Blocks with a min store m' on the fp16 grid (half the bytes a decode step reads for them)."""
    w, x = correlated_layer(3, K=256)
    h = gram(x)
    qw = (search_quantize(w, 4, 32, np.diag(h) / len(x), True) if method == "search"
          else gptq_quantize(w, 4, 32, h, True))
    assert exact_f16(np.ascontiguousarray(qw.m.T)).dtype == np.float16
    rtn = output_error(w, dequantize(quantize(w, 4, 32, symmetric=False)), h)
    assert output_error(w, as_float(qw), h) < 0.8 * rtn


def test_mins_stay_fp32_where_fp16_would_move_them_by_more_than_a_64th_of_a_step():
    m = np.array([[0.1234567, 1000.1]], np.float32)
    d = np.array([[0.01, 1e-4]], np.float32)  # fp16's step at 1000 is 0.5, far more than 1e-4 / 64
    out = on_fp16_grid(m, d)
    assert out[0, 0] == np.float16(0.1234567) and out[0, 1] == m[0, 1]


def test_inverse_factor_is_the_upper_cholesky_of_the_inverse():
    _, x = correlated_layer(3, K=48, T=200)
    h = gram(x) + np.eye(48)
    u = inverse_factor(h).astype(np.float64)
    assert np.allclose(np.triu(u), u)
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(h), rtol=1e-3, atol=1e-6 * np.abs(np.linalg.inv(h)).max())


def test_gptq_export_leaves_no_calibration_files_and_records_its_method(tiny, tmp_path):
    cal = tmp_path / "cal.txt"
    cal.write_text("The capital of France is Paris. Hello world, how are you today? " * 120)
    art, _ = tiny("llama", 4, q_method="gptq", calibration=str(cal))
    names = {p.name for p in art.iterdir()}
    assert not any("calibration" in n for n in names), names
    q = json.loads((art / "edgecpm.json").read_text())["quantization"]
    assert q["method"] == "gptq" and q["calibration"] == "cal.txt" and not q["symmetric"]


@pytest.mark.parametrize("group,method", [(None, "search"), (32, "search"), (64, "gptq")])
def test_default_method_from_float_is_chosen_by_group(tiny, group, method):
    """Named nowhere, the method is the search at group 32 (it ties gptq there, faster) and gptq above."""
    art, _ = tiny("llama", 4, q_group_size=group)
    assert json.loads((art / "edgecpm.json").read_text())["quantization"]["method"] == method


def _down_bits(art) -> dict[int, int]:
    """layer -> bits of its MLP down projection's MatMulNBits node."""
    import onnx

    out = {}
    for n in onnx.load(str(art / "model.onnx"), load_external_data=False).graph.node:
        if n.op_type == "MatMulNBits" and "down_proj" in n.name:
            layer = int(n.name.split(".layers.")[1].split(".")[0])
            out[layer] = next(a.i for a in n.attribute if a.name == "bits")
    return out


@pytest.mark.parametrize("group,mix,bits", [(64, None, {0: 4, 1: 8}), (64, "none", {0: 4, 1: 4}),
                                            (None, None, {0: 4, 1: 4}), (None, "k_m", {0: 4, 1: 8})])
def test_layer_mix_raises_llama_cpp_q4_k_m_down_projections_to_8_bits(tiny, group, mix, bits):
    """2 layers: n/8 = 0, so only layer 1 (>= 7n/8) is one of Q4_K_M's use_more_bits layers. The mix is
    the default at group 64, off at 32; the flag overrides either way, and the manifest records it."""
    art, _ = tiny("llama", 4, q_group_size=group, q_mix=mix)
    assert _down_bits(art) == bits
    want = mix or ("k_m" if group == 64 else "none")
    assert json.loads((art / "edgecpm.json").read_text())["quantization"]["mix"] == want


def test_more_bits_follows_llama_cpp_on_a_30_layer_model():
    from edgecpm.export.qlinear import more_bits

    got = [i for i in range(30) if more_bits(f"model.layers.{i}.mlp.down_proj", 30)]
    assert got == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]  # llama.cpp's list for 30 layers
    assert not more_bits("model.layers.0.mlp.gate_up_proj", 30) and not more_bits("lm_head", 30)
