"""The NPU decoder skeleton: embedding -> pre-norm blocks -> norm -> last position -> lm_head.

An architecture's NPU module (edgecpm/export/npu/models/) supplies LAYERS (layer type -> mixer
builder), MLP and the norm names, or a whole `block(c, a, i, x) -> x` for a layer that is not the
pre-norm residual one (MiniMax); the graph is built once per step size T.
"""

from __future__ import annotations

from onnx import TensorProto

from edgecpm.contract import INPUT_IDS, LOGITS
from edgecpm.export.decoder import Args
from edgecpm.export.npu.blocks import I64, NpuCtx, add_rms_norm, declare_inputs, embedding, linear, swiglu_mlp


def default_mlp(c: NpuCtx, a: Args, i: int, x: str) -> str:
    p = f"{a.prefix}.layers.{i}.mlp"
    return swiglu_mlp(c, x, c.w[f"{p}.gate_proj.weight"], c.w[f"{p}.up_proj.weight"],
                      c.w[f"{p}.down_proj.weight"], p)


def build(c: NpuCtx, a: Args, spec) -> None:
    """Write the whole graph for step size c.T. spec: the architecture's NPU module."""
    g, w, p = c.g, c.w, a.prefix
    ids = g.input(INPUT_IDS, I64, [1, c.T])
    declare_inputs(c)
    x = embedding(c, ids, w[a.embed_name])  # [1, T, hidden]
    final = getattr(spec, "FINAL_NORM", "norm")
    if hasattr(spec, "block"):  # the architecture's own layer (e.g. MiniMax's scaled residuals)
        for i in range(len(a.layer_types)):
            x = spec.block(c, a, i, x)
        residual = None
    else:
        x, residual = _prenorm_layers(c, a, spec, x)
    n, _ = add_rms_norm(c, x, residual, w[f"{p}.{final}.weight"], a.rms_norm_eps, f"{p}.{final}")
    last = g.op("Gather", n, g.const("last_position", [c.T - 1]), name="logits_positions", axis=1)  # [1, 1, H]
    logits = linear(c, last, w["lm_head.weight"], "lm_head")  # [1, 1, vocab]
    g.output(logits, LOGITS, TensorProto.FLOAT, [1, 1, a.vocab_size])


def _prenorm_layers(c: NpuCtx, a: Args, spec, x: str) -> tuple[str, str]:
    """The pre-norm blocks (x + mixer(norm(x)), then + mlp(norm(.))), the last residual add left to the
    final norm. x [1, T, hidden] -> (the last block's output, the residual stream before it)."""
    w, p, residual = c.w, a.prefix, None
    norms = getattr(spec, "NORMS", ("input_layernorm", "post_attention_layernorm"))
    mlp = getattr(spec, "mlp", default_mlp)
    for i, kind in enumerate(a.layer_types):
        lp = f"{p}.layers.{i}"
        n, residual = add_rms_norm(c, x, residual, w[f"{lp}.{norms[0]}.weight"], a.rms_norm_eps, f"{lp}.{norms[0]}")
        x = spec.LAYERS[kind](c, a, i, n)
        n, residual = add_rms_norm(c, x, residual, w[f"{lp}.{norms[1]}.weight"], a.rms_norm_eps, f"{lp}.{norms[1]}")
        x = mlp(c, a, i, n)
    return x, residual
