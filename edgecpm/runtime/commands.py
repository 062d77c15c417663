"""What the CLI's generate / chat / info commands do; keyword arguments match the flags."""

from __future__ import annotations

import sys

from edgecpm.runtime import ChatSession, load
from edgecpm.runtime.generate import stream_generate

DEFAULT_PROMPT = "What is the capital of France?"


def _gen_kwargs(max_tokens, temp, top_p, top_k, min_p, seed, repetition_penalty, prefill_chunk) -> dict:
    return dict(max_tokens=max_tokens, temp=temp, top_p=top_p, top_k=top_k, min_p=min_p, seed=seed,
                repetition_penalty=repetition_penalty, prefill_chunk=prefill_chunk)


def _print_stream(stream, verbose: bool) -> None:
    last = None
    for r in stream:
        sys.stdout.write(r.text)
        sys.stdout.flush()
        last = r
    sys.stdout.write("\n")
    if verbose and last:
        print(f"[prompt {last.prompt_tokens} tok, {last.prompt_tps:.1f} tok/s | generated {last.generation_tokens} "
              f"tok, {last.generation_tps:.1f} tok/s | {last.finish_reason}]", file=sys.stderr)


def generate_text(artifact=None, prompt=None, max_tokens=256, temp=0.0, top_p=1.0, top_k=0, min_p=0.0, seed=None,
                  repetition_penalty=1.0, context=None, prefill_chunk=512, provider=(), threads=None,
                  recurrent_kernel="auto", verbose=False) -> None:
    """Continue raw text."""
    engine, tok = load(artifact, context, list(provider) or None, threads, recurrent_kernel=recurrent_kernel)
    kw = _gen_kwargs(max_tokens, temp, top_p, top_k, min_p, seed, repetition_penalty, prefill_chunk)
    _print_stream(stream_generate(engine, tok, prompt if prompt is not None else sys.stdin.read(), **kw), verbose)


def chat(artifact=None, prompt=None, system=None, max_tokens=512, temp=0.0, top_p=1.0, top_k=0, min_p=0.0,
         seed=None, repetition_penalty=1.0, context=None, prefill_chunk=512, provider=(), threads=None,
         recurrent_kernel="auto", verbose=False) -> None:
    """Interactive multi-turn chat; one answer with -p/--prompt (or when stdin is not a terminal)."""
    engine, tok = load(artifact, context, list(provider) or None, threads, recurrent_kernel=recurrent_kernel)
    session = ChatSession(engine, tok, system)
    kw = _gen_kwargs(max_tokens, temp, top_p, top_k, min_p, seed, repetition_penalty, prefill_chunk)
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip() or DEFAULT_PROMPT
    if prompt is not None:
        print(f">>> {prompt}")
        _print_stream(session.send(prompt, **kw), verbose)
        return
    print(f"edgecpm chat: {engine.manifest.architecture} on {engine.providers[0]}; /reset, /exit")
    while True:
        try:
            line = input(">>> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            session.reset()
            print("[conversation reset]")
            continue
        if line:
            _print_stream(session.send(line, **kw), verbose)


def info(artifact=None, context=None) -> None:
    """Print a manifest summary: layers, quantization, state bytes, weight bytes."""
    from edgecpm.contract import load_manifest
    from edgecpm.defaults import default_artifact

    folder = artifact or default_artifact()
    m = load_manifest(folder, verify=False)
    ctx = context or m.context_length
    fixed, per_tok = m.state_bytes(ctx)
    kinds = {}
    for t in m.layer_types:
        kinds[t] = kinds.get(t, 0) + 1
    q = m.quantization
    print(f"artifact      {folder}")
    print(f"architecture  {m.architecture} ({m.exporter}, format v{m.format_version})")
    print(f"layers        {len(m.layer_types)}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    print(f"hidden/vocab  {m.hidden_size} / {m.vocab_size}; context {m.context_length}")
    print(f"quantization  {q.bits}-bit, group {q.group_size}, {'symmetric' if q.symmetric else 'asymmetric'}, "
          f"lm_head {q.lm_head_bits}-bit, embeddings {q.embed_bits}-bit")
    print(f"weights       {m.weights_bytes / 2**20:.1f} MiB")
    by_kind = {k: sum(s.nbytes(ctx) for s in m.state if s.kind == k) for k in ("recurrent", "conv")}
    layers = {k: len({s.layer for s in m.state if s.kind == k}) for k in ("recurrent", "conv", "kv")}
    print(f"state fixed   {fixed / 2**20:.2f} MiB whatever the context: recurrent {by_kind['recurrent'] / 2**20:.2f} "
          f"MiB ({layers['recurrent']} layers) + conv {by_kind['conv'] / 2**20:.2f} MiB ({layers['conv']} layers)")
    print(f"state per tok {per_tok / 1024:.1f} KiB per context token (KV of {layers['kv']} attention layers); "
          f"total {(fixed + per_tok * ctx) / 2**20:.1f} MiB at {ctx} tokens")
    if m.operators:
        print(f"operators     ai.edgecpm {', '.join(m.operators)} (function bodies included)")
