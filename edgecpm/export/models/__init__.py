"""Architecture registry: HF `model_type` -> module (one file each, named after the model_type).

Each module provides:
    model_args(cfg: dict) -> decoder.Args
    sanitize(name, array, args, source_kind) -> array   # all checkpoint surgery, per tensor
    build(c: blocks.Ctx, args, progress) -> None        # writes the graph
"""

from __future__ import annotations

import importlib

from edgecpm.contract import UserError

ARCHITECTURES = {
    "llama": "edgecpm.export.models.llama",
    "qwen3": "edgecpm.export.models.qwen3",
    "minicpm": "edgecpm.export.models.minicpm",
    "qwen3_5_text": "edgecpm.export.models.qwen3_5_text",
    "qwen3_5": "edgecpm.export.models.qwen3_5_text",  # Qwen3_5ForConditionalGeneration: its text stack
    "lfm2": "edgecpm.export.models.lfm2",
    "minimax": "edgecpm.export.models.minimax",
    "granitemoehybrid": "edgecpm.export.models.granitemoehybrid",
    "falcon_h1": "edgecpm.export.models.falcon_h1",
    "nemotron_h": "edgecpm.export.models.nemotron_h",
    "qwen3_next": "edgecpm.export.models.qwen3_next",
}


def get_architecture(model_type: str | None):
    if model_type not in ARCHITECTURES:
        raise UserError(f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}")
    return importlib.import_module(ARCHITECTURES[model_type])
