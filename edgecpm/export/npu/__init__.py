"""`edgecpm export --target npu`: an artifact of static-shape QDQ graphs for a Qualcomm HTP (QNN).

Two graphs share one weights file: `decode.onnx` (T = 1) and `prefill.onnx` (T = the prefill chunk),
both over a KV buffer of the artifact's fixed context. They are built in plain ONNX ops (no contrib
or ai.edgecpm op: the HTP has none), replayed in fp32 over calibration text, and quantized by
onnxruntime's static QDQ quantizer with its QNN configuration (see quantize.py).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from edgecpm import __version__
from edgecpm.contract import (
    ATTENTION_MASK,
    INPUT_IDS,
    MANIFEST,
    POSITION_IDS,
    Manifest,
    Quantization,
    UserError,
    sha256_file,
)
from edgecpm.export.npu.models import get_npu_architecture

DATA_FILE = "npu.onnx.data"
MAX_CONTEXT = 2048  # default static context: the KV buffer every step reads
CALIB_DECODE_STEPS = 64
CALIB_PREFILL_STEPS = 8


def build_fp32(src, arch, npu, args, T: int, ctx: int, folder: Path):
    """Write the fp32 graph for step size T to folder/model.onnx; returns its state specs."""
    from edgecpm.export.checkpoint import Weights
    from edgecpm.export.graph import GraphBuilder
    from edgecpm.export.npu import decoder
    from edgecpm.export.npu.blocks import OPSET, NpuCtx

    folder.mkdir(parents=True)
    g = GraphBuilder(folder)
    c = NpuCtx(g=g, w=Weights(src, arch.sanitize, args), T=T, ctx_len=ctx)
    decoder.build(c, args, npu)
    g.finish(folder / "model.onnx", __version__)
    _set_opset(folder / "model.onnx", OPSET)
    return c.states


def _set_opset(path: Path, version: int) -> None:
    """The graph's only opset: the default domain's (GraphBuilder writes 21 and the contrib domains;
    RMSNormalization needs 23)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    del model.opset_import[:]  # no com.microsoft or ai.edgecpm op is used
    model.opset_import.append(onnx.helper.make_opsetid("", version))
    onnx.save_model(model, str(path))


def calibration_ids(src, tokenizer, calibration: str | None, work: Path) -> tuple[list[int], str]:
    """Token ids of the calibration text (default: the shipped one) with the checkpoint's tokenizer."""
    from edgecpm.export import _tokenizer, _tokenizer_source, calibrate

    text = calibrate.read_text(calibration or calibrate.DEFAULT_TEXT, "--calibration")
    folder = work / "calibration-tokenizer"
    folder.mkdir()
    _tokenizer(_tokenizer_source(src, tokenizer), folder, src.config)
    ids = calibrate.tokens(text, folder, calibration or "(the default text)")
    shutil.rmtree(folder, ignore_errors=True)
    return ids, Path(calibration).name if calibration else "default"


def export(source: str | None = None, output: str | None = None, context_length: int | None = None,
           prefill_chunk: int = 16, calibration: str | None = None, tokenizer: str | None = None,
           quiet: bool = False, force: bool = False, revision: str | None = None) -> Path:
    """Export SOURCE to an NPU artifact folder OUTPUT (built in a temporary sibling, renamed at the end)."""
    import os

    from edgecpm.export import _output_place, _tokenizer_source, hub, write_into_place
    from edgecpm.export.checkpoint import check_shapes, open_source
    from edgecpm.export.embedded import default_gguf
    from edgecpm.export.models import get_architecture

    if source and hub.is_repo_id(str(source)):
        source = str(hub.fetch(str(source), revision))
    src = open_source(source or default_gguf())
    arch = get_architecture(src.config.get("model_type"))
    args = arch.model_args(src.config)
    npu = get_npu_architecture(args.model_type)
    check_shapes(src, args)
    tok_src = _tokenizer_source(src, tokenizer)
    ctx = min(context_length or args.max_position_embeddings, context_length or MAX_CONTEXT)
    if prefill_chunk < 2 or prefill_chunk >= ctx:
        raise UserError(f"--prefill-chunk {prefill_chunk} must be at least 2 and below the context {ctx}")
    out = _output_place(Path(output or f"models/{Path(src.path).stem}-npu").absolute(), force)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    manifest = write_into_place(tmp, out, lambda: _write(src, arch, npu, args, tok_src, tmp, ctx, prefill_chunk,
                                                          calibration, tokenizer))
    if not quiet:
        size = sum(m["bytes"] for m in manifest.files.values())
        print(f"exported {args.model_type} for the NPU (QDQ int8 weights, uint16 activations, context {ctx}, "
              f"prefill chunk {prefill_chunk}) to {out}: {size / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s")
    return out


def export_from_flags(source=None, output=None, q_bits=None, q_group_size=None, q_method=None, calibration=None,
                      q_symmetric=None, lm_head_bits=None, embed_bits=None, context_length=None, force=False,
                      tokenizer=None, revision=None, prefill_chunk: int = 16, kv_dtype="float32",
                      q_mix=None) -> Path:
    """`edgecpm export --target npu`: the CPU recipe's flags do not apply (one-line error if given)."""
    given = [f for f, v in (("--q-bits", q_bits), ("--q-group-size", q_group_size), ("--lm-head-bits", lm_head_bits),
                            ("--embed-bits", embed_bits), ("--q-symmetric/--q-asymmetric", q_symmetric),
                            ("--q-method", q_method), ("--q-mix", q_mix),
                            ("--kv-dtype", None if kv_dtype == "float32" else kv_dtype)) if v is not None]
    if given:
        raise UserError(f"{given[0]} does not apply to --target npu (its weights are int8 per channel, its "
                        "activations uint16, calibrated on --calibration); drop the flag")
    return export(source, output, context_length, prefill_chunk, calibration, tokenizer, force=force,
                  revision=revision)


def _write(src, arch, npu, args, tok_src, tmp: Path, ctx: int, chunk: int, calibration: str | None,
           tokenizer: str | None) -> Manifest:
    """Build, calibrate, quantize and share the two graphs in `tmp`; write the manifest."""
    from edgecpm.export.npu.quantize import quantize_graph, reader, share_weights

    ids, calib_name = calibration_ids(src, tokenizer, calibration, tmp)
    graphs, steps = {"decode": 1, "prefill": chunk}, {"decode": CALIB_DECODE_STEPS, "prefill": CALIB_PREFILL_STEPS}
    quantized, specs = {}, []
    for name, T in graphs.items():
        fp32 = tmp / f"work-{name}" / "fp32"
        specs = build_fp32(src, arch, npu, args, T, ctx, fp32)
        model = fp32 / "model.onnx"
        quantize_graph(model, fp32.parent / "qdq.onnx", reader(model, T, specs, ctx, ids, steps[name]),
                       _gather_tables(model))
        quantized[f"{name}.onnx"] = fp32.parent / "qdq.onnx"
    weights = share_weights(quantized, tmp, DATA_FILE)
    for name in graphs:
        shutil.rmtree(tmp / f"work-{name}", ignore_errors=True)
    q = Quantization(bits=8, group_size=0, symmetric=True, lm_head_bits=8, embed_bits=16, accuracy_level=0,
                     method="qdq", calibration=calib_name)
    return _manifest(src, args, tok_src, tmp, ctx, specs, q, weights,
                     {n: {"file": f"{n}.onnx", "tokens": T} for n, T in graphs.items()})


def _gather_tables(path: Path) -> list[str]:
    """Initializers read by Gather (embedding, rotary tables) and the conv taps/biases: quantized to
    16 bits per tensor like activations, not as int8 weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    tables = {n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits}
    return sorted(tables | {t for t in inits if ".tap" in t or t.endswith(".conv_bias")})


def _manifest(src, args, tok_src, tmp: Path, ctx: int, specs, q, weights: int, graphs: dict) -> Manifest:
    from edgecpm.export import _tokenizer

    tok = _tokenizer(tok_src, tmp, src.config)
    m = Manifest(
        architecture=args.model_type, layer_types=args.layer_types, context_length=ctx,
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, state=specs, quantization=q,
        tokenizer=tok, chat_template=tok.pop("chat_template", None),
        source={"kind": src.kind, "path": str(Path(src.path).absolute()), "sha256": src.sha256()},
        weights_bytes=weights, exporter=f"edgecpm {__version__}", target="npu", graphs=graphs,
        inputs=[INPUT_IDS, POSITION_IDS, ATTENTION_MASK],
    )
    m.files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
               for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / MANIFEST).write_text(m.to_json())
    return m
