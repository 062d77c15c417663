"""NPU layer builders: HF `model_type` -> module (one file each, named after the model_type).

Each module provides LAYERS (layer type -> builder(c, a, i, x) -> x) and optionally MLP-replacing
`mlp`, NORMS and FINAL_NORM, or a whole `block`; model_args and sanitize stay the CPU exporter's
(edgecpm/export/models/).
"""

from __future__ import annotations

import importlib

from edgecpm.contract import UserError

ARCHITECTURES = {
    "llama": "edgecpm.export.npu.models.llama",
    "lfm2": "edgecpm.export.npu.models.lfm2",
    "minimax": "edgecpm.export.npu.models.minimax",
    "qwen3_5_text": "edgecpm.export.npu.models.qwen3_5_text",
    "qwen3_5": "edgecpm.export.npu.models.qwen3_5_text",
}


def get_npu_architecture(model_type: str | None):
    if model_type not in ARCHITECTURES:
        raise UserError(f"--target npu does not support model_type {model_type!r} yet; supported: "
                        f"{', '.join(sorted(ARCHITECTURES))} (or export without --target npu)")
    return importlib.import_module(ARCHITECTURES[model_type])
