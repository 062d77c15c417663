"""Tokenizer, chat template and streaming detokenizer for an artifact (no transformers needed)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from edgecpm.contract import Manifest, UserError


class Tokenizer:
    """tokenizers' Tokenizer (tokenizer.json) or sentencepiece (tokenizer.model), plus the chat template."""

    def __init__(self, folder: Path, manifest: Manifest):
        self.manifest = manifest
        tj, sp = folder / "tokenizer.json", folder / "tokenizer.model"
        if tj.is_file():
            from tokenizers import Tokenizer as HFTokenizer

            self._tok = HFTokenizer.from_file(str(tj))
            self._encode = lambda s: self._tok.encode(s, add_special_tokens=False).ids
            self._decode = lambda ids: self._tok.decode(ids, skip_special_tokens=False)
            self.id_to_token = self._tok.id_to_token
        elif sp.is_file():
            import sentencepiece

            self._tok = sentencepiece.SentencePieceProcessor(model_file=str(sp))
            self._encode = self._tok.encode
            self._decode = self._tok.decode
            self.id_to_token = self._tok.id_to_piece
        else:
            raise UserError(f"{folder} has no tokenizer.json or tokenizer.model; re-export the artifact")
        cfg_path = folder / "tokenizer_config.json"
        self.config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        t = manifest.tokenizer
        self.bos_token_id = t.get("bos_token_id")
        self.eos_token_ids = set(t.get("eos_token_ids") or [])
        self.add_bos = bool(t.get("add_bos_token"))
        self._template = None

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = list(self._encode(text))
        if (self.add_bos if add_bos is None else add_bos) and self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        return ids

    def decode(self, ids) -> str:
        return self._decode(list(ids))

    def _token_str(self, tid) -> str:
        return self.id_to_token(tid) if tid is not None else ""

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render the artifact's chat template (jinja2, sandboxed, as transformers does)."""
        if not self.manifest.chat_template:
            raise UserError("this artifact has no chat template; use `edgecpm generate` for raw text")
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(msg):
                raise UserError(f"chat template: {msg}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
            env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
            env.globals.update(raise_exception=raise_exception,
                               strftime_now=lambda fmt: datetime.now().strftime(fmt))
            self._template = env.from_string(self.manifest.chat_template)
        eos = next(iter(sorted(self.eos_token_ids)), None)
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     bos_token=self._token_str(self.bos_token_id), eos_token=self._token_str(eos))

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation rendered with the template (BOS comes from the template)."""
        return self.encode(self.apply_chat_template(messages), add_bos=False)


class StreamingDetokenizer:
    """Turns tokens into text deltas; never emits a split UTF-8 character (held until complete).

    Decodes only the tokens since the last emitted boundary, so each step costs O(1) in the text length.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.tokens: list[int] = []
        self.prefix = 0  # tokens before this index are already emitted as text
        self.read = 0
        self.text = ""

    def add(self, token: int) -> str:
        """Add a token; return the new, complete text (possibly "")."""
        self.tokens.append(token)
        prev = self.tok.decode(self.tokens[self.prefix : self.read])
        cur = self.tok.decode(self.tokens[self.prefix :])
        if len(cur) > len(prev) and not cur.endswith("\ufffd"):
            delta = cur[len(prev) :]
            self.prefix, self.read = self.read, len(self.tokens)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back (end of generation)."""
        cur = self.tok.decode(self.tokens[self.prefix :])
        prev = self.tok.decode(self.tokens[self.prefix : self.read])
        delta = cur[len(prev) :]
        self.prefix = self.read = len(self.tokens)
        self.text += delta
        return delta
