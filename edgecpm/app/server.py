"""`edgecpm serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over a Router.

/v1/chat/completions (JSON or server-sent events), /v1/completions, /v1/models, /health.
One generation runs at a time per model, in a worker thread; up to --queue-size requests wait, more
get HTTP 429. A client that disconnects mid-stream stops its generation. Each answer says where it
came from: the `X-Edgecpm-Source` header and an `edgecpm` field ({"source", "reason"}).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from edgecpm.app.router import Event, Router


class Gate:
    """One generation at a time; at most `queue_size` more waiting."""

    def __init__(self, queue_size: int):
        self.limit, self.inside, self.lock = queue_size + 1, 0, asyncio.Lock()

    def enter(self) -> bool:
        if self.inside >= self.limit:
            return False
        self.inside += 1
        return True

    def leave(self) -> None:
        self.inside -= 1


def _gen_kwargs(body: dict) -> dict:
    stop = body.get("stop")
    return dict(max_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
                temp=float(body.get("temperature") or 0.0), top_p=float(body.get("top_p") or 1.0),
                top_k=int(body.get("top_k") or 0), min_p=float(body.get("min_p") or 0.0), seed=body.get("seed"),
                stop=[stop] if isinstance(stop, str) else list(stop or []))


def create_app(router: Router, model_name: str, queue_size: int = 8) -> FastAPI:
    app = FastAPI(title="edgecpm")
    pool = ThreadPoolExecutor(1, thread_name_prefix="edgecpm-gen")
    gate: Gate | None = None
    stats = {"answered": 0, "cancelled": 0, "rejected": 0}

    def get_gate() -> Gate:
        nonlocal gate
        gate = gate or Gate(queue_size)  # made inside the server's event loop
        return gate

    async def events(make, cancel: threading.Event):
        """Run make() (an Event iterator) in the worker thread; yield its events; stop it on exit."""
        loop, q = asyncio.get_running_loop(), asyncio.Queue()

        def work():
            it = make()
            try:
                for ev in it:
                    if cancel.is_set():  # the client went away: stop generating
                        stats["cancelled"] += 1
                        break
                    loop.call_soon_threadsafe(q.put_nowait, ev)
                else:
                    stats["answered"] += 1
            except Exception as e:  # reported to the client as a 500, the server lives on
                loop.call_soon_threadsafe(q.put_nowait, e)
            finally:
                it.close()
                loop.call_soon_threadsafe(q.put_nowait, None)

        fut = loop.run_in_executor(pool, work)
        try:
            while (item := await q.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            cancel.set()
            await fut

    async def handle(request: Request, make, stream: bool, kind: str):
        g = get_gate()
        if not g.enter():
            stats["rejected"] += 1
            return JSONResponse({"error": {"message": "server busy: the queue is full, retry later",
                                           "type": "rate_limit"}}, status_code=429)
        await g.lock.acquire()
        cancel = threading.Event()
        it = events(make, cancel)

        def done():  # synchronous, so it runs even when the request's task is being cancelled
            cancel.set()
            g.lock.release()  # the next job queues behind this one in the single worker thread
            g.leave()

        try:
            first = await it.__anext__()
        except BaseException:
            done()
            raise
        if first.error and not first.text:
            done()
            await it.aclose()
            return JSONResponse({"error": {"message": first.error, "type": "unavailable"}}, status_code=503,
                                headers={"X-Edgecpm-Source": first.source})
        meta = {"id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}",
                "created": int(time.time()), "model": model_name}
        headers = {"X-Edgecpm-Source": first.source}
        if not stream:
            try:
                evs = [first] + [ev async for ev in it]
            finally:
                done()
            return JSONResponse(_full(kind, meta, evs), headers=headers)

        async def sse():
            try:
                yield _chunk(kind, meta, Event("", first.source), role=True)
                last = first
                async for ev in _prepend(first, it):
                    if await request.is_disconnected():
                        break
                    last = ev
                    if ev.text:
                        yield _chunk(kind, meta, ev)
                yield _chunk(kind, meta, last, final=True)
                yield "data: [DONE]\n\n"
            finally:
                done()
                await it.aclose()

        return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "busy": get_gate().inside, **stats}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "edgecpm"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _json(request)
        if isinstance(body, JSONResponse):
            return body
        messages = [{"role": m["role"], "content": m.get("content") or ""} for m in body.get("messages") or []]
        if not messages:
            return _bad("messages must be a non-empty list")
        kw = _gen_kwargs(body)
        return await handle(request, lambda: router.respond(messages, **kw), bool(body.get("stream")), "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _json(request)
        if isinstance(body, JSONResponse):
            return body
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _bad("prompt must be a non-empty string")
        kw = _gen_kwargs(body)
        return await handle(request, lambda: router.complete(prompt, **kw), bool(body.get("stream")), "text")

    return app


async def _prepend(first, it):
    yield first
    async for ev in it:
        yield ev


async def _json(request: Request):
    try:
        body = await request.json()
    except ValueError:
        return _bad("the body is not valid JSON")
    return body if isinstance(body, dict) else _bad("the body must be a JSON object")


def _bad(msg: str) -> JSONResponse:
    return JSONResponse({"error": {"message": msg, "type": "invalid_request_error"}}, status_code=400)


def _usage(evs: list[Event]) -> dict:
    last = evs[-1]
    p, c = last.prompt_tokens or 0, last.completion_tokens or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _full(kind: str, meta: dict, evs: list[Event]) -> dict:
    text, last = "".join(e.text for e in evs), evs[-1]
    choice = {"index": 0, "finish_reason": last.finish_reason}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {**meta, "object": "chat.completion" if kind == "chat" else "text_completion", "choices": [choice],
            "usage": _usage(evs), "edgecpm": {"source": evs[0].source, "reason": evs[0].reason}}


def _chunk(kind: str, meta: dict, ev: Event, role: bool = False, final: bool = False) -> str:
    if kind == "chat":
        delta = {"role": "assistant"} if role else ({} if final else {"content": ev.text})
        choice = {"index": 0, "delta": delta, "finish_reason": ev.finish_reason if final else None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": "" if final or role else ev.text,
                  "finish_reason": ev.finish_reason if final else None}
        obj = "text_completion"
    data = {**meta, "object": obj, "choices": [choice]}
    if final:
        data["usage"] = _usage([ev])
        data["edgecpm"] = {"source": ev.source}
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def serve(host: str = "127.0.0.1", port: int = 8000, queue_size: int = 8, router: Router = None,
          log_level: str = "warning") -> None:
    """Run the server until interrupted."""
    import uvicorn

    router.session()  # load now: the first request should not pay for it
    name = str(router.artifact).rstrip("/").split("/")[-1]
    print(f"edgecpm serve: {name} on http://{host}:{port}/v1 (queue {queue_size})", flush=True)
    uvicorn.run(create_app(router, name, queue_size), host=host, port=port, log_level=log_level)
