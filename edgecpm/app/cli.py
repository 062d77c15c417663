"""The `edgecpm` command: a thin click shell; each command calls one function whose kwargs are its flags."""

from __future__ import annotations

import math
import os
import sys

import click

from edgecpm.contract import UserError


class Finite(click.FloatRange):
    """A float in a range that is also finite: click's FloatRange lets NaN through (NaN < 0 is False)."""

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


POSITIVE, COUNT = Finite(min=0, min_open=True), click.IntRange(min=1)
ARTIFACT = click.argument("artifact", required=False, type=click.Path())
DEFAULT_NOTE = ("ARTIFACT is an artifact folder; without it, the embedded default model (SmolLM2-135M-Instruct), "
                "exported on first use into $EDGECPM_HOME (default ~/.cache/edgecpm).")
RECURRENT_KERNEL = click.option(
    "--recurrent-kernel", type=click.Choice(["auto", "function", "ort", "native"]), default="auto", show_default=True,
    help="kernel for the linear-attention/conv ops: auto = onnxruntime's when present, else the ONNX function")


def sampling(f):
    """Generation flags shared by generate and chat (mlx-lm / llama.cpp names)."""
    opts = [
        click.option("-m", "--max-tokens", type=COUNT, default=256, show_default=True),
        click.option("--temp", type=Finite(min=0), default=0.0, show_default=True, help="0 = greedy"),
        click.option("--top-p", type=Finite(0, 1, min_open=True), default=1.0, show_default=True),
        click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True, help="0 = off"),
        click.option("--min-p", type=Finite(0, 1), default=0.0, show_default=True),
        click.option("--seed", type=click.IntRange(min=0), default=None),
        click.option("--repetition-penalty", type=POSITIVE, default=1.0, show_default=True),
        click.option("--context", type=COUNT, default=None, help="KV context to allocate (default min(4096, model))"),
        click.option("--prefill-chunk", type=click.IntRange(1), default=512, show_default=True),
        click.option("--provider", multiple=True, help="execution provider: cpu, xnnpack, nnapi, coreml, qnn"),
        click.option("--threads", type=COUNT, default=None),
        RECURRENT_KERNEL,
        click.option("--verbose", is_flag=True, help="print tok/s after each answer"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def drafting(f):
    """Speculative decoding flags shared by generate, chat and serve."""
    opts = [
        click.option("--draft", type=click.Choice(["ngram"]), default=None,
                     help="speculative decoding with drafts copied from the context (prompt lookup)"),
        click.option("--draft-model", type=click.Path(), default=None,
                     help="speculative decoding with drafts from this smaller artifact (same tokenizer)"),
        click.option("--draft-tokens", type=click.IntRange(1, 64), default=8, show_default=True,
                     help="most tokens drafted per verification step"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def routing(f):
    """Device-cloud routing flags shared by chat, generate and serve (see edgecpm.app.router)."""
    opts = [
        click.option("--cloud-url", default=None, help="OpenAI-compatible base URL (env EDGECPM_CLOUD_URL)"),
        click.option("--cloud-model", default=None, help="model name at the cloud (env EDGECPM_CLOUD_MODEL)"),
        click.option("--cloud-api-key", default=None, show_envvar=False,
                     help="API key (better: env EDGECPM_CLOUD_API_KEY); never printed"),
        click.option("--cloud-timeout", type=POSITIVE, default=30.0, show_default=True,
                     help="seconds: total deadline per cloud request (connect, first byte and the whole stream)"),
        click.option("--cloud", is_flag=True, help="answer in the cloud"),
        click.option("--local-only", is_flag=True, help="never use the cloud (no connection is made)"),
        click.option("--memory-budget", type=POSITIVE, default=None, help="MB; larger models go to the cloud"),
        click.option("--local-timeout", type=POSITIVE, default=None,
                     help="seconds; slower local answers go to the cloud"),
        click.option("--escalate-entropy", type=Finite(min=0), default=None,
                     help="nats; a higher mean entropy over the first --entropy-tokens goes to the cloud"),
        click.option("--entropy-tokens", type=click.IntRange(1), default=8, show_default=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.group()
@click.version_option(package_name="edgecpm")
def cli():
    """edgecpm: export hybrid LLMs to int4/int8 ONNX and run them on-device."""


@cli.command("export")
@click.argument("source", required=False, type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None, help="artifact folder (default models/NAME-qBITS)")
@click.option("--q-bits", type=int, default=None,
              help="4, 8, 16 (fp16) or 32 (fp32); default 4, or a GGUF source's own blocks kept exactly")
@click.option("--q-group-size", type=int, default=None, help="default 32; given for a GGUF source, it re-quantizes")
@click.option("--q-method", type=click.Choice(["gptq", "search", "rtn"]), default=None,
              help="gptq: the search's blocks plus error compensation on --calibration's activations; search: "
                   "error-minimizing block scales weighted by them; rtn: round to nearest. Default: search at "
                   "group 32 (it ties gptq there, exporting faster), gptq at larger groups (where it is better)")
@click.option("--q-mix", type=click.Choice(["none", "k_m"]), default=None,
              help="k_m: llama.cpp Q4_K_M's layer mix (some MLP down projections at 8 bits); default k_m for "
                   "int4 search/gptq at --q-group-size 64 or more, else none")
@click.option("--calibration", type=click.Path(), default=None,
              help="text whose activations weight the search (default: a short text shipped with edgecpm)")
@click.option("--q-symmetric/--q-asymmetric", default=None,
              help="default: asymmetric (blocks with a min) for int4 gptq/search, symmetric for --q-method rtn")
@click.option("--lm-head-bits", type=int, default=None, help="default 8 with --q-bits 4, 16 (fp16) with --q-bits 8")
@click.option("--embed-bits", type=int, default=None, help="default 8 with --q-bits 4, 16 (fp16) with --q-bits 8")
@click.option("--context-length", type=COUNT, default=None, help="max context the artifact supports")
@click.option("--kv-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="the KV cache's type: float16 halves its bytes per token (attention then runs in fp16)")
@click.option("--force", is_flag=True, help="replace an existing artifact at -o")
@click.option("--tokenizer", type=click.Path(), default=None, help="take the tokenizer from this HF folder or .gguf")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for an ORG/NAME source")
@click.option("--target", type=click.Choice(["cpu", "npu"]), default="cpu", show_default=True,
              help="npu: static-shape QDQ graphs for a Qualcomm HTP (run with --provider qnn)")
@click.option("--prefill-chunk", type=click.IntRange(2), default=16, show_default=True,
              help="--target npu: tokens per step of the prefill graph")
def export_cmd(target, prefill_chunk, **kw):
    """Export SOURCE to an artifact: a local HF folder or .gguf, a Hub ID (ORG/NAME, or ORG/NAME-GGUF:QUANT
    for one GGUF file, as llama.cpp's -hf), default: the embedded SmolLM2-135M-Instruct."""
    if target == "npu":
        from edgecpm.export.npu import export_from_flags

        return export_from_flags(prefill_chunk=prefill_chunk, **kw)
    from edgecpm.export import export

    export(**kw)


@cli.command(epilog=DEFAULT_NOTE)
@ARTIFACT
@click.option("-p", "--prompt", default=None, help="text to continue (default: stdin)")
@sampling
@drafting
@routing
def generate(**kw):
    """Continue raw text (no chat template)."""
    from edgecpm.app.commands import generate_text

    generate_text(**kw)


@cli.command(epilog=DEFAULT_NOTE)
@ARTIFACT
@click.option("-p", "--prompt", default=None, help="one-shot: answer this and exit")
@click.option("--system", default=None, help="system message")
@sampling
@drafting
@routing
def chat(**kw):
    """Chat with the artifact's chat template; state is kept across turns."""
    from edgecpm.app.commands import chat as run_chat

    run_chat(**kw)


@cli.command(epilog=DEFAULT_NOTE)
@ARTIFACT
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--queue-size", type=click.IntRange(0), default=8, show_default=True,
              help="requests that may wait; more get HTTP 429")
@click.option("--max-body", type=click.IntRange(1), default=1 << 20, show_default=True,
              help="largest request body in bytes; larger get HTTP 413")
@click.option("--api-key", default=None, help="require `Authorization: Bearer KEY` (better: env EDGECPM_API_KEY); "
              "needed when --host is not loopback")
@click.option("--allow-host", multiple=True, help="also accept this Host header (repeatable; * = any)")
@click.option("--context", type=int, default=None)
@click.option("--provider", multiple=True)
@click.option("--threads", type=int, default=None)
@RECURRENT_KERNEL
@drafting
@routing
def serve(**kw):
    """OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models, /health)."""
    from edgecpm.app.commands import serve as run_serve

    run_serve(**kw)


@cli.command(epilog=DEFAULT_NOTE)
@ARTIFACT
@click.option("--context", type=int, default=None, help="context length for the state-size total")
def info(**kw):
    """Manifest summary: layers, quantization, weight bytes, state bytes."""
    from edgecpm.app.commands import info as run_info

    run_info(**kw)


@cli.command(epilog=DEFAULT_NOTE)
@ARTIFACT
@click.option("--prompt-lengths", type=str, default="128,512", show_default=True)
@click.option("--decode-tokens", type=COUNT, default=64, show_default=True)
@click.option("--depth", type=click.IntRange(min=0), default=0, help="tokens of context before decoding is timed")
@click.option("--runs", type=COUNT, default=3, show_default=True)
@click.option("--context", type=COUNT, default=None)
@click.option("--threads", type=COUNT, default=None)
@click.option("--provider", multiple=True)
@click.option("--prefill-chunk", type=click.IntRange(1), default=512, show_default=True)
@RECURRENT_KERNEL
@click.option("--json", "as_json", is_flag=True)
@click.option("--draft-prompt", default=None, help="chat prompt of the drafting phase (default: a copy-heavy typo fix)")
@drafting
def bench(prompt_lengths, **kw):
    """Prefill/decode tok/s, time to first token and peak RSS."""
    from edgecpm.app.bench import bench as run_bench

    try:
        lengths = tuple(int(x) for x in prompt_lengths.split(","))
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) < 1:
        raise UserError(f"--prompt-lengths {prompt_lengths!r} must be comma-separated positive integers, e.g. 128,512")
    run_bench(prompt_lengths=lengths, **kw)


@cli.command("eval")
@click.argument("artifact", type=click.Path())
@click.option("--reference", required=True, type=click.Path(),
              help="artifact with the exact weights (e.g. --q-bits 32)")
@click.option("--text", required=True, type=click.Path(), help="UTF-8 text file to score")
@click.option("--ctx", type=click.IntRange(4), default=512, show_default=True,
              help="tokens per chunk (llama-perplexity -c)")
@click.option("--path", type=click.Choice(["decode", "prefill"]), default="decode", show_default=True,
              help="decode: scored half one token per step (as generation runs); prefill: one step per chunk")
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(**kw):
    """Perplexity, KL(reference || artifact) and top-1 agreement on a text, chunked as llama-perplexity."""
    from edgecpm.app.evaluate import run_eval

    run_eval(**kw)


def main(argv=None) -> None:
    """Run the CLI: bad input is one line on stderr and exit 2; Ctrl-C is exit 130; an unexpected
    failure is one line too (EDGECPM_DEBUG=1 shows the traceback)."""
    try:
        rc = cli.main(args=argv, prog_name="edgecpm", standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except UserError as e:
        _fail(str(e), 2)
    except click.UsageError as e:  # bad flags: click's message, on one line, naming --help
        where = e.ctx.command_path if e.ctx else "edgecpm"
        _fail(f"{e.format_message()} (see `{where} --help`)", 2)
    except click.ClickException as e:
        _fail(e.format_message(), 2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as e:
        if os.environ.get("EDGECPM_DEBUG"):
            raise
        _fail(f"internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              "rerun with EDGECPM_DEBUG=1 for the traceback and report it", 1)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
