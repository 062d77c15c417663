"""The decoder skeleton shared by every architecture: embedding -> layers -> norm -> lm_head.

An architecture module supplies `LAYERS` (layer type -> mixer builder) and optionally `mlp`; the
skeleton wires residuals through SkipSimplifiedLayerNormalization and keeps only the positions in
`logits_indices` for the lm_head (a 250k vocabulary makes full-sequence logits as costly as the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnx import TensorProto

from edgecpm.contract import INPUT_IDS, LOGITS, LOGITS_INDICES, SEQLENS_K, TOTAL_SEQ_LEN, UserError
from edgecpm.export.blocks import F32, I32, I64, Ctx, add_rms_norm, embedding, linear, swiglu_mlp


@dataclass
class Args:
    """Architecture hyper-parameters read from an HF config (the names stay HF's where they exist)."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    layer_types: list[str]
    max_position_embeddings: int
    tie_word_embeddings: bool
    cfg: dict = field(repr=False, default_factory=dict)  # the whole HF config
    embed_name: str = "model.embed_tokens.weight"
    prefix: str = "model"  # where the decoder's tensors live in the checkpoint
    extra: dict = field(default_factory=dict)  # architecture-specific values

    @classmethod
    def from_config(cls, cfg: dict, default_layer: str = "full_attention", **extra) -> Args:
        def num(key, default=None, kind=int):
            v = cfg.get(key, default)
            if v is None:
                raise UserError(f"config.json lacks {key!r}; it is not a complete {cfg.get('model_type')} config")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)):
                what = "an integer" if kind is int else "a number"
                raise UserError(f"config.json has {key} = {v!r}; it must be {what} (fix config.json)")
            return kind(v)

        heads, hidden, layers = num("num_attention_heads"), num("hidden_size"), num("num_hidden_layers")
        types = cfg.get("layer_types") or [default_layer] * max(layers, 0)
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise UserError("config.json's layer_types must be a list of strings (fix config.json)")
        return cls(
            model_type=cfg.get("model_type"), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            num_key_value_heads=num("num_key_value_heads", heads) if cfg.get("num_key_value_heads") else heads,
            head_dim=num("head_dim") if cfg.get("head_dim") else (hidden // heads if heads > 0 else 0),
            intermediate_size=num("intermediate_size", 0) if cfg.get("intermediate_size") else 0,
            vocab_size=num("vocab_size"), rms_norm_eps=num("rms_norm_eps", 1e-6, float), layer_types=list(types),
            max_position_embeddings=num("max_position_embeddings", 4096),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), cfg=cfg, extra=extra,
        )

    def __post_init__(self):
        sizes = {"hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
                 "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
                 "head_dim": self.head_dim, "vocab_size": self.vocab_size,
                 "max_position_embeddings": self.max_position_embeddings}
        for key, v in sizes.items():
            if v <= 0:
                raise UserError(f"config.json has {key} = {v}; it must be a positive integer (fix config.json)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError(f"config.json has num_attention_heads {self.num_attention_heads} not divisible by "
                            f"num_key_value_heads {self.num_key_value_heads}; fix config.json")
        if len(self.layer_types) != self.num_hidden_layers:
            raise UserError(f"config.json lists {len(self.layer_types)} layer_types for {self.num_hidden_layers} "
                            "layers; fix config.json")


def check_layer_types(args: Args, known) -> None:
    unknown = sorted(set(args.layer_types) - set(known))
    if unknown:
        raise UserError(f"{args.model_type}: layer type {unknown[0]!r} is not supported; "
                        f"supported layer types: {', '.join(sorted(known))}")


def graph_inputs(c: Ctx) -> tuple[str, str]:
    """Declare the contract's step inputs; returns (input_ids, logits_indices)."""
    g = c.g
    ids = g.input(INPUT_IDS, I64, ["batch", "S"])
    c.seqlens_k = g.input(SEQLENS_K, I32, ["batch"])
    c.total_len = g.input(TOTAL_SEQ_LEN, I32, [])
    return ids, g.input(LOGITS_INDICES, I64, ["n"])


def default_mlp(c: Ctx, a: Args, i: int, x: str) -> str:
    p = f"{a.prefix}.layers.{i}.mlp"
    return swiglu_mlp(c, x, c.w[f"{p}.gate_proj.weight"], c.w[f"{p}.up_proj.weight"],
                      c.w[f"{p}.down_proj.weight"], p)


def prenorm_block(c: Ctx, a: Args, i: int, x: str, residual: str | None, mixer, mlp, norms) -> tuple[str, str]:
    """x, residual -> norm -> mixer -> (+) norm -> mlp; the adds are fused into the norms."""
    lp, w = f"{a.prefix}.layers.{i}", c.w
    n, residual = add_rms_norm(c, x, residual, w[f"{lp}.{norms[0]}.weight"], a.rms_norm_eps, f"{lp}.{norms[0]}")
    x = mixer(c, a, i, n)
    n, residual = add_rms_norm(c, x, residual, w[f"{lp}.{norms[1]}.weight"], a.rms_norm_eps, f"{lp}.{norms[1]}")
    return mlp(c, a, i, n), residual


def build(c: Ctx, a: Args, layers: dict, mlp=default_mlp, norms=("input_layernorm", "post_attention_layernorm"),
          final_norm: str = "norm", block=None, progress=None) -> None:
    """embedding -> blocks -> norm -> gather(logits_indices) -> lm_head.

    block(c, a, i, x, residual) -> (x, residual) replaces the pre-norm block (e.g. MiniMax's
    scaled residuals); it may return residual None when x already holds the whole hidden state.
    """
    g, w, p = c.g, c.w, a.prefix
    ids, idx = graph_inputs(c)
    x = embedding(c, ids, w[a.embed_name], c.q.embed_bits)  # [1, S, hidden]
    residual = None
    for i, kind in enumerate(a.layer_types):
        if block is not None:
            x, residual = block(c, a, i, x, residual)
        else:
            x, residual = prenorm_block(c, a, i, x, residual, layers[kind], mlp, norms)
        if progress:
            progress()
    n, _ = add_rms_norm(c, x, residual, w[f"{p}.{final_norm}.weight"], a.rms_norm_eps, f"{p}.{final_norm}")
    n = g.op("Gather", n, idx, name="logits_positions", axis=1)  # [1, n, hidden]
    logits = linear(c, n, w["lm_head.weight"], "lm_head", bits=c.q.lm_head_bits)  # [1, n, vocab]
    g.output(logits, LOGITS, TensorProto.FLOAT, ["batch", "n", a.vocab_size])


__all__ = ["Args", "build", "prenorm_block", "check_layer_types", "default_mlp", "graph_inputs", "F32"]
