"""The NPU prefill graph's chunked (WY / UT-transform) matmul form of the gated delta rule against the
recurrence it stands for: the decode graph (T = 1, one plain-op step of the rule) fed the same tokens one
at a time. Both fp32, on onnxruntime's CPU, on a tiny random Qwen3.5; two prefill chunks, so the second
starts from the first's (nonzero) state. Mutants (decay or beta dropped from the chunked form only) must
fail the same comparison, so the check can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import VOCAB, make_model

from edgecpm.contract import LOGITS
from edgecpm.export.npu import chunked

CHUNK, CTX = 8, 64
TOLERANCE = 1e-4  # relative to each tensor's largest value; measured ~1e-6 (fp32 rounding)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A tiny random Qwen3.5 checkpoint (transformers' own classes)."""
    folder = tmp_path_factory.mktemp("hf-qwen3_5-chunked")
    make_model("qwen3_5", folder)
    return folder


def _replay(source, T: int, folder):
    """The fp32 NPU graph for step size T, ready to be replayed like the runtime does."""
    from edgecpm.export.checkpoint import open_source
    from edgecpm.export.models import get_architecture
    from edgecpm.export.npu import build_fp32
    from edgecpm.export.npu.models import get_npu_architecture
    from edgecpm.export.npu.quantize import Replay

    src = open_source(str(source))
    arch = get_architecture(src.config["model_type"])
    args = arch.model_args(src.config)
    specs = build_fp32(src, arch, get_npu_architecture(args.model_type), args, T, CTX, folder)
    return Replay(folder / "model.onnx", T, specs, CTX)


def _mismatch(hf, folder) -> dict[str, float]:
    """Per output (logits, each present state after each chunk): the largest |chunked - recurrent|
    relative to the recurrent tensor's largest |value|."""
    prefill, decode = _replay(hf, CHUNK, folder / "prefill"), _replay(hf, 1, folder / "decode")
    assert {s.kind for s in prefill.specs} == {"kv", "conv", "recurrent"}
    return worst_mismatch(prefill, decode, np.random.default_rng(3).integers(3, VOCAB, 2 * CHUNK).tolist(), CHUNK)


def worst_mismatch(prefill, decode, ids: list[int], chunk: int) -> dict[str, float]:
    """Feed `ids` chunk by chunk to `prefill` and one by one to `decode`; per output (logits, each state)
    the largest |prefill - decode| / max |decode| seen after any chunk."""
    worst: dict[str, float] = {}
    for start in range(0, len(ids), chunk):  # later chunks start from the earlier ones' (nonzero) state
        prefill.step(ids[start : start + chunk])
        for t in ids[start : start + chunk]:
            decode.step([t])
        pairs = {LOGITS: (prefill.outputs[LOGITS], decode.outputs[LOGITS])}
        pairs.update({s.input: (prefill.values[s.input], decode.values[s.input]) for s in prefill.specs})
        for name, (a, b) in pairs.items():
            worst[name] = max(worst.get(name, 0.0), float(np.abs(a - b).max() / np.abs(b).max()))
    return worst


@pytest.mark.parametrize("sub_chunk", [64, 3])  # one chunk; sub-chunks of 3, 3, 2 with the state carried
def test_chunked_prefill_equals_the_recurrence_token_by_token(hf, tmp_path, monkeypatch, sub_chunk):
    monkeypatch.setattr(chunked, "SUB_CHUNK", sub_chunk)
    worst = _mismatch(hf, tmp_path)
    print({k: f"{v:.1e}" for k, v in worst.items()})
    assert max(worst.values()) < TOLERANCE, worst


def _without(term: str):
    """gated_delta_chunked with the decay (g = 0: no forgetting) or beta (= 1) replaced."""
    original = chunked.gated_delta_chunked

    def mutant(c, state, q, k, v, decay, beta, **kw):
        zero, one = c.g.const("zero", [0.0], np.float32), c.g.const("one", [1.0], np.float32)
        if term == "decay":
            decay = c.g.op("Mul", decay, zero)
        else:
            beta = c.g.op("Add", c.g.op("Mul", beta, zero), one)
        return original(c, state, q, k, v, decay, beta, **kw)

    return mutant


@pytest.mark.parametrize("term", ["decay", "beta"])
def test_the_comparison_fails_when_a_term_is_dropped(hf, tmp_path, monkeypatch, term):
    monkeypatch.setattr(chunked, "gated_delta_chunked", _without(term))
    worst = _mismatch(hf, tmp_path)
    print(term, {k: f"{v:.1e}" for k, v in worst.items()})
    recurrent = max(v for k, v in worst.items() if k.endswith(".recurrent"))
    assert worst[LOGITS] > 10 * TOLERANCE and recurrent > 100 * TOLERANCE  # measured: >= 7e-3 and >= 0.5


def test_the_prefill_graph_uses_no_loop_scan_or_cumsum(hf, tmp_path):
    """Only ops the QNN HTP runs (the QNN placement tests in test_npu.py check the quantized graphs)."""
    import onnx

    _replay(hf, CHUNK, tmp_path / "prefill")
    graph = onnx.load(str(tmp_path / "prefill" / "model.onnx"), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Loop", "Scan", "CumSum", "Trilu", "If"} and "MatMul" in ops
