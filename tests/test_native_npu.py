"""The native runtime on NPU artifacts (`edgecpm export --target npu`): libedgecpm's NpuEngine against
the Python NpuEngine on the CPU, and on the QNN HTP simulator of the onnxruntime-qnn wheel (its plugin
library handed over with --qnn-library).

The QNN checks run edgecpm-run in subprocesses: the plugin is then loaded by one onnxruntime per
process (the Python tests load it into the Python onnxruntime of the pytest process). The simulator
is slow (~50-100 ms per step of these tiny graphs), so they run few steps.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from conftest import VOCAB
from native import Model, NativeError, need_native, run

from edgecpm.contract import load_manifest
from edgecpm.runtime import NpuEngine, Tokenizer, stream_generate

pytestmark = need_native

QNN_MISSING = importlib.util.find_spec("onnxruntime_qnn") is None
needs_qnn = pytest.mark.skipif(QNN_MISSING, reason="onnxruntime-qnn is not installed (pip install 'edgecpm[npu]')")
CHUNKS = {"llama": 16, "lfm2": 16, "qwen3_5": 8, "minimax": 16}  # as tests/test_npu.py (small: a quick simulator)
NOTICE = "running the NPU graphs on the CPU"
PROMPT = "def f(x): return x + 1. The capital of France is Paris. Hello world, how are you today? def g(y):"


@pytest.fixture(scope="module")
def npu_art(tiny, tmp_path_factory):
    """npu_art(kind) -> a tiny NPU artifact (exported once per module)."""
    from edgecpm.export.npu import export

    cache: dict = {}

    def get(kind: str):
        if kind not in cache:
            fp32, _ = tiny(kind, 32)
            out = tmp_path_factory.mktemp("native-npu") / kind
            cache[kind] = export(load_manifest(fp32).source["path"], str(out), prefill_chunk=CHUNKS[kind], quiet=True)
        return cache[kind]

    return get


def _ids(seed: int, n: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, VOCAB, n).tolist()


def _greedy(feed, prompt: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """n greedy tokens after the prompt and the logits [n, vocab] they were taken from."""
    logits, out, seen = feed(prompt), [], []
    for _ in range(n):
        seen.append(np.asarray(logits).reshape(-1))
        out.append(int(np.argmax(seen[-1])))
        logits = feed([out[-1]])
    return out, np.stack(seen)


@pytest.mark.parametrize("kind", ["llama", "qwen3_5", "lfm2", "minimax"])
def test_cpu_greedy_tokens_and_logits_equal_the_python_npu_engine(npu_art, kind):
    """Two prefill chunks + 3 decode steps, then 16 greedy tokens: the same graphs on the CPU in both runtimes."""
    art = npu_art(kind)
    prompt = _ids(3, 2 * CHUNKS[kind] + 3)
    py = NpuEngine(art)
    want, want_logits = _greedy(lambda t: py.step(t)[-1], prompt, 16)
    m = Model(art)
    try:
        got, got_logits = _greedy(m.feed, prompt, 16)
        assert m.stats()["position"] == len(prompt) + 16
    finally:
        m.close()
    assert got == want
    np.testing.assert_allclose(got_logits, want_logits, atol=1e-4)
    assert np.abs(np.diff(got_logits, axis=0)).max(-1).min() > 1e-3  # every step's logits are new (no stale buffer)


def test_edgecpm_run_text_equals_python_stream_generate(npu_art):
    art = npu_art("llama")
    e = NpuEngine(art)
    tok = Tokenizer(e.folder, e.manifest)
    assert len(tok.encode(PROMPT)) > CHUNKS["llama"]  # the prefill graph runs
    want = [r.token for r in stream_generate(e, tok, PROMPT, max_tokens=20)]
    got = json.loads(run(art, "-p", PROMPT, "-m", 20, "--json").stdout)
    assert got["tokens"] == want and len(want) >= 16


def test_chat_on_the_npu_engine_reuses_state_and_equals_python(npu_art):
    """Qwen3.5 has recurrent state: the second turn restores a snapshot and prefills only the new part."""
    from native import Chat

    from edgecpm.runtime import ChatSession

    art = npu_art("qwen3_5")
    e = NpuEngine(art)
    py = ChatSession(e, Tokenizer(e.folder, e.manifest))
    want = [py.ask("Hello world", max_tokens=6)]
    want.append(py.ask("how are you today?", max_tokens=6))
    m = Model(art)
    try:
        chat = Chat(m)
        got = [chat.send("Hello world", max_tokens=6), chat.send("how are you today?", max_tokens=6)]
        assert chat.last_prefill == py.last_prefill < len(py.tokenizer.encode_chat(py.messages[:-1]))
        chat.close()
    finally:
        m.close()
    assert got == want


def test_without_a_qnn_plugin_the_graphs_run_on_the_cpu_with_a_one_line_notice(npu_art, monkeypatch):
    monkeypatch.delenv("EDGECPM_QNN_LIBRARY", raising=False)
    art = npu_art("llama")
    notes: list[str] = []
    m = Model(art, providers="qnn", log=notes.append)
    try:
        logits = m.feed(_ids(4, CHUNKS["llama"] + 2))
    finally:
        m.close()
    assert len(notes) == 1 and NOTICE in notes[0] and "\n" not in notes[0] and "qnn-library" in notes[0]
    np.testing.assert_allclose(logits, NpuEngine(art).step(_ids(4, CHUNKS["llama"] + 2))[-1], atol=1e-4)
    r = run(art, "-p", "hi", "-m", 2, "--provider", "qnn")
    assert [line for line in r.stderr.splitlines() if "LIBNATIVE" not in line] == [notes[0]]
    bad: list[str] = []
    Model(art, providers="qnn", qnn_library="/nonexistent/libqnn.so", log=bad.append).close()
    assert len(bad) == 1 and "/nonexistent/libqnn.so does not exist" in bad[0] and NOTICE in bad[0]
    with pytest.raises(NativeError) as e:  # strict: no quiet CPU fallback
        Model(art, providers="qnn", strict=True)
    assert e.value.status == 3 and "strict" in e.value.message and "\n" not in e.value.message
    Model(art, strict=True).close()  # strict on the CPU provider: the CPU session has no fallback to forbid


def _qnn_library() -> str:
    import onnxruntime_qnn

    return onnxruntime_qnn.get_library_path()


def _qnn_run(art, prompt=PROMPT, tokens=16, placement=True) -> tuple[dict, list[str]]:
    """edgecpm-run on QNN, strict (with placement): (its JSON, its stderr lines)."""
    r = run(art, "-p", prompt, "-m", tokens, "--json", "--provider", "qnn", "--qnn-library", _qnn_library(),
            "--strict", *(["--placement"] if placement else []))
    out = json.loads(r.stdout.strip().splitlines()[-1])  # the simulator prints a banner on stdout first
    return out, [line for line in r.stderr.splitlines() if "LIBNATIVE" not in line]


def _drop_caches(art) -> None:
    from pathlib import Path

    for f in Path(art).glob("*_ctx.onnx"):
        f.unlink()


@needs_qnn
@pytest.mark.parametrize("kind", ["llama", "qwen3_5", "lfm2", "minimax"])
def test_strict_qnn_places_every_node_on_qnn_and_greedy_equals_the_cpu_run(npu_art, kind):
    """With the CPU fallback disabled the graphs load only if QNN takes every node; the placement read
    from onnxruntime's log says so too, and the greedy tokens equal the native CPU run's."""
    art = npu_art(kind)
    _drop_caches(art)  # a compile (not a cache read) reports the QNN node counts
    got, lines = _qnn_run(art)
    cpu = json.loads(run(art, "-p", PROMPT, "-m", 16, "--json").stdout)
    for graph in ("decode", "prefill"):
        line = next(line for line in lines if line.startswith(graph + ": "))
        nodes = int(line.split("QNN graph nodes ")[1].split(";")[0].split(",")[0])
        assert "QNNExecutionProvider 1" in line and "CPUExecutionProvider" not in line and nodes > 100, line
        assert "QNN refused" not in line and "context cached in" in line
    assert not any(NOTICE in line for line in lines)
    assert got["tokens"] == cpu["tokens"] and len(got["tokens"]) >= 16


@needs_qnn
def test_the_compiled_context_is_cached_under_the_python_name_and_the_second_load_is_faster(npu_art):
    from pathlib import Path

    from edgecpm.runtime.npu import cache_path

    art = Path(npu_art("llama"))
    m = load_manifest(art)
    names = [cache_path(art, g["file"], m.files[g["file"]]["sha256"]) for g in m.graphs.values()]
    _drop_caches(art)
    first, _ = _qnn_run(art, tokens=4, placement=False)
    assert all(p.is_file() for p in names), sorted(art.iterdir())
    second, _ = _qnn_run(art, tokens=4, placement=False)
    print(f"native QNN open: {first['load_ms']:.0f} ms compiling, {second['load_ms']:.0f} ms from the cache")
    assert second["load_ms"] < first["load_ms"]
    assert second["tokens"] == first["tokens"]
    _, lines = _qnn_run(art, tokens=1)
    assert all(any(f"context read from {p}" in line for line in lines) for p in names)
    py = NpuEngine(art, providers=["qnn"], strict=True, log=lambda _: None)  # Python reads the native cache
    assert all(py.placement[g]["from_cache"] for g in ("decode", "prefill"))
    copy = art.parent / "llama-copy"  # and native reads a cache Python wrote
    shutil.copytree(art, copy)
    _drop_caches(copy)
    NpuEngine(copy, providers=["qnn"], strict=True, log=lambda _: None)
    _, lines = _qnn_run(copy, tokens=2)
    assert sum("context read from" in line for line in lines) == 2
