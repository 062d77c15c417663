"""Tokenizer files for an artifact.

From an HF folder the files are copied. From a GGUF file a `tokenizers` byte-level BPE is built from
its metadata (vocabulary, merges, control tokens, pre-tokenizer). tokenizer_config.json always
names a classic class (GPT2Tokenizer / LlamaTokenizer): the on-device C tokenizer in
onnxruntime-extensions refuses transformers-5's "TokenizersBackend".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgecpm.contract import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja")

# llama.cpp pre-tokenizer names -> split regex; GPT-2's ByteLevel regex is the default.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_SPLITS = {"llama3": _LLAMA3, "llama-bpe": _LLAMA3, "smaug-bpe": _LLAMA3}
DIGIT_SPLIT = {"smollm", "starcoder", "refact"}  # GPT-2 regex after splitting every digit


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    if pre in PRE_SPLITS:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRE_SPLITS[pre]), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in DIGIT_SPLIT:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    return byte_level


def gguf_tokenizer(reader):
    """A tokenizers.Tokenizer from a GGUF's byte-level BPE metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    fields = reader.fields
    kind = fields["tokenizer.ggml.model"].contents()
    if kind != "gpt2":
        raise UserError(f"GGUF tokenizer model {kind!r} is not supported yet (byte-level BPE 'gpt2' is)")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, ignore_merges=False))
    pre = fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else "default"
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3]
    tok.add_special_tokens(control)
    return tok


def write_gguf_tokenizer(reader, out: Path, chat_template: str | None, bos: int | None, eos: int | None) -> None:
    tok = gguf_tokenizer(reader)
    tok.save(str(out / "tokenizer.json"))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    add_bos = bool(reader.fields["tokenizer.ggml.add_bos_token"].contents()) \
        if "tokenizer.ggml.add_bos_token" in reader.fields else False
    cfg = {"tokenizer_class": "GPT2Tokenizer", "add_bos_token": add_bos, "clean_up_tokenization_spaces": False,
           "bos_token": tokens[bos] if bos is not None else None,
           "eos_token": tokens[eos] if eos is not None else None, "model_max_length": 1 << 30}
    if chat_template:
        cfg["chat_template"] = chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def copy_hf_tokenizer(src: Path, out: Path) -> None:
    if not (src / "tokenizer.json").is_file() and not (src / "tokenizer.model").is_file():
        raise UserError(f"{src} has no tokenizer.json or tokenizer.model; add the tokenizer files to the checkpoint")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    if cfg.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
        cfg["tokenizer_class"] = "LlamaTokenizer" if (src / "tokenizer.model").is_file() else "GPT2Tokenizer"
    if "chat_template" not in cfg and (src / "chat_template.jinja").is_file():
        cfg["chat_template"] = (src / "chat_template.jinja").read_text()
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
