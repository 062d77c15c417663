"""Tiny random Mamba2 hybrids (Falcon-H1, Granite-4.0-H, Nemotron-H) and Qwen3-Next, made with
transformers' own classes. Multipliers are set away from 1 and norms, D, dt_bias and A_log get
random values, so a missed multiplier or a wrong head/group mapping shows in the logits."""

from __future__ import annotations

from conftest import HYBRID, boost, write_tokenizer

SSM = dict(mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4)
KINDS = ("granitemoehybrid", "falcon_h1", "nemotron_h", "qwen3_next")


def _granite(tf, dense: bool = False):
    """dense: no routed experts and rotary attention (as Granite-4.0-H-Micro)."""
    cfg = tf.GraniteMoeHybridConfig(
        **HYBRID, **SSM, layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention"],
        num_local_experts=0 if dense else 4, num_experts_per_tok=2, shared_intermediate_size=64,
        embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=2.0,
        position_embedding_type="rope" if dense else "nope", tie_word_embeddings=True)
    cfg.intermediate_size = 32  # expert width (a multiple of the int4 group)
    return tf.GraniteMoeHybridForCausalLM(cfg)


def _falcon(tf, rms_norm: bool = False):
    ssm = {k: v for k, v in SSM.items() if k != "mamba_d_head"}
    cfg = tf.FalconH1Config(
        **HYBRID, **ssm, mamba_d_ssm=128, mamba_rms_norm=rms_norm, mamba_norm_before_gate=True,
        embedding_multiplier=1.5, lm_head_multiplier=2.0, mlp_multipliers=[0.8, 1.2], key_multiplier=0.7,
        attention_in_multiplier=1.1, attention_out_multiplier=0.9, ssm_multipliers=[1.1, 0.9, 1.2, 0.8, 1.3],
        ssm_in_multiplier=0.6, ssm_out_multiplier=1.4, tie_word_embeddings=False)
    return tf.FalconH1ForCausalLM(cfg)


def _nemotron(tf):
    base = {k: v for k, v in HYBRID.items() if k not in ("num_hidden_layers", "rms_norm_eps")}
    types = ["linear_attention", "mlp", "full_attention", "mlp", "linear_attention", "mlp"]
    return tf.NemotronHForCausalLM(tf.NemotronHConfig(
        **base, layers_block_type=types, mamba_num_heads=8, mamba_head_dim=16, n_groups=2, ssm_state_size=16,
        conv_kernel=4, layer_norm_epsilon=1e-5))


def _qwen3_next(tf):
    gdn = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
               linear_conv_kernel_dim=4)
    moe = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
               decoder_sparse_step=1, mlp_only_layers=[2], norm_topk_prob=True)
    cfg = tf.Qwen3NextConfig(**{**HYBRID, "head_dim": 64}, **gdn, **moe, tie_word_embeddings=False)
    return tf.Qwen3NextForCausalLM(cfg)


def make(kind: str, folder):
    """Build (seed 0), perturb, boost and save a tiny model with a tokenizer; returns the torch model."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    builders = {"granitemoehybrid": _granite, "falcon_h1": _falcon, "nemotron_h": _nemotron,
                "qwen3_next": _qwen3_next, "falcon_h1_norm": lambda t: _falcon(t, rms_norm=True),
                "granitemoehybrid_dense": lambda t: _granite(t, dense=True)}
    model = builders[kind](tf).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith((".D", ".dt_bias", ".A_log")):
                p.add_(torch.randn_like(p) * 0.2)
    boost(model, 12.0 if kind == "qwen3_next" else 8.0)  # Qwen3-Next's read-out needs more for a margin
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return model
