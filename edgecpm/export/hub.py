"""Hugging Face Hub model IDs as export sources: `ORG/NAME` (safetensors repo) or `ORG/NAME:QUANT`
(a GGUF file of a GGUF repo, picked as llama.cpp's `-hf` does).

Only what export reads is fetched (config, tokenizer files, safetensors shards; or one .gguf), through
huggingface_hub: its cache (HF_HOME / HF_HUB_CACHE), resumable downloads, HF_TOKEN and progress bars.
Offline (HF_HUB_OFFLINE=1, or no network) the cached snapshot is used when there is one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from edgecpm.contract import UserError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
HF_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
            "special_tokens_map.json", "*.safetensors", "model.safetensors.index.json", "chat_template.jinja"]
DEFAULT_QUANT = "Q4_K_M"  # llama.cpp -hf's default tag


def is_repo_id(source: str) -> bool:
    """`ORG/NAME[:QUANT]` that is not a path on this machine."""
    return bool(REPO_ID.match(source)) and not Path(source.split(":")[0]).exists()


def fetch(source: str, revision: str | None = None) -> Path:
    """The local path export should read for a Hub ID: a snapshot folder, or a .gguf file in it."""
    repo, _, quant = source.partition(":")
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise UserError(f"{source} looks like a Hub model ID; `pip install huggingface_hub` to download it, "
                        "or pass a local folder") from None
    if quant or _is_gguf_repo(repo, revision):
        return _gguf_file(repo, quant or DEFAULT_QUANT, revision)
    return Path(_snapshot(repo, revision, HF_FILES))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _snapshot(repo: str, revision: str | None, patterns: list[str]) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision}" if revision else ""
    try:
        return snapshot_download(repo, revision=revision, allow_patterns=patterns, local_files_only=_offline())
    except GatedRepoError:
        raise UserError(f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise UserError(f"{repo} is not on the Hub (or is private: set HF_TOKEN); check the ID") from None
    except RevisionNotFoundError:
        raise UserError(f"{repo} has no revision {revision!r}; pass an existing --revision") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError):
        raise UserError(f"{repo}{at} is not in the Hub cache and cannot be downloaded (offline); connect, or "
                        "download it elsewhere and pass the local folder (config.json + *.safetensors) or "
                        ".gguf file") from None


def _is_gguf_repo(repo: str, revision: str | None) -> bool:
    """A repo whose name says GGUF (the Hub's convention, `...-GGUF`) is read as one."""
    return repo.lower().endswith("gguf")


def _gguf_file(repo: str, quant: str, revision: str | None) -> Path:
    """The repo's single-file GGUF whose name carries the QUANT tag (case-insensitive)."""
    folder = Path(_snapshot(repo, revision, [f"*{quant}*.gguf", f"*{quant.lower()}*.gguf", f"*{quant.upper()}*.gguf"]))
    tag = re.compile(rf"[-_.]{re.escape(quant)}(?:[-_.]|$)", re.IGNORECASE)
    found = sorted(p for p in folder.rglob("*.gguf") if tag.search(p.stem + "."))
    whole = [p for p in found if not re.search(r"-\d{5}-of-\d{5}$", p.stem)]
    if not whole:
        have = sorted(p.name for p in folder.rglob("*.gguf"))
        split = " (only split files: pass the first shard as a local file)" if found else ""
        raise UserError(f"{repo} has no {quant} GGUF file{split}; available here: {', '.join(have) or 'none'} "
                        f"(pick one with {repo}:QUANT)")
    return whole[0]
