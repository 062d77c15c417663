"""`edgecpm export`: checkpoint (HF folder or GGUF) -> artifact folder (see edgecpm.contract)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

from edgecpm import __version__
from edgecpm.contract import KV_DTYPES, MANIFEST, MODEL_FILE, Manifest, Quantization, UserError, sha256_file
from edgecpm.export import hub
from edgecpm.export.embedded import default_gguf

MAX_DEFAULT_CONTEXT = 32768  # rotary caches are sized to the context; real configs say up to 262144


def recipe(q_bits: int | None, q_group_size: int | None, q_symmetric: bool | None, lm_head_bits: int | None,
           embed_bits: int | None, source_kind: str = "hf", method: str = "search") -> Quantization:
    """The quantization recipe from the CLI flags, checked. A GGUF source with neither --q-bits nor
    --q-group-size keeps its blocks (method "gguf"; head/embedding bits 0 = as the source's)."""
    from edgecpm.export.quant import check_recipe

    if source_kind == "gguf" and q_bits is None and q_group_size is None:
        return Quantization(bits=4, group_size=32, symmetric=bool(q_symmetric), lm_head_bits=lm_head_bits or 0,
                            embed_bits=embed_bits or 0, method="gguf")
    q_bits, q_group_size = q_bits or 4, q_group_size or 32
    if q_symmetric is None:  # int4 search: blocks with a min (far better at the same bits); RTN: symmetric
        q_symmetric = not (method in ("search", "gptq") and q_bits == 4)

    for flag, b in (("--q-bits", q_bits), ("--lm-head-bits", lm_head_bits), ("--embed-bits", embed_bits)):
        if b is not None and b not in (4, 8, 16, 32):
            raise UserError(f"{flag} {b} is not supported; use 4, 8, 16 (fp16) or 32 (fp32)")
    if q_bits in (4, 8):
        check_recipe(q_bits, q_group_size)
    # int4: head and embeddings int8. int8 (the quality recipe): they stay fp16 -- an 8-bit read-out
    # flips near-tie argmaxes (tiny Llama top-1 0.9875 -> 1.0); --lm-head-bits/--embed-bits 8 trade it for size.
    lm = lm_head_bits or {4: 8, 8: 16}.get(q_bits, q_bits)
    emb = embed_bits or {4: 8, 8: 16}.get(q_bits, q_bits)
    return Quantization(bits=q_bits, group_size=q_group_size, symmetric=q_symmetric, lm_head_bits=lm, embed_bits=emb,
                        method=method if q_bits == 4 else "rtn")  # 8-bit: always round-to-nearest


MIXES = ("none", "k_m")


def default_mix(q: Quantization) -> str:
    """The layer mix when none is named: llama.cpp Q4_K_M's ("k_m") for int4 from float at group 64 and
    above, where it buys the most (SmolLM2 g64 gptq: KL 0.056 -> 0.047 for 5 % more bytes; on held-out
    text 0.064 -> 0.054, Q4_K_M 0.055); none at group 32, for GGUF carry-overs and for RTN."""
    return "k_m" if q.bits == 4 and q.group_size > 32 and q.method in ("search", "gptq") else "none"


def default_method(q_group_size: int | None) -> str:
    """The int4 method from float weights when none is named: the search at group 32, where gptq ties it
    (SmolLM2 KL 0.0033 vs 0.0034) and takes 2.4x as long; gptq at 64 and above (0.056 vs 0.068)."""
    return "gptq" if (q_group_size or 32) > 32 else "search"


def export(source: str | None = None, output: str | None = None, q_bits: int | None = None,
           q_group_size: int | None = None,
           q_symmetric: bool | None = None, lm_head_bits: int | None = None, embed_bits: int | None = None,
           context_length: int | None = None, tokenizer: str | None = None, quiet: bool = False,
           force: bool = False, revision: str | None = None, q_method: str | None = None,
           calibration: str | None = None, kv_dtype: str = "float32", q_mix: str | None = None) -> Path:
    """Export SOURCE (HF folder or .gguf; default: the embedded SmolLM2) to the artifact folder OUTPUT.

    Builds into a temporary sibling folder and renames it into place at the end, so an interrupted
    export never leaves a folder that loads. TOKENIZER (an HF folder or .gguf) replaces the
    checkpoint's own tokenizer, e.g. for random benchmark checkpoints that have none. An artifact
    already at OUTPUT is replaced only with `force`. Everything is checked (config types, every
    tensor's shape against the config, the tokenizer files, the output place) before anything is written.
    """
    from edgecpm.export import calibrate
    from edgecpm.export.checkpoint import check_shapes, open_source
    from edgecpm.export.models import get_architecture

    recipe(q_bits, q_group_size, q_symmetric, lm_head_bits, embed_bits)  # flags checked before any file is read
    if kv_dtype not in KV_DTYPES:
        raise UserError(f"--kv-dtype {kv_dtype} is not one of {', '.join(KV_DTYPES)}")
    if q_mix not in (None, *MIXES):
        raise UserError(f"--q-mix {q_mix} is not one of {', '.join(MIXES)}")
    if source and hub.is_repo_id(str(source)):  # ORG/NAME or ORG/NAME-GGUF:QUANT: from the Hub (cache)
        source = str(hub.fetch(str(source), revision))
    src = open_source(source or default_gguf())
    q = recipe(q_bits, q_group_size, q_symmetric, lm_head_bits, embed_bits, src.kind, q_method or
               default_method(q_group_size))
    q = dataclasses.replace(q, kv_dtype=kv_dtype, mix=q_mix or default_mix(q))  # both checked above
    q, calib_text, calib_where = calibrate.prepare(calibration, q)
    arch = get_architecture(src.config.get("model_type"))
    args = arch.model_args(src.config)
    check_shapes(src, args)  # every weight file readable, every shape as the config says, before any work
    tok_src = _tokenizer_source(src, tokenizer)
    suffix = "gguf" if q.method == "gguf" else f"q{q.bits}"
    out = _output_place(Path(output or f"models/{Path(src.path).stem}-{suffix}").absolute(), force)
    if context_length is not None and context_length <= 0:
        raise UserError(f"--context-length {context_length} must be a positive number of tokens")
    ctx = min(context_length or args.max_position_embeddings, context_length or MAX_DEFAULT_CONTEXT)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    def write():
        raw = q.method == "gptq"  # gptq: the layers' inputs themselves (files), search: their mean squares
        imp = calibrate.importance(src.path, tokenizer, calib_text, calib_where, tmp, raw) if calib_text else {}
        manifest = _write(src, tok_src, arch, args, q, ctx, tmp, quiet, imp)
        shutil.rmtree(tmp / calibrate.ACTIVATIONS, ignore_errors=True)
        return manifest

    manifest = write_into_place(tmp, out, write)
    if not quiet:
        size = sum(m["bytes"] for m in manifest.files.values())
        print(f"exported {args.model_type} ({q.bits}-bit, group {q.group_size}) to {out}: "
              f"{size / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s")
    return out


def _write(src, tok_src, arch, args, q: Quantization, ctx: int, tmp: Path, quiet: bool,
           importance: dict | None = None) -> Manifest:
    from rich.progress import Progress

    from edgecpm.export.blocks import Ctx
    from edgecpm.export.checkpoint import Weights
    from edgecpm.export.graph import GraphBuilder

    g = GraphBuilder(tmp)
    c = Ctx(g=g, w=Weights(src, arch.sanitize, args, carry=q.method == "gguf"), q=q, ctx_len=ctx,
            importance=importance or {})  # gptq: layer name -> path of its calibration inputs
    with Progress(disable=quiet, transient=True) as bar:
        task = bar.add_task(f"exporting {args.model_type}", total=args.num_hidden_layers)
        arch.build(c, args, progress=lambda: bar.advance(task))
    g.finish(tmp / MODEL_FILE, __version__)
    q = written_recipe(c, q, quiet)
    tok = _tokenizer(tok_src, tmp, src.config)
    manifest = Manifest(
        architecture=args.model_type, layer_types=args.layer_types, context_length=ctx,
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, state=c.states, quantization=q,
        tokenizer=tok, chat_template=tok.pop("chat_template", None),
        source={"kind": src.kind, "path": str(Path(src.path).absolute()), "sha256": src.sha256()},
        weights_bytes=g.weights_bytes, exporter=f"edgecpm {__version__}",
        operators=sorted({fn.name for fn in g.functions.values()}),
    )
    manifest.files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                      for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / MANIFEST).write_text(manifest.to_json())
    return manifest


def written_recipe(c, q: Quantization, quiet: bool) -> Quantization:
    """The recipe as written: for a GGUF carry-over, the head/embedding bits the blocks took and the
    types kept; a note for the source tensors that had to be re-quantized."""
    if q.method != "gguf":
        return q
    kept = set(c.carried)
    left = {t for t in c.w.source_types() if t not in kept and t not in ("F32", "F16", "BF16")}
    if left and not quiet:
        print(f"note: {', '.join(sorted(left))} blocks have no exact MatMulNBits layout; those tensors are "
              f"re-quantized to int{q.bits} g{q.group_size} (error-minimizing search)")
    return dataclasses.replace(q, lm_head_bits=q.lm_head_bits or c.memo.get(("bits", "lm_head"), q.bits),
                               embed_bits=q.embed_bits or c.embed_bits, carried=dict(sorted(c.carried.items())))


def _output_place(out: Path, force: bool) -> Path:
    """Check that OUTPUT can take an artifact (creating its parent); remove what killed exports left."""
    if out.is_file():
        raise UserError(f"-o {out} is a file; pass a folder path for the artifact")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise UserError(f"{out} exists and is not an edgecpm artifact; pick another -o/--output")
        if not force:
            raise UserError(f"{out} already holds an artifact; pass --force to replace it, or another -o/--output")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out.parent} ({e.strerror}); pick a writable -o/--output") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UserError(f"{out.parent} is not writable; pick a writable -o/--output")
    for left in [*out.parent.glob(f".{out.name}.partial-*"), *out.parent.glob(f".{out.name}.old-*")]:
        if not _alive(left.name.rsplit("-", 1)[-1]):
            shutil.rmtree(left, ignore_errors=True)  # a killed export's leftovers
    return out


def _alive(pid: str) -> bool:
    """Whether the process that owns a .partial-PID folder still runs (then its folder is left alone)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _check_tokenizer_files(folder: Path) -> None:
    """Parse the tokenizer files now, so a broken one fails before the export does any work."""
    import json

    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises its own Exception type with a one-line message
            raise UserError(f"{folder}/tokenizer.json cannot be parsed ({str(e).splitlines()[0][:160]}); "
                            "re-download it or pass --tokenizer PATH") from None
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            if not isinstance(json.loads(cfg.read_bytes().decode("utf-8")), dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{cfg} is not a valid JSON object ({e}); re-download it or pass --tokenizer PATH") \
                from None


def _tokenizer_source(src, tokenizer: str | None):
    """Where the tokenizer comes from (the checkpoint, or --tokenizer); checked before any work."""
    from edgecpm.export.checkpoint import open_source

    if tokenizer is None:
        tsrc = src
    elif Path(tokenizer).is_dir() and not (Path(tokenizer) / "config.json").is_file():
        tsrc = _TokenizerFolder(Path(tokenizer))
    else:
        tsrc = open_source(tokenizer)
    p = Path(tsrc.path)
    if tsrc.kind == "hf" and not ((p / "tokenizer.json").is_file() or (p / "tokenizer.model").is_file()):
        raise UserError(f"{p} has no tokenizer.json or tokenizer.model; add the tokenizer files or pass "
                        "--tokenizer PATH (an HF folder or a .gguf file)")
    if tsrc.kind == "hf":
        _check_tokenizer_files(p)
    return tsrc


class _TokenizerFolder:
    """A folder that holds only tokenizer files."""

    kind = "hf"

    def __init__(self, path: Path):
        self.path, self.config = path, {}


def _tokenizer(src, tmp: Path, model_cfg: dict) -> dict:
    """Write the tokenizer files; return the manifest's tokenizer section (+ chat_template)."""
    import json

    from edgecpm.export.tokenizer import copy_hf_tokenizer, write_gguf_tokenizer

    cfg = {**model_cfg, **{k: v for k, v in src.config.items() if k in ("bos_token_id", "eos_token_id") and v}}
    if src.kind == "gguf":
        tmpl = src.meta.get("tokenizer.chat_template")
        write_gguf_tokenizer(src.reader, tmp, tmpl, cfg.get("bos_token_id"), cfg.get("eos_token_id"))
    else:
        copy_hf_tokenizer(src.path, tmp)
    tc = json.loads((tmp / "tokenizer_config.json").read_text())
    gen = json.loads((tmp / "generation_config.json").read_text()) if (tmp / "generation_config.json").is_file() else {}
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    files = [n for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json") if (tmp / n).is_file()]
    return {"files": files, "bos_token_id": cfg.get("bos_token_id"), "eos_token_ids": eos,
            "add_bos_token": bool(tc.get("add_bos_token", False)), "chat_template": tc.get("chat_template")}


def write_into_place(tmp: Path, out: Path, write):
    """write() the artifact into the temporary folder `tmp`, then move it to `out`; on any failure
    (Ctrl-C too) `tmp` is removed, so nothing half-written is left. Returns write()'s result."""
    try:
        result = write()
        _replace(tmp, out)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished artifact into place; an older artifact there is swapped out, then removed."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
