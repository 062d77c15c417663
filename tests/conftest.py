"""Tiny random models made with transformers' own classes, saved to tmp folders, exported once per session."""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# The default artifact is exported once per test run into a temp folder: tests never write into the repo.
if "EDGECPM_HOME" not in os.environ:
    os.environ["EDGECPM_HOME"] = tempfile.mkdtemp(prefix="edgecpm-test-home-")
    atexit.register(shutil.rmtree, os.environ["EDGECPM_HOME"], True)

VOCAB = 320  # 256 byte tokens + merges + specials
TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_tokenizer(folder: Path) -> None:
    """A small byte-level BPE trained on a few sentences, with chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = ["The capital of France is Paris.", "Hello world, how are you today?", "def f(x): return x + 1"] * 20
    tok.train_from_iterator(text, trainer)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
           "chat_template": TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))


def boost(model, factor: float = 8.0) -> None:
    """Random init (std 0.02) gives near-flat logits whose argmax flips under any quantization noise.
    Scaling the read-out (embeddings and lm_head) gives the tiny model real logit margins, so top-1
    agreement means something; scaling every layer instead makes the random net chaotic, and then
    any noise, quantization or not, flips the argmax."""
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(factor)
        if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
            model.get_output_embeddings().weight.mul_(factor)


def make_model(kind: str, folder: Path):
    """Build, boost and save a tiny model; returns the torch model that serves as the reference."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**TINY, tie_word_embeddings=False))
    elif kind == "qwen3":
        model = tf.Qwen3ForCausalLM(tf.Qwen3Config(**TINY, head_dim=16, tie_word_embeddings=True))
    elif kind == "minicpm":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**TINY, tie_word_embeddings=True))
    else:
        model = make_hybrid(kind)
    model = model.float().eval()
    boost(model)
    model.save_pretrained(folder)
    write_tokenizer(folder)
    if kind == "minicpm":
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(model_type="minicpm", architectures=["MiniCPMForCausalLM"], scale_emb=12.0, scale_depth=1.4,
                   dim_model_base=16)
        (folder / "config.json").write_text(json.dumps(cfg))
        add_minicpm_hooks(model, cfg)
    return model


HYBRID = dict(TINY, num_hidden_layers=4, head_dim=16)


def make_hybrid(kind: str):
    """Tiny Qwen3.5 / LFM2 / MiniMax (2 experts, or 1 for "minimax1"), 3 linear layers : 1 attention.
    Norm weights get random values: a missed (1 + w) offset or a wrong norm then shows in the logits."""
    import torch
    import transformers as tf

    if kind == "qwen3_5":  # 2 key heads, 4 value heads: the GDN's grouped values; rotary on 1/4 of the head
        gdn = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
                   linear_conv_kernel_dim=4)
        cfg = tf.Qwen3_5TextConfig(**{**HYBRID, "head_dim": 64}, **gdn, tie_word_embeddings=True)
        model = tf.Qwen3_5ForCausalLM(cfg)
    elif kind == "lfm2":
        types = ["conv", "full_attention", "conv", "conv"]
        model = tf.Lfm2ForCausalLM(tf.Lfm2Config(**HYBRID, layer_types=types, conv_L_cache=3, norm_eps=1e-5))
    else:
        experts = 1 if kind == "minimax1" else 2
        types = ["linear_attention"] * 3 + ["full_attention"]
        model = tf.MiniMaxForCausalLM(tf.MiniMaxConfig(**HYBRID, layer_types=types, num_local_experts=experts,
                                                       num_experts_per_tok=1, tie_word_embeddings=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model


def add_minicpm_hooks(model, cfg: dict) -> None:
    """MiniCPM's modeling code is Llama plus three scalings; the reference applies them with hooks."""
    res = cfg["scale_depth"] / math.sqrt(cfg["num_hidden_layers"])
    model.model.embed_tokens.register_forward_hook(lambda m, i, o: o * cfg["scale_emb"])
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(lambda m, i, o: (o[0] * res,) + tuple(o[1:]))
        layer.mlp.register_forward_hook(lambda m, i, o: o * res)
    div = cfg["hidden_size"] / cfg["dim_model_base"]
    model.lm_head.register_forward_pre_hook(lambda m, i: (i[0] / div,))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """tiny(kind, bits) -> (artifact folder, reference torch model); cached per session."""
    from edgecpm.export import export

    cache: dict = {}

    def get(kind: str, bits: int = 32, **kw):
        if kind not in cache:
            folder = tmp_path_factory.mktemp(f"hf-{kind}")
            cache[kind] = (folder, make_model(kind, folder))
        folder, model = cache[kind]
        key = (kind, bits, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("art") / f"{kind}-q{bits}"
            cache[key] = export(str(folder), str(out), q_bits=bits, quiet=True, **kw)
        return cache[key], model

    return get


def torch_logits(model, ids) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].float().numpy()  # [S, vocab]


@pytest.fixture(scope="session")
def carried_default():
    """The default model's default artifact (GGUF blocks carried over), exported once per run."""
    from edgecpm.app.defaults import default_artifact

    return default_artifact()
