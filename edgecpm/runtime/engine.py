"""The engine: one onnxruntime session over an artifact, its state buffers, and `step()`.

It never looks at the model type: everything it needs comes from the manifest.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgecpm.contract import (
    INPUT_IDS,
    LOGITS,
    LOGITS_INDICES,
    MODEL_FILE,
    SEQLENS_K,
    TOTAL_SEQ_LEN,
    WEIGHTS_FILE,
    Manifest,
    UserError,
    load_manifest,
)
from edgecpm.ops import kernels
from edgecpm.runtime.memory import RELEASE_EVERY, WeightsMap, file_mappings, release_file_pages
from edgecpm.runtime.state import State

PROVIDERS = {
    "cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider", "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider", "qnn": "QNNExecutionProvider", "cuda": "CUDAExecutionProvider",
}


def resolve_providers(requested: list[str] | None, log=print) -> list[str]:
    """Map short names to ORT providers; drop (with a printed reason) the ones this onnxruntime lacks."""
    available = ort.get_available_providers()
    out = []
    for name in requested or ["cpu"]:
        full = PROVIDERS.get(name.lower(), name)
        if full in available:
            out.append(full)
        else:
            log(f"execution provider {name} is not available in this onnxruntime; falling back to CPU")
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def verbose_log(make_session, so: ort.SessionOptions) -> tuple[ort.InferenceSession, str]:
    """(session, onnxruntime's verbose log while it was made), read by sending stderr to a
    temporary file meanwhile."""
    import os
    import tempfile

    so.log_severity_level, so.log_verbosity_level = 0, 1
    with tempfile.TemporaryFile("w+b") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            session = make_session()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            so.log_severity_level = 3
        tmp.seek(0)
        return session, tmp.read().decode(errors="replace")


def placement(make_session, so: ort.SessionOptions):
    """(session, {provider: nodes}) from onnxruntime's own node-placement log."""
    import re

    session, text = verbose_log(make_session, so)
    found = re.findall(r"placed on \[(\w+)\]\. Number of nodes: (\d+)", text)
    return session, {ep: int(n) for ep, n in found}


class Engine:
    """Loads an artifact and runs steps of tokens through it, keeping the state in place."""

    def __init__(self, artifact: str | Path, context: int | None = None, providers: list[str] | None = None,
                 threads: int | None = None, verify: bool = True, log=None, recurrent_kernel: str = "auto",
                 report_placement: bool = False, manifest: Manifest | None = None):
        self.folder = Path(artifact)
        self.log = log or (lambda m: print(m, file=sys.stderr))
        self.manifest: Manifest = manifest or load_manifest(self.folder, verify=verify)
        m = self.manifest
        if m.target != "cpu":  # static QDQ graphs, no model.onnx: edgecpm.runtime.npu
            raise UserError(f"{self.folder} is an NPU artifact; load it with edgecpm.runtime.load (NpuEngine)")
        self.ctx = m.runtime_context(context)
        self.kernel = kernels.choose(recurrent_kernel) if m.operators else None
        self.placement: dict[str, int] | None = None  # provider -> nodes it runs (report_placement)
        wanted = resolve_providers(providers, self.log)
        self.weights = WeightsMap.open(self.folder / WEIGHTS_FILE, ort.__version__)  # None: ORT maps it
        if self.weights is not None:  # our mapping, used in place: its pages go back while the load runs
            with self.weights.releasing():
                self.session = self._open(wanted, threads, report_placement)
            self.session.edgecpm_weights = self.weights  # unmapped only after the session (set after _sess)
        else:
            before = file_mappings(self.folder / WEIGHTS_FILE)  # other sessions' mappings: never advised
            self.session = self._open(wanted, threads, report_placement)
            release_file_pages(self.folder / WEIGHTS_FILE, before)  # repacked at load: the pages go back
        self.providers = self.session.get_providers()
        for p in wanted:  # e.g. a plugin EP (QNN) named in the list, which onnxruntime then ignores
            if p not in self.providers:
                self.log(f"execution provider {p} did not take the model (an NPU needs an `--target npu` "
                         "artifact); falling back to CPU")
        self.state = State(m.state, self.ctx)
        self.io = self.session.io_binding()
        self.shrink = ort.RunOptions()  # prefill-sized steps give their activation memory back afterwards
        self.shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.io.bind_output(LOGITS, "cpu")  # bound first: get_outputs()[0] is the logits
        self.state.bind_kv(self.io)

    def _open(self, providers: list[str], threads: int | None, report: bool = False) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if self.weights is not None:
            self.weights.attach(so)
        path = str(self.folder / MODEL_FILE)
        model = self._model(path, so)
        def create(provs: list[str]) -> ort.InferenceSession:
            if not report:
                return ort.InferenceSession(model, so, providers=provs)
            probe, self.placement = placement(lambda: ort.InferenceSession(model, so, providers=provs), so)
            self.log("nodes per execution provider: " + ", ".join(f"{k} {v}" for k, v in self.placement.items()))
            del probe  # it would log verbosely on every run: the session used is made quietly
            return ort.InferenceSession(model, so, providers=provs)

        try:
            return create(providers)
        except Exception as e:  # a provider may refuse the model: retry on CPU, say why
            if providers == ["CPUExecutionProvider"]:
                raise UserError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
            self.log(f"{providers[0]} refused the model ({str(e).splitlines()[0]}); falling back to CPU")
            return create(["CPUExecutionProvider"])

    def _model(self, path: str, so: ort.SessionOptions) -> str | bytes:
        """The model to open: the file itself, or its graph with the ai.edgecpm ops moved to the
        kernel chosen for them (see edgecpm.ops.kernels)."""
        k = self.kernel
        if k is None or k.kind == "function":
            return path
        if k.kind == "native":
            so.register_custom_ops_library(k.library)
            return path
        data, _ = kernels.retarget(Path(path).read_bytes())
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(self.folder))
        return data

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    def step(self, tokens, logits_at: list[int] | None = None) -> np.ndarray:
        """Feed `tokens` after the current state; return logits [n, vocab] at positions `logits_at`
        of this step (default: the last one)."""
        st = self.state
        ids = np.asarray(tokens, np.int64).reshape(1, -1)  # [1, S]
        S = ids.shape[1]
        total = st.pos + S
        if total > self.ctx:
            raise UserError(f"{total} tokens exceed the context of {self.ctx}; start a new chat (/reset) "
                            "or load with a larger --context")
        idx = np.asarray([S - 1] if logits_at is None else logits_at, np.int64)  # [n]
        io = self.io
        io.bind_cpu_input(INPUT_IDS, ids)
        io.bind_cpu_input(SEQLENS_K, np.array([total - 1], np.int32))  # [1]
        io.bind_cpu_input(TOTAL_SEQ_LEN, np.array(total, np.int32))  # []
        io.bind_cpu_input(LOGITS_INDICES, idx)
        io.bind_output(LOGITS, "cpu")  # [1, n, vocab]: n varies, so ORT allocates it anew
        st.bind_fixed(io)
        many = self.weights is not None and S >= RELEASE_EVERY  # its lookups map many folios: release meanwhile
        with self.weights.releasing() if many else contextlib.nullcontext():
            self.session.run_with_iobinding(io, self.shrink if S >= 32 else None)
        if self.weights is not None:
            self.weights.fed(S)
        st.advance(ids[0])
        return io.get_outputs()[0].numpy()[0]  # [n, vocab]

    def prefill(self, tokens, chunk: int = 512) -> np.ndarray:
        """Feed tokens in chunks; return the logits [vocab] after the last one.

        No chunk but a lone token is ever a single row: GroupQueryAttention's one-row path (the decode
        step) rounds differently from its many-row path (~1e-7), and MatMulNBits' int8 activations
        (accuracy_level 4) grow that to up to 1.6 logits on the default int4 model, so a 1-row last
        chunk would give other logits than a one-pass prefill. Chunks of >= 2 rows reproduce a
        one-pass prefill exactly, wherever the splits fall."""
        tokens = list(tokens)
        if not tokens:
            raise ValueError("prefill needs at least one token")
        if self.state.pos + len(tokens) > self.ctx:
            raise UserError(f"the prompt ({self.state.pos + len(tokens)} tokens) exceeds the context of "
                            f"{self.ctx}; shorten it or load with a larger --context")
        bounds = list(range(0, len(tokens), chunk)) + [len(tokens)]
        if chunk > 1 and len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            bounds[-2] -= 1  # [.., 512, 1] -> [.., 511, 2]
        for a, b in zip(bounds, bounds[1:]):
            logits = self.step(tokens[a:b])
        return logits[-1]

    def reset(self) -> None:
        self.state.reset()
