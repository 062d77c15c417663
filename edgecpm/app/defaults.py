"""Where artifacts come from when the user names none: the embedded default model, exported once into
$EDGECPM_HOME (default ~/.cache/edgecpm). The one place the default artifact is resolved."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgecpm.contract import MANIFEST


def models_dir() -> Path:
    """Where default artifacts live: $EDGECPM_HOME, else ~/.cache/edgecpm."""
    return Path(os.environ.get("EDGECPM_HOME") or Path.home() / ".cache" / "edgecpm")


def default_artifact(q_bits: int | None = None) -> Path:
    """The default model's artifact folder, exported on first use: its GGUF blocks carried over
    exactly (q_bits None), or re-quantized to q_bits."""
    out = models_dir() / f"smollm2-135m-instruct-{'gguf' if q_bits is None else f'q{q_bits}'}"
    if not (out / MANIFEST).is_file():
        from edgecpm.export import export

        what = "its GGUF blocks kept" if q_bits is None else f"{q_bits}-bit"
        print(f"first use: exporting the default model (SmolLM2-135M-Instruct, {what}) to {out}", file=sys.stderr)
        export(None, str(out), q_bits=q_bits)
    return out


def resolve_artifact(artifact: str | Path | None) -> Path:
    """The artifact a command runs: the one named, else the default model's."""
    return Path(artifact) if artifact else default_artifact()
