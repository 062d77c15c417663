"""The OpenAI wire format over a Router: /v1/chat/completions (JSON or server-sent events),
/v1/completions, /v1/models, and /health; plus the error handlers that make every failure OpenAI's
error JSON (validation: 400, never FastAPI's 422; unknown route: 404; anything unexpected: 500).

Requests arrive validated (openai_models); generation goes through the Worker (one at a time, 429 when
the queue is full, cancelled when the client disconnects). The model may be named as the served name,
or by the aliases "default" and "edgecpm"; any other name is 404. Each answer says where it came from:
the `X-Edgecpm-Source` header and an `edgecpm` field ({"source", "reason"}).
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import partial

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from edgecpm.app.guard import BearerKey
from edgecpm.app.openai_models import (
    ApiError,
    AssistantMessage,
    ChatChoice,
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    ChunkChoice,
    Completion,
    CompletionRequest,
    ErrorBody,
    ErrorDetail,
    ModelCard,
    ModelList,
    Provenance,
    TextChoice,
    Usage,
    error_response,
)
from edgecpm.app.router import Event, Router
from edgecpm.app.worker import Busy, Worker

ALIASES = ("default", "edgecpm")
log = logging.getLogger("edgecpm.serve")


class Api:
    """The routes, over one Router and one Worker. `scrub` removes secrets from text the router made."""

    def __init__(self, router: Router, worker: Worker, model_name: str, scrub=lambda text: text):
        self.router, self.worker, self.name, self.scrub = router, worker, model_name, scrub

    def routes(self, api_key: str | None) -> APIRouter:
        v1 = APIRouter(dependencies=[Depends(BearerKey(api_key))])
        v1.add_api_route("/v1/models", self.models, methods=["GET"], response_model=ModelList)
        v1.add_api_route("/v1/chat/completions", self.chat, methods=["POST"])
        v1.add_api_route("/v1/completions", self.completions, methods=["POST"])
        open_ = APIRouter()  # no key needed
        open_.add_api_route("/health", self.health, methods=["GET"])
        open_.include_router(v1)
        return open_

    async def health(self) -> dict:
        """Open without the key (it says nothing secret): is the model loaded, and how busy is the server."""
        loaded = self.router.session() is not None  # loaded (or failed) at startup: no work here
        return {"status": "ok", "model": self.name, "loaded": loaded,
                "answers_from": "local" if loaded else "cloud" if self.router.cloud else "nowhere",
                **self.worker.stats()}

    async def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.name)])

    async def chat(self, body: ChatRequest, request: Request) -> Response:
        self._check_model(body.model)
        messages = [m.as_dict() for m in body.messages]
        make = partial(self.router.respond, messages, **body.gen_kwargs())
        return await self._answer(request, make, bool(body.stream), "chat")

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        self._check_model(body.model)
        make = partial(self.router.complete, body.text(), **body.gen_kwargs())
        return await self._answer(request, make, bool(body.stream), "text")

    def _check_model(self, model: str | None) -> None:
        if model is not None and model not in (self.name, *ALIASES):
            raise ApiError(404, f"the model {model!r} is not served here; this server serves {self.name!r} "
                           f"(also as {' or '.join(map(repr, ALIASES))})", param="model", code="model_not_found")

    async def _answer(self, request: Request, make, stream: bool, kind: str) -> Response:
        """Admit `make` (429 when full), wait for its first event (503 when no answer can be made), then
        answer whole or as server-sent events. The job is closed on every path (the slot is freed)."""
        try:
            job = self.worker.submit(make, request.is_disconnected)
        except Busy:
            raise ApiError(429, "server busy: the queue is full, retry later", "rate_limit_error",
                           code="rate_limit_exceeded", headers={"Retry-After": "1"}) from None
        try:
            first = await job.next()
        except Exception as e:  # noqa: BLE001 -- the generation failed before its first word: a 500, in one line
            log.error("generation failed: %s", type(e).__name__)
            return error_response(500, f"the generation failed ({type(e).__name__})", "server_error")
        finally:
            if job.ended:
                job.close()
        if first is None or (first.error and not first.text):
            job.close()  # (a no-op when already closed)
            why = self.scrub(first.error) if first else "the request was cancelled"
            return error_response(503, why, "unavailable", code="no_answer",
                                  headers={"X-Edgecpm-Source": first.source if first else "local"})
        head = _Head(kind, self.name)
        headers = {"X-Edgecpm-Source": first.source}
        if stream:
            return StreamingResponse(self._sse(head, first, job), media_type="text/event-stream", headers=headers)
        events = [first]
        try:
            while (ev := await job.next()) is not None:
                events.append(ev)
        finally:
            job.close()
        return Response(head.whole(events, self.scrub(first.reason)).model_dump_json(),
                        media_type="application/json", headers=headers)

    async def _sse(self, head: _Head, first: Event, job):
        """Server-sent events: a role chunk, the text, a final chunk with usage, [DONE]."""
        try:
            yield head.chunk(Event("", first.source), role=True)
            last, ev = first, first
            while ev is not None:
                last = ev
                if ev.text:
                    yield head.chunk(ev)
                ev = await job.next()
            yield head.chunk(last, final=True, reason=self.scrub(first.reason))
            yield "data: [DONE]\n\n"
        except Exception as e:  # noqa: BLE001 -- the status line is sent: say it in the stream, then end
            log.error("generation failed mid-stream: %s", type(e).__name__)
            yield f"data: {_error_json('the generation failed (' + type(e).__name__ + ')')}\n\n"
        finally:
            job.close()


class _Head:
    """The id, time and model an answer's objects share; builds whole answers and stream chunks."""

    def __init__(self, kind: str, model: str):
        self.kind, self.model, self.created = kind, model, int(time.time())
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"

    def whole(self, events: list[Event], reason: str | None):
        text, last = "".join(e.text for e in events), events[-1]
        common = dict(id=self.id, created=self.created, model=self.model, usage=_usage(last),
                      edgecpm=_provenance(events[0].source, reason, last))
        if self.kind == "chat":
            choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=last.finish_reason)
            return ChatCompletion(choices=[choice], **common)
        return Completion(choices=[TextChoice(text=text, finish_reason=last.finish_reason)], **common)

    def chunk(self, ev: Event, role: bool = False, final: bool = False, reason: str | None = None) -> str:
        common = dict(id=self.id, created=self.created, model=self.model)
        if final:
            common.update(usage=_usage(ev), edgecpm=_provenance(ev.source, reason, ev))
        finish = ev.finish_reason if final else None
        if self.kind == "chat":
            delta = {"role": "assistant"} if role else {} if final else {"content": ev.text}
            obj = ChatChunk(choices=[ChunkChoice(delta=delta, finish_reason=finish)], **common)
        else:
            obj = Completion(choices=[TextChoice(text="" if role or final else ev.text, finish_reason=finish)],
                             **common)
        return f"data: {obj.model_dump_json()}\n\n"


def _provenance(source: str, reason: str | None, last: Event) -> Provenance:
    d = last.draft
    return Provenance(source=source, reason=reason, drafted=d and d.drafted, accepted=d and d.accepted)


def _usage(last: Event) -> Usage:
    p, c = last.prompt_tokens or 0, last.completion_tokens or 0
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _error_json(message: str) -> str:
    return ErrorBody(error=ErrorDetail(message=message, type="server_error")).model_dump_json()


TAGS = frozenset({"str", "int", "float", "bool", "none"})  # pydantic names union members in error locations


def _where(loc) -> str:
    """("body", "messages", 0, "content", "str") -> "messages.0.content"."""
    keep = [str(p) for p in loc[1:] if not (isinstance(p, str) and (p in TAGS or any(c in p for c in "[-(")))]
    return ".".join(keep)


async def on_validation_error(request: Request, exc: RequestValidationError):
    """FastAPI's 422 becomes OpenAI's 400, one line naming the field (or the JSON problem)."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return error_response(400, f"the body is not valid JSON ({detail})".replace(" ()", ""), code="invalid_json")
    by_field: dict[str, list[str]] = {}
    for e in errors:
        by_field.setdefault(_where(e.get("loc", ())), []).append(e.get("msg", "invalid"))
    parts = [f"{f or 'body'}: {_either(msgs)}" for f, msgs in by_field.items()]
    param = _where(first.get("loc", ())) or None
    return error_response(400, "; ".join(parts[:4]), param=param, code="invalid_value")


def _either(messages: list[str]) -> str:
    """Pydantic's messages for one field, as one clause: "Input should be a valid string or a valid list"."""
    out = []
    for m in dict.fromkeys(m.removeprefix("Value error, ") for m in messages):
        out.append(m.removeprefix("Input should be ") if out and m.startswith("Input should be ") else m)
    return " or ".join(out)


async def on_api_error(request: Request, exc: ApiError):
    return exc.response()


async def on_http_error(request: Request, exc: HTTPException):
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), kind, headers=getattr(exc, "headers", None))


async def on_unexpected(request: Request, exc: Exception):
    log.error("unexpected %s on %s", type(exc).__name__, request.url.path)
    return error_response(500, f"internal error ({type(exc).__name__})", "server_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
