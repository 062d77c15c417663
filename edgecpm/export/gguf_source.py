"""A GGUF file as a checkpoint source: config and tensor names mapped to HF's, tensors dequantized
one at a time (the file stays memory-mapped).

Only naming lives here; architecture surgery (e.g. undoing llama.cpp's q/k row permutation) is the
architecture's sanitize().
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgecpm.contract import UserError, sha256_file

# llama.cpp tensor name -> HF name ({i} = layer index)
TENSOR_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_PATTERNS = [(re.compile("^" + re.escape(k).replace(r"\{i\}", r"(\d+)") + "$"), v) for k, v in TENSOR_NAMES.items()]

# GGUF metadata key (after "<arch>.") -> HF config key
CONFIG_KEYS = {
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.key_length": "head_dim",
    "rope.freq_base": "rope_theta",
}
ARCHS = {"llama": "llama", "qwen3": "qwen3"}  # GGUF general.architecture -> HF model_type


def hf_name(gguf_name: str) -> str | None:
    for pat, target in _PATTERNS:
        m = pat.match(gguf_name)
        if m:
            return target.format(i=m.group(1)) if m.groups() else target
    return None


class GGUFSource:
    kind = "gguf"

    def __init__(self, path: Path):
        from gguf import GGUFReader

        self.path = path
        try:
            self.reader = GGUFReader(str(path))
        except Exception as e:  # gguf raises ValueError / struct errors on a cut file
            raise UserError(f"{path} is not a readable GGUF file ({e}); re-download it") from None
        self.meta = {k: self._value(k) for k in self.reader.fields if not k.startswith("tokenizer.ggml.")}
        arch = self.meta.get("general.architecture")
        if arch not in ARCHS:
            raise UserError(f"GGUF architecture {arch!r} is not supported; supported: {sorted(ARCHS)}")
        self.tensors = {}
        for t in self.reader.tensors:
            name = hf_name(t.name)
            if name is None:
                raise UserError(f"GGUF tensor {t.name} has no known HF name; this {arch} file is not supported")
            self.tensors[name] = t
        self.config = self._config(arch)

    def _value(self, key: str):
        f = self.reader.fields[key]
        return f.contents()

    def _config(self, arch: str) -> dict:
        cfg = {"model_type": ARCHS[arch], "architectures": [f"{ARCHS[arch].capitalize()}ForCausalLM"]}
        for k, v in CONFIG_KEYS.items():
            if f"{arch}.{k}" in self.meta:
                cfg[v] = self.meta[f"{arch}.{k}"]
        tokens = self.reader.fields["tokenizer.ggml.tokens"]
        cfg["vocab_size"] = int(self.meta.get(f"{arch}.vocab_size", len(tokens.data)))
        cfg["tie_word_embeddings"] = "lm_head.weight" not in self.tensors
        for k in ("bos_token_id", "eos_token_id"):
            if f"tokenizer.ggml.{k}" in self.reader.fields:
                cfg[k] = int(self.reader.fields[f"tokenizer.ggml.{k}"].contents())
        return cfg

    def names(self) -> set[str]:
        return set(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        """HF-orientation shape [out, in] (GGUF lists dimensions innermost first)."""
        return tuple(int(d) for d in reversed(self.tensors[name].shape))

    def get(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self.tensors[name]
        return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)  # HF orientation [out, in]

    def blocks(self, name: str):
        """The tensor in its own blocks (gguf_blocks.BlockWeight, exact), or None for a type with no
        MatMulNBits layout (F32/F16/BF16 and IQ*/Q2_K/Q3_K/...: those are read as floats)."""
        from edgecpm.export.gguf_blocks import FORMATS, carry

        t = self.tensors[name]
        kind = t.tensor_type.name
        if kind not in FORMATS or len(t.shape) != 2:
            return None
        return carry(np.asarray(t.data).reshape(int(t.shape[1]), -1), kind, int(t.shape[0]))

    def type_name(self, name: str) -> str:
        return self.tensors[name].tensor_type.name

    def sha256(self) -> str:
        return sha256_file(self.path)
