"""The NPU engine: runs an NPU artifact's static graphs (manifest target "npu", docs/artifact.md).

With `--provider qnn` and the onnxruntime-qnn plugin installed, the graphs run on Qualcomm's QNN HTP
(on x86 Linux the wheel simulates it): the plugin library is registered, its devices are added, and
the compiled context binary is cached next to the artifact (onnxruntime's EP-context options), so a
second load skips the HTP graph preparation. Without the plugin (or a QNN device) the same graphs run
on the CPU, with a one-line notice.

Steps: T tokens at a time through `prefill` (T = its chunk) while whole chunks remain, else one at a
time through `decode`. Each graph returns the step's new KV rows; they are written into the buffer
at the step's position. Fixed-size states ping-pong as in the CPU engine.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgecpm.contract import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    POSITION_IDS,
    Manifest,
    UserError,
    load_manifest,
    npu_mask,
    sha256_file,
)
from edgecpm.runtime.engine import verbose_log
from edgecpm.runtime.state import State

QNN = "QNNExecutionProvider"
_registered: list[bool] = []
_QUIET = ort.RunOptions()
_QUIET.log_severity_level = 3  # a session made with the verbose placement log stays quiet when it runs


def qnn_provider() -> tuple[tuple | None, str]:
    """((devices, options), "") for the QNN HTP plugin, or (None, why not)."""
    try:
        import onnxruntime_qnn
    except ImportError:
        return None, "onnxruntime-qnn is not installed (pip install 'edgecpm[npu]')"
    if not _registered:
        ort.register_execution_provider_library(QNN, onnxruntime_qnn.get_library_path())
        _registered.append(True)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == QNN]
    if not devices:
        return None, "onnxruntime-qnn found no QNN device"
    return (devices, {"backend_path": onnxruntime_qnn.get_qnn_htp_path()}), ""


def cache_path(folder: Path, graph: str, sha: str) -> Path:
    """Where the compiled context of one graph is cached: beside it, named for the graph's bytes and the
    plugin version (a re-export or another onnxruntime-qnn never reads a stale binary)."""
    import onnxruntime_qnn

    return folder / f"{Path(graph).stem}.qnn-{onnxruntime_qnn.__version__}-{sha[:12]}_ctx.onnx"


class Graph:
    """One static graph's session, its I/O binding, and the buffers its outputs land in."""

    def __init__(self, session: ort.InferenceSession, T: int, state: State, vocab: int):
        self.session, self.T, self.io = session, T, session.io_binding()
        self.logits = np.zeros((1, 1, vocab), np.float32)
        self.rows = {s.output: np.zeros((*s.dims(1)[:2], T, s.dims(1)[3]), np.float32) for s, _, _ in state.kv}
        self.io.bind_output(LOGITS, "cpu", element_type=np.float32, shape=self.logits.shape,
                            buffer_ptr=self.logits.ctypes.data)
        for s, _, value in state.kv:
            self.io.bind_ortvalue_input(s.input, value)  # the whole buffer; the mask hides unwritten rows
            r = self.rows[s.output]
            self.io.bind_output(s.output, "cpu", element_type=np.float32, shape=r.shape, buffer_ptr=r.ctypes.data)


class NpuEngine:
    """Engine for NPU artifacts: same interface as runtime.Engine (step, prefill, reset, state)."""

    def __init__(self, artifact: str | Path, context: int | None = None, providers: list[str] | None = None,
                 threads: int | None = None, verify: bool = True, log=None, recurrent_kernel: str = "auto",
                 report_placement: bool = False, manifest: Manifest | None = None, strict: bool = False):
        self.folder = Path(artifact)
        self.log = log or (lambda m: print(m, file=sys.stderr))
        self.manifest = m = manifest or load_manifest(self.folder, verify=verify)
        if m.target != "npu":
            raise UserError(f"{self.folder} is not an NPU artifact; export one with `edgecpm export --target npu`")
        self.buffer = m.context_length  # the graphs' static KV rows
        self.ctx = min(context or m.context_length, m.context_length)
        self.kernel = None
        self.placement: dict[str, dict] = {}  # graph -> {provider: nodes, "qnn_nodes": n, "cache": path}
        self.state = State(m.state, self.buffer)
        self.threads, self.strict, self.report = threads, strict, report_placement
        qnn, why = qnn_provider() if any(p.lower() in ("qnn", QNN.lower()) for p in providers or []) else (None, "")
        if why:
            self.log(f"note: {why}; running the NPU graphs on the CPU")
        self.graphs = {name: self._graph(name, g, qnn) for name, g in m.graphs.items()}
        self.providers = [QNN, "CPUExecutionProvider"] if qnn else ["CPUExecutionProvider"]

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    def _options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = self.threads
        if self.strict:
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return so

    def _graph(self, name: str, spec: dict, qnn) -> Graph:
        path = self.folder / spec["file"]
        if qnn is None:
            session = ort.InferenceSession(str(path), self._options(), providers=["CPUExecutionProvider"])
        else:
            session = self._qnn_session(name, path, qnn)
        return Graph(session, int(spec["tokens"]), self.state, self.vocab_size)

    def _qnn_options(self, qnn, compile_to: Path | None) -> ort.SessionOptions:
        """Session options for the QNN devices; compile_to: write the compiled context there."""
        so = self._options()
        if compile_to is not None:
            for key, value in (("ep.context_enable", "1"), ("ep.context_file_path", str(compile_to)),
                               ("ep.context_embed_mode", "1")):
                so.add_session_config_entry(key, value)
        so.add_provider_for_devices(*qnn)
        return so

    def _qnn_session(self, name: str, path: Path, qnn) -> ort.InferenceSession:
        """A QNN session, from the cached context binary when there is one (else compiled, and cached).
        With report_placement a first, verbose session reads the placement; the session kept is made
        quietly afterwards (from the cache it just wrote, ~10 ms), since the QNN EP keeps logging at
        the level its session was made with."""
        meta = self.manifest.files.get(path.name)
        cache = cache_path(self.folder, path.name, meta["sha256"] if meta else sha256_file(path))
        hit = cache.is_file()
        compile_to = None if hit or not _writable(self.folder) else cache
        source = cache if hit else path
        placed: dict = {}
        if self.report:
            so = self._qnn_options(qnn, compile_to)
            _, placed = placed_nodes(lambda: ort.InferenceSession(str(source), so), so)
            source, compile_to = (cache, None) if cache.is_file() else (path, None)
        session = ort.InferenceSession(str(source), self._qnn_options(qnn, compile_to))
        self.placement[name] = {**placed, "cache": str(cache) if cache.is_file() else None, "from_cache": hit}
        if self.report:
            self.log(f"{name}: " + ", ".join(f"{k} {v}" for k, v in placed.items())
                     + (" (compiled context read from the cache)" if hit else ""))
        return session

    def _run(self, graph: Graph, tokens: list[int]) -> np.ndarray:
        """One static step of graph.T tokens at the current position; returns logits [vocab]."""
        st, T, io = self.state, graph.T, graph.io
        pos = st.pos
        io.bind_cpu_input(INPUT_IDS, np.asarray([tokens], np.int64))  # [1, T]
        io.bind_cpu_input(POSITION_IDS, np.arange(pos, pos + T, dtype=np.int64)[None])  # [1, T]
        io.bind_cpu_input(ATTENTION_MASK, npu_mask(pos, T, self.buffer))  # [1, 1, T, ctx + T]
        st.bind_fixed(io)
        graph.session.run_with_iobinding(io, _QUIET)
        for s, buf, _ in st.kv:
            buf[:, :, pos : pos + T] = graph.rows[s.output]  # the step's new rows into the buffer
        st.advance(tokens)
        return graph.logits[0, 0].copy()

    def step(self, tokens, logits_at: list[int] | None = None) -> np.ndarray:
        """Feed `tokens`; return logits [n, vocab] at positions `logits_at` of this step (default: the last).
        Whole prefill chunks go through the prefill graph unless a wanted position lies inside one."""
        ids = [int(t) for t in np.asarray(tokens).reshape(-1)]
        S = len(ids)
        if self.state.pos + S > self.ctx:
            raise UserError(f"{self.state.pos + S} tokens exceed the context of {self.ctx}; start a new chat "
                            "(/reset) or re-export with a larger --context-length")
        want = [S - 1] if logits_at is None else [int(i) for i in logits_at]
        wanted, got, i = set(want), {}, 0
        chunk = self.graphs["prefill"].T
        while i < S:
            whole = S - i >= chunk and not wanted.intersection(range(i, i + chunk - 1))
            graph = self.graphs["prefill" if whole else "decode"]
            logits = self._run(graph, ids[i : i + graph.T])
            i += graph.T
            got[i - 1] = logits
        return np.stack([got[j] for j in want])

    def prefill(self, tokens, chunk: int = 512) -> np.ndarray:
        """Feed the prompt; return the logits [vocab] after its last token (the chunk is the graph's)."""
        tokens = list(tokens)
        if not tokens:
            raise ValueError("prefill needs at least one token")
        return self.step(tokens)[-1]

    def reset(self) -> None:
        self.state.reset()


def placed_nodes(make_session, so: ort.SessionOptions) -> tuple[ort.InferenceSession, dict[str, int]]:
    """(session, {provider: nodes}) from onnxruntime's verbose log (stderr sent to a temporary file
    while the session is made). QNN runs its part as one fused node: "QNN graph nodes" counts the ONNX
    nodes (QDQ included) it took, "QNN refused" those it did not (absent when a cached context is read)."""
    session, text = verbose_log(make_session, so)
    placed = {ep: int(n) for ep, n in re.findall(r"placed on \[(\w+)\]\. Number of nodes: (\d+)", text)}
    for key, word in (("QNN graph nodes", "PASSED"), ("QNN refused", "FAILED")):
        n = sum(int(k) for k in re.findall(rf"Validation {word} for (\d+) nodes", text))
        if n:
            placed[key] = n
    return session, placed


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


__all__ = ["NpuEngine", "qnn_provider", "cache_path", "placed_nodes"]
