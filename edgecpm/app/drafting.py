"""Which drafter speculative decoding uses (`--draft ngram`, `--draft-model ARTIFACT`), made once
per router and checked against the target before anything is generated."""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgecpm.contract import UserError


def _tokenizer_digest(engine) -> str:
    """A hash of the artifact's tokenizer files: two artifacts draft for each other only if equal."""
    h = hashlib.sha256()
    for name in engine.manifest.tokenizer.get("files", []):
        p = Path(engine.folder) / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def make_drafter(draft: str | None, draft_model: str | None, target, threads: int | None = None):
    """The Drafter for the target Engine, or None. `draft` is "ngram" (prompt lookup) or None;
    `draft_model` an artifact folder with the target's tokenizer (it gets the target's context)."""
    from edgecpm.runtime.speculate import ModelDrafter, NgramDrafter

    if draft is not None and draft_model is not None:
        raise UserError("give either --draft ngram or --draft-model ARTIFACT, not both")
    if draft is not None:
        if draft != "ngram":
            raise UserError(f"--draft {draft!r} is unknown; use --draft ngram, or --draft-model ARTIFACT")
        return NgramDrafter()
    if draft_model is None:
        return None
    from edgecpm.runtime import load

    if not Path(draft_model).is_dir():
        raise UserError(f"--draft-model {draft_model} is not an artifact folder; pass one made by edgecpm export")
    engine, _ = load(draft_model, context=target.ctx, threads=threads)
    if engine.vocab_size != target.vocab_size or _tokenizer_digest(engine) != _tokenizer_digest(target):
        raise UserError(f"--draft-model {draft_model} has another tokenizer than the model it drafts for; "
                        "pass an artifact exported from the same model family")
    return ModelDrafter(engine)
