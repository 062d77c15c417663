"""The runtime: loads an artifact and generates. Imports only onnxruntime, numpy, tokenizers/sentencepiece,
jinja2 and the CLI's libraries (no torch, transformers or onnx)."""

from __future__ import annotations

from pathlib import Path

from edgecpm.runtime.chat import ChatSession
from edgecpm.runtime.engine import Engine
from edgecpm.runtime.generate import GenerationResponse, generate, stream_generate
from edgecpm.runtime.tokenizer import Tokenizer


def load(artifact: str | Path | None = None, context: int | None = None, providers: list[str] | None = None,
         threads: int | None = None, verify: bool = True, recurrent_kernel: str = "auto",
         report_placement: bool = False) -> tuple[Engine, Tokenizer]:
    """(engine, tokenizer) for an artifact; None = the default model (exported on first use)."""
    if artifact is None:
        from edgecpm.defaults import default_artifact

        artifact = default_artifact()
    engine = Engine(artifact, context=context, providers=providers, threads=threads, verify=verify,
                    recurrent_kernel=recurrent_kernel, report_placement=report_placement)
    return engine, Tokenizer(engine.folder, engine.manifest)


__all__ = ["ChatSession", "Engine", "GenerationResponse", "Tokenizer", "generate", "load", "stream_generate"]
