"""The runtime: loads an artifact and generates. Imports only onnxruntime, numpy, tokenizers/sentencepiece
and jinja2 (no torch, transformers, onnx, the exporter or the app layer); a test reads the imports."""

from __future__ import annotations

from pathlib import Path

from edgecpm.contract import Manifest, load_manifest
from edgecpm.runtime.chat import ChatSession
from edgecpm.runtime.engine import Engine
from edgecpm.runtime.generate import GenerationResponse, generate, stream_generate
from edgecpm.runtime.npu import NpuEngine
from edgecpm.runtime.tokenizer import Tokenizer


def load(artifact: str | Path, context: int | None = None, providers: list[str] | None = None,
         threads: int | None = None, verify: bool = True, recurrent_kernel: str = "auto",
         report_placement: bool = False, manifest: Manifest | None = None) -> tuple[Engine, Tokenizer]:
    """(engine, tokenizer) for the artifact folder `artifact`; `manifest`, when the caller already read
    it with load_manifest, is not read again. An NPU artifact (target "npu") gets the NpuEngine."""
    manifest = manifest or load_manifest(artifact, verify=verify)
    cls = NpuEngine if manifest.target == "npu" else Engine
    engine = cls(artifact, context=context, providers=providers, threads=threads, verify=verify,
                 recurrent_kernel=recurrent_kernel, report_placement=report_placement, manifest=manifest)
    return engine, Tokenizer(engine.folder, engine.manifest)


__all__ = ["ChatSession", "Engine", "NpuEngine", "GenerationResponse", "Tokenizer", "generate", "load",
           "stream_generate"]
