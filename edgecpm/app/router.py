"""Device-cloud routing: answer on the device unless a policy sends the request to the cloud.

Policies, checked in this order:
  (1) memory   the artifact cannot load, or its weights + state at the context exceed --memory-budget
               (checked from the manifest's exact byte counts, before loading anything)
  (5) user     --cloud, or /cloud in chat
  (2) context  the conversation is longer than the local context
  (3) failure  the local run raises, or does not finish within --local-timeout seconds (checked between
               tokens; with a timeout set, local text is held until the answer is complete, so it can be
               replaced)
  (4) entropy  mean token entropy over the first --entropy-tokens tokens above --escalate-entropy (off
               by default; those tokens are held back until the check passes)
--local-only makes the cloud impossible: no client exists, so no socket is ever opened.
When the cloud fails (refused, timeout, HTTP error, malformed or cut-short answer), a local answer is
kept where one can be made; otherwise the answer is a one-line error. Cloud answers are shown only
once complete. The conversation is always kept as messages, so the cloud gets the whole
conversation and a later local turn catches up on the turns the cloud answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from edgecpm.app.cloud import CloudClient, CloudConfig, CloudError
from edgecpm.app.drafting import make_drafter
from edgecpm.contract import UserError, load_manifest
from edgecpm.runtime import ChatSession, load
from edgecpm.runtime.chat import ContextOverflow
from edgecpm.runtime.generate import stream_generate

LOCAL, CLOUD = "local", "cloud"


@dataclass(frozen=True)
class RoutePolicy:
    local_only: bool = False
    cloud: bool = False
    memory_budget_mb: float | None = None
    local_timeout: float | None = None
    escalate_entropy: float | None = None
    entropy_tokens: int = 8


@dataclass
class Event:
    """A piece of an answer. The first event names the source and why; the last has finish_reason
    (or error, when no answer could be made)."""

    text: str
    source: str
    reason: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    prompt_tps: float | None = None
    generation_tps: float | None = None
    draft: object | None = None  # edgecpm.runtime.speculate.SpecStats when drafting


class _Escalate(Exception):
    """Raised by a local run before it yields anything: answer in the cloud instead. `retry_local`
    says whether a fresh local run is still a fallback when the cloud fails too."""

    def __init__(self, reason: str, retry_local: bool = True):
        self.reason, self.retry_local = reason, retry_local


class Router:
    def __init__(self, artifact, policy: RoutePolicy = RoutePolicy(), cloud: CloudConfig | None = None,
                 reuse_generated: bool = True, draft: str | None = None, draft_model: str | None = None,
                 draft_tokens: int = 8, **load_kw):
        """`reuse_generated=False` makes answers independent of the cache (see ChatSession);
        `draft`/`draft_model` turn on speculative decoding (edgecpm.app.drafting)."""
        self.artifact, self.policy, self.load_kw = artifact, policy, load_kw
        self.reuse_generated = reuse_generated
        self.draft_spec, self.draft_kw = (draft, draft_model), {"draft_tokens": draft_tokens}
        self.cloud = CloudClient(cloud) if cloud and not policy.local_only else None
        self._session = None
        self.local_problem: str | None = None  # why local cannot serve at all (policy 1)

    def session(self):
        """The local ChatSession, loaded on first use; None (with local_problem set) if it cannot be."""
        if self._session is None and self.local_problem is None:
            try:
                manifest = load_manifest(self.artifact, verify=self.load_kw.get("verify", True))
                self._check_budget(manifest)
                engine, tok = load(self.artifact, manifest=manifest, **self.load_kw)
            except UserError as e:
                self.local_problem = str(e)
            except Exception as e:  # noqa: BLE001 -- any local failure is a reason to route, with its text
                self.local_problem = _one_line(e)
            else:  # a wrong --draft-model is the user's to fix (one line, exit 2), not a reason to route
                self.draft_kw["draft"] = make_drafter(*self.draft_spec, engine, self.load_kw.get("threads"))
                self._session = ChatSession(engine, tok, reuse_generated=self.reuse_generated)
        return self._session

    def _check_budget(self, m) -> None:
        budget = self.policy.memory_budget_mb
        if budget is None:
            return
        ctx = m.runtime_context(self.load_kw.get("context"))
        need = m.memory_bytes(ctx) / 2**20
        if need > budget:
            raise UserError(f"the model needs {need:.0f} MB (weights + state at {ctx} tokens), over the "
                            f"--memory-budget of {budget:g} MB")

    def respond(self, messages: list[dict], cloud: bool = False, **gen) -> Iterator[Event]:
        """Answer a conversation, locally or in the cloud, as a stream of events."""
        session = self.session()
        if session is None:
            yield from self._cloud_or_error(messages, f"local model unavailable: {self.local_problem}", None, gen)
            return
        if cloud or self.policy.cloud:
            yield from self._cloud_or_error(messages, "asked for", self._local(session, messages, gen, False), gen)
            return
        local = self._local(session, messages, gen, True)
        try:
            first = next(local)
        except ContextOverflow as e:  # (2): nothing local can answer this
            yield from self._cloud_or_error(messages, _too_long("conversation", e.tokens, e.ctx), None, gen)
            return
        except _Escalate as e:
            fallback = self._local(session, messages, gen, False) if e.retry_local else None
            yield from self._cloud_or_error(messages, e.reason, fallback, gen)
            return
        yield first
        yield from local

    def _local(self, session, messages, gen, checks: bool) -> Iterator[Event]:
        """Local answer events; with checks, raises _Escalate (before yielding anything) on policies 3-4."""
        p = self.policy
        hold = checks and (p.local_timeout is not None or p.escalate_entropy is not None)
        t0, held, entropies, n, prompt = time.perf_counter(), [], [], 0, None
        stream = session.respond(messages, with_entropy=checks and p.escalate_entropy is not None, **gen,
                                 **self.draft_kw)
        started = False
        try:
            for r in stream:
                n, prompt = r.generation_tokens, r.prompt_tokens
                if checks and p.local_timeout is not None and time.perf_counter() - t0 > p.local_timeout:
                    raise _Escalate(f"the local run exceeded --local-timeout {p.local_timeout:g} s")
                if checks and p.escalate_entropy is not None and len(entropies) < p.entropy_tokens:
                    entropies.append(r.entropy)
                    mean = sum(entropies) / len(entropies)
                    if (len(entropies) == p.entropy_tokens or r.finish_reason) and mean > p.escalate_entropy:
                        raise _Escalate(f"low confidence: mean entropy {mean:.2f} > {p.escalate_entropy:g} nats")
                if hold and (p.local_timeout is not None or len(entropies) < p.entropy_tokens) \
                        and not r.finish_reason:
                    held.append(r.text)
                    continue
                text, held, started = "".join(held) + r.text, [], True
                yield Event(text, LOCAL, None, r.finish_reason, prompt, n, prompt_tps=r.prompt_tps,
                            generation_tps=r.generation_tps, draft=r.draft)
        except _Escalate:
            stream.close()
            raise
        except ContextOverflow:
            raise
        except UserError as e:  # e.g. the answer ran into the context limit
            yield Event("".join(held), LOCAL, None, "length", prompt, n, error=str(e))
        except Exception as e:  # noqa: BLE001 -- a local failure of any kind: route it, never a traceback
            why = f"the local run failed ({_one_line(e)})"
            if checks and not started:
                raise _Escalate(why, retry_local=False) from None
            yield Event("".join(held), LOCAL, None, "error", prompt, n, error=why)

    def _cloud_or_error(self, messages, reason: str, local: Iterator[Event] | None, gen) -> Iterator[Event]:
        """Ask the cloud; if that fails, fall back to `local` (a fresh local run) or give an error."""
        if self.cloud is None:
            why = "--local-only forbids the cloud" if self.policy.local_only else "no cloud is configured " \
                  "(--cloud-url or EDGECPM_CLOUD_URL)"
            failure = f"{reason}, and {why}"
        else:
            try:
                text = "".join(self.cloud.stream(messages, gen.get("max_tokens", 256), gen.get("temp", 0.0)))
                if self._session is not None:
                    self._session.messages = [dict(m) for m in messages] + [{"role": "assistant", "content": text}]
                yield Event(text, CLOUD, reason, "stop", None, None)
                return
            except CloudError as e:
                failure = f"{reason}; the cloud failed: {e}"
        if local is None:
            yield Event("", LOCAL, failure, "error", error=failure)
            return
        first = True
        for ev in local:
            if first:
                ev.reason, first = f"{failure}; answered locally", False
            yield ev

    def complete(self, prompt: str, cloud: bool = False, **gen) -> Iterator[Event]:
        """Continue raw text. The cloud (its /completions) takes it when the model cannot load, the
        user asks, or the prompt exceeds the local context; otherwise it runs locally."""
        session, ids, local_ok = self.session(), None, True
        reason = f"local model unavailable: {self.local_problem}" if session is None else (
            "asked for" if cloud or self.policy.cloud else None)
        if session is not None and reason is None:
            ids = session.tokenizer.encode(prompt)
            if len(ids) > session.engine.ctx:
                reason, local_ok = _too_long("prompt", len(ids), session.engine.ctx), False
        if reason is None:
            local = self._local_text(session, ids, gen)
            try:
                first = next(local)
            except _Escalate as e:  # (3) the local run failed before any text
                reason, local_ok = e.reason, False
            else:
                yield first
                yield from local
                return
        if self.cloud is not None:
            try:
                a = self.cloud.complete(prompt, gen.get("max_tokens", 256), gen.get("temp", 0.0))
                yield Event(a.text, CLOUD, reason, a.finish_reason or "stop", a.prompt_tokens, a.completion_tokens)
                return
            except CloudError as e:
                reason = f"{reason}; the cloud failed: {e}"
        else:
            why = "--local-only forbids the cloud" if self.policy.local_only else "no cloud is configured"
            reason += f", and {why}"
        if session is None or not local_ok:
            yield Event("", LOCAL, reason, "error", error=reason)
            return
        for i, ev in enumerate(self._local_text(session, prompt, gen)):
            ev.reason = ev.reason or (f"{reason}; answered locally" if i == 0 else None)
            yield ev

    def _local_text(self, session, prompt: str | list[int], gen) -> Iterator[Event]:
        """Local raw-text events; a failure before any text raises _Escalate (the cloud may answer)."""
        session.reset()  # raw text shares no conversation state
        started = False
        try:
            for r in stream_generate(session.engine, session.tokenizer, prompt, **gen, **self.draft_kw):
                started = True
                yield Event(r.text, LOCAL, None, r.finish_reason, r.prompt_tokens, r.generation_tokens,
                            prompt_tps=r.prompt_tps, generation_tps=r.generation_tps, draft=r.draft)
        except UserError as e:
            yield Event("", LOCAL, None, "error", error=str(e))
        except Exception as e:  # noqa: BLE001 -- see _local
            why = f"the local run failed ({_one_line(e)})"
            if not started:
                raise _Escalate(why, retry_local=False) from None
            yield Event("", LOCAL, None, "error", error=why)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _too_long(what: str, tokens: int, ctx: int) -> str:
    return f"the {what} ({tokens} tokens) exceeds the local context of {ctx}"
