"""NPU artifacts (`edgecpm export --target npu`) on the QNN HTP simulator that the onnxruntime-qnn
wheel ships, against the fp32 CPU artifact of the same tiny model (real margins: conftest.boost).

The simulator is slow (~50-100 ms per step of these tiny graphs), so each check runs few steps.
Without onnxruntime-qnn the QNN tests skip; the CPU fallback test runs either way.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import VOCAB

from edgecpm.contract import load_manifest
from edgecpm.runtime import Engine, NpuEngine

QNN_MISSING = importlib.util.find_spec("onnxruntime_qnn") is None
needs_qnn = pytest.mark.skipif(QNN_MISSING, reason="onnxruntime-qnn is not installed (pip install 'edgecpm[npu]')")
KINDS = ["llama", "lfm2", "qwen3_5", "minimax"]  # minimax: Lightning layers, 2 experts (top-1, dense)
CHUNKS = {"llama": 16, "lfm2": 16, "qwen3_5": 8, "minimax": 16}  # Qwen3.5's GDN prefill (chunked form) at 8 tokens


@pytest.fixture(scope="session")
def npu(tiny, tmp_path_factory):
    """npu(kind) -> (NPU artifact, fp32 CPU artifact); exported once per session."""
    from edgecpm.export.npu import export

    cache: dict = {}

    def get(kind: str):
        if kind not in cache:
            fp32, _ = tiny(kind, 32)
            hf = load_manifest(fp32).source["path"]
            out = tmp_path_factory.mktemp("npu") / kind
            cache[kind] = (export(hf, str(out), prefill_chunk=CHUNKS[kind], quiet=True), fp32)
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", ["llama"])
def test_both_graphs_share_one_weights_file(npu, kind):
    """Every big initializer of decode.onnx and prefill.onnx lives in npu.onnx.data; the weights, the
    same bytes in both graphs, are stored once; no com.microsoft / ai.edgecpm op, shapes all static."""
    import onnx

    art, _ = npu(kind)
    m = load_manifest(art)
    assert "model.onnx" not in m.files and "npu.onnx.data" in m.files
    seen: dict[str, set] = {}
    for graph in ("decode", "prefill"):
        model = onnx.load(str(Path(art) / m.graphs[graph]["file"]), load_external_data=False)
        assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
        for v in [*model.graph.input, *model.graph.output]:
            assert all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim), v.name
        ext = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert ext and {e.value for t in ext for e in t.external_data if e.key == "location"} == {"npu.onnx.data"}
        seen[graph] = {(t.name, tuple(e.value for e in t.external_data if e.key == "offset")) for t in ext
                       if t.name.endswith("weight_quantized")}
    assert seen["decode"] and seen["decode"] == seen["prefill"]  # the same weights at the same offsets


def _ids(seed: int, n: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, VOCAB, n).tolist()


def _qnn(art, **kw) -> NpuEngine:
    return NpuEngine(art, providers=["qnn"], strict=True, log=lambda m: None, **kw)


@needs_qnn
@pytest.mark.parametrize("kind", KINDS)
def test_every_node_of_both_graphs_runs_on_qnn(npu, kind):
    """With the CPU fallback disabled the sessions load only if QNN takes every node."""
    art, _ = npu(kind)
    m = load_manifest(art)
    assert m.target == "npu" and sorted(m.graphs) == ["decode", "prefill"]
    assert (m.graphs["decode"]["tokens"], m.graphs["prefill"]["tokens"]) == (1, CHUNKS[kind])
    e = _qnn(art, report_placement=True)
    for graph in ("decode", "prefill"):
        placed = e.placement[graph]
        print(graph, placed)
        assert placed.get("QNNExecutionProvider", 0) >= 1 and "CPUExecutionProvider" not in placed
        assert placed.get("QNN graph nodes", 0) > 100 and "QNN refused" not in placed


@needs_qnn
@pytest.mark.parametrize("kind", KINDS)
def test_simulated_npu_logits_agree_with_the_fp32_cpu_artifact(npu, kind):
    """One prefill chunk (the prefill graph) then 64 decode steps: top-1 >= 95 % of 65 positions."""
    art, fp32 = npu(kind)
    chunk = CHUNKS[kind]
    ids = _ids(7, chunk + 64)
    ref = Engine(fp32).step(ids, logits_at=list(range(len(ids))))[chunk - 1 :]  # [65, vocab]
    e = _qnn(art)
    got = [e.step(ids[:chunk])[0]] + [e.step([t])[0] for t in ids[chunk:]]
    assert e.state.pos == len(ids)
    got = np.stack(got)  # [65, vocab]
    top2 = np.sort(ref, -1)[:, -2:]
    agree = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    print(f"{kind}: top-1 {agree:.3f}, max |dlogit| {np.abs(got - ref).max():.3f}, "
          f"median margin {np.median(top2[:, 1] - top2[:, 0]):.2f}")
    assert np.median(top2[:, 1] - top2[:, 0]) > 0.2  # the reference's argmax is not a near-tie
    assert agree >= 0.95


def _greedy(engine, prompt: list[int], n: int) -> list[int]:
    logits, out = engine.prefill(prompt), []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = engine.step([out[-1]])[0]
    return out


@needs_qnn
@pytest.mark.parametrize("kind", KINDS)
def test_greedy_tokens_equal_the_fp32_cpu_artifact(npu, kind):
    art, fp32 = npu(kind)
    prompt = _ids(8, CHUNKS[kind] + 3)  # one prefill chunk + 3 decode steps
    assert _greedy(_qnn(art), prompt, 16) == _greedy(Engine(fp32), prompt, 16)


@needs_qnn
def test_second_load_reads_the_cached_context_binary(npu):
    art, _ = npu("llama")
    for f in Path(art).glob("*_ctx.onnx"):
        f.unlink()
    t0 = time.perf_counter()
    first = _qnn(art)
    t1 = time.perf_counter()
    second = _qnn(art)
    t2 = time.perf_counter()
    print(f"load: {t1 - t0:.3f} s compiling, {t2 - t1:.3f} s from the cached context")  # figures, not asserted
    for graph in ("decode", "prefill"):
        assert not first.placement[graph]["from_cache"] and second.placement[graph]["from_cache"]
        assert Path(second.placement[graph]["cache"]).is_file()
    ids = _ids(9, CHUNKS["llama"] + 2)
    np.testing.assert_allclose(second.step(ids)[0], first.step(ids)[0], atol=1e-4)


def test_without_onnxruntime_qnn_the_artifact_runs_on_the_cpu_with_a_notice(npu, monkeypatch):
    art, fp32 = npu("llama")
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # import onnxruntime_qnn now raises ImportError
    notes: list[str] = []
    e = NpuEngine(art, providers=["qnn"], log=notes.append)
    assert e.providers == ["CPUExecutionProvider"]
    assert len(notes) == 1 and "onnxruntime-qnn is not installed" in notes[0] and "\n" not in notes[0]
    ids = _ids(10, CHUNKS["llama"] + 4)
    ref = Engine(fp32).step(ids)[0]
    assert int(np.argmax(e.step(ids)[0])) == int(np.argmax(ref))


def test_cpu_recipe_flags_with_target_npu_are_a_one_line_error(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "edgecpm", "export", str(tmp_path), "--target", "npu", "--q-bits", "4"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--q-bits" in r.stderr


def test_chat_on_the_npu_engine_reuses_its_state_and_equals_a_fresh_run(npu):
    """The NpuEngine serves ChatSession like the CPU engine (on the CPU here: the logic, not the EP)."""
    from edgecpm.runtime import ChatSession, Tokenizer, stream_generate

    e = NpuEngine(npu("llama")[0])
    tok = Tokenizer(e.folder, e.manifest)
    chat = ChatSession(e, tok)
    chat.ask("Hello world", max_tokens=10)
    second = chat.ask("how are you today?", max_tokens=10)
    full = tok.encode_chat(chat.messages[:-1])
    assert chat.last_prefill < len(full)  # the first turn's state was carried over
    e.reset()
    assert second == "".join(r.text for r in stream_generate(e, tok, full, max_tokens=10))
