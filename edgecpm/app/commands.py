"""What the CLI's generate / chat / info commands do; keyword arguments match the flags."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from edgecpm.app.defaults import resolve_artifact
from edgecpm.contract import UserError

DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."


def _gen_kwargs(max_tokens, temp, top_p, top_k, min_p, seed, repetition_penalty, prefill_chunk) -> dict:
    return dict(max_tokens=max_tokens, temp=temp, top_p=top_p, top_k=top_k, min_p=min_p, seed=seed,
                repetition_penalty=repetition_penalty, prefill_chunk=prefill_chunk)


def make_router(artifact, context, provider, threads, recurrent_kernel, cloud_url=None, cloud_model=None,
                cloud_api_key=None, cloud_timeout=30.0, cloud=False, local_only=False, memory_budget=None,
                local_timeout=None, escalate_entropy=None, entropy_tokens=8, report_placement=False,
                reuse_generated=True, draft=None, draft_model=None, draft_tokens=8):
    """A Router from the CLI's load, routing and drafting flags."""
    from edgecpm.app.cloud import CloudConfig
    from edgecpm.app.router import RoutePolicy, Router

    policy = RoutePolicy(local_only, cloud, memory_budget, local_timeout, escalate_entropy, entropy_tokens)
    cfg = None if local_only else CloudConfig.resolve(cloud_url, cloud_model, cloud_api_key, cloud_timeout)
    return Router(resolve_artifact(artifact), policy, cfg, context=context, providers=list(provider) or None,
                  threads=threads, recurrent_kernel=recurrent_kernel, report_placement=report_placement,
                  reuse_generated=reuse_generated, draft=draft, draft_model=draft_model, draft_tokens=draft_tokens)


def _print_events(events, verbose: bool, marker=sys.stdout) -> None:
    """Stream an answer; say where it came from; one-line error when there is no answer."""
    last = None
    for ev in events:
        if last is None:
            if ev.error and not ev.text:  # no answer at all: one line, exit code 2
                raise UserError(ev.error)
            tag = ev.source if not ev.reason else f"{ev.source}: {ev.reason}"
            print(f"[{tag}] ", end="", file=marker, flush=True)
        sys.stdout.write(ev.text)
        sys.stdout.flush()
        last = ev
    sys.stdout.write("\n")
    if last and last.error:
        print(f"[stopped: {last.error}]", file=sys.stderr)
    if verbose and last and last.generation_tps is not None:
        d = last.draft
        drafted = "" if d is None else f" | drafts accepted {d.accepted}/{d.drafted}, " \
            f"{d.tokens_per_step or 1:.2f} tok/step"
        print(f"[prompt {last.prompt_tokens} tok, {last.prompt_tps:.1f} tok/s | generated {last.completion_tokens} "
              f"tok, {last.generation_tps:.1f} tok/s{drafted} | {last.finish_reason}]", file=sys.stderr)


def _check_text(text: str, what: str) -> str:
    """`text` if it is non-empty valid UTF-8 (click keeps undecodable argv bytes as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{what} is not valid UTF-8; pass UTF-8 text") from None
    if not text.strip():
        raise UserError(f"{what} is empty; pass text with -p/--prompt or on stdin")
    return text


def _read_stdin() -> str:
    """All of stdin, decoded strictly as UTF-8."""
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("stdin is not valid UTF-8; pass UTF-8 text") from None


def generate_text(artifact=None, prompt=None, max_tokens=256, temp=0.0, top_p=1.0, top_k=0, min_p=0.0, seed=None,
                  repetition_penalty=1.0, context=None, prefill_chunk=512, provider=(), threads=None,
                  recurrent_kernel="auto", verbose=False, **routing) -> None:
    """Continue raw text."""
    text = _check_text(prompt if prompt is not None else _read_stdin(), "the prompt")
    router = make_router(artifact, context, provider, threads, recurrent_kernel, report_placement=verbose, **routing)
    kw = _gen_kwargs(max_tokens, temp, top_p, top_k, min_p, seed, repetition_penalty, prefill_chunk)
    _print_events(router.complete(text, **kw), verbose, marker=sys.stderr)


def chat(artifact=None, prompt=None, system=None, max_tokens=512, temp=0.0, top_p=1.0, top_k=0, min_p=0.0,
         seed=None, repetition_penalty=1.0, context=None, prefill_chunk=512, provider=(), threads=None,
         recurrent_kernel="auto", verbose=False, **routing) -> None:
    """Interactive multi-turn chat; one answer with -p/--prompt (or when stdin is not a terminal: an
    empty stdin asks DEFAULT_PROMPT). `/cloud MESSAGE` sends one message to the cloud; `/reset` starts
    over; `/exit` quits. Ctrl-C stops the answer being written and keeps the conversation; Ctrl-C at
    the prompt exits."""
    if prompt is not None:
        _check_text(prompt, "the prompt")
    if system is not None:
        _check_text(system, "the --system message")
    if prompt is None and not sys.stdin.isatty():
        prompt = _read_stdin().strip() or DEFAULT_PROMPT
    router = make_router(artifact, context, provider, threads, recurrent_kernel, report_placement=verbose, **routing)
    kw = _gen_kwargs(max_tokens, temp, top_p, top_k, min_p, seed, repetition_penalty, prefill_chunk)
    start = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        print(f">>> {prompt}")
        _print_events(router.respond(start + [{"role": "user", "content": prompt}], **kw), verbose)
        return
    session = router.session()
    where = f"{session.engine.manifest.architecture} on {session.engine.providers[0]}" if session else "cloud only"
    print(f"edgecpm chat: {where}; /cloud MESSAGE, /reset, /exit; Ctrl-C stops an answer")
    chat_loop(router, start, kw, verbose)


def chat_loop(router, start: list[dict], kw: dict, verbose: bool = False, read=input) -> list[dict]:
    """The interactive loop over `read(prompt)` lines; returns the conversation when the user leaves.
    A line that is not UTF-8, a turn that fails, or Ctrl-C during an answer never ends the session."""
    messages = list(start)
    while True:
        try:
            line = read(">>> ").strip()
        except UnicodeDecodeError:
            print("error: that line is not valid UTF-8; type it again", file=sys.stderr)
            continue
        except (EOFError, KeyboardInterrupt):
            print()
            return messages
        if line in ("/exit", "/quit"):
            return messages
        if line == "/reset":
            messages = list(start)
            print("[conversation reset]")
            continue
        to_cloud = line.startswith("/cloud ")
        line = line.removeprefix("/cloud ").strip()
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        text: list[str] = []
        try:
            with _interruptible() as stopped:
                _print_events(_collect(router.respond(messages, cloud=to_cloud, **kw), text, stopped), verbose)
            messages.append({"role": "assistant", "content": "".join(text)})
        except UserError as e:
            messages.pop()
            print(f"error: {e}", file=sys.stderr)


@contextlib.contextmanager
def _interruptible():
    """While an answer streams, Ctrl-C sets a flag (checked between tokens) instead of raising, so the
    model state is never left mid-step; the previous handler comes back afterwards."""
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)


def _collect(events, out: list, stopped: threading.Event | None = None):
    for ev in events:
        out.append(ev.text)
        yield ev
        if stopped is not None and stopped.is_set():
            print("\n[stopped: Ctrl-C]", end="", file=sys.stderr)
            events.close()
            return


def serve(artifact=None, host="127.0.0.1", port=8000, queue_size=8, context=None, provider=(), threads=None,
          recurrent_kernel="auto", max_body=1 << 20, api_key=None, allow_host=(), **routing) -> None:
    """Run the OpenAI-compatible server (needs the `serve` extra: fastapi, uvicorn)."""
    try:
        from edgecpm.app.server import serve as run
    except ImportError as e:
        raise UserError(f"edgecpm serve needs {e.name}; pip install 'edgecpm[serve]'") from None
    # API answers must not depend on what an earlier request left in the cache: exact reuse only
    run(host, port, queue_size, make_router(artifact, context, provider, threads, recurrent_kernel,
                                            reuse_generated=False, **routing),
        max_body=max_body, api_key=api_key, allow_host=allow_host)


def info(artifact=None, context=None) -> None:
    """Print a manifest summary: layers, quantization, state bytes, weight bytes."""
    from edgecpm.contract import load_manifest

    folder = resolve_artifact(artifact)
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
    if m.target == "npu":  # static graphs: QDQ int8 per channel, uint16 activations (docs/artifact.md)
        print(f"target        npu ({q.method}, uint16 activations): " + ", ".join(
            f"{n} {g['file']} T={g['tokens']}" for n, g in m.graphs.items()) + "; run with --provider qnn")
    by_kind = {k: sum(s.nbytes(ctx) for s in m.state if s.kind == k) for k in ("recurrent", "conv")}
    layers = {k: len({s.layer for s in m.state if s.kind == k}) for k in ("recurrent", "conv", "kv")}
    print(f"state fixed   {fixed / 2**20:.2f} MiB whatever the context: recurrent {by_kind['recurrent'] / 2**20:.2f} "
          f"MiB ({layers['recurrent']} layers) + conv {by_kind['conv'] / 2**20:.2f} MiB ({layers['conv']} layers)")
    print(f"state per tok {per_tok / 1024:.1f} KiB per context token (KV of {layers['kv']} attention layers); "
          f"total {(fixed + per_tok * ctx) / 2**20:.1f} MiB at {ctx} tokens")
    if m.operators:
        print(f"operators     ai.edgecpm {', '.join(m.operators)} (function bodies included)")
