"""`edgecpm serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over a Router.

The parts, each in its own module:
  guard          Host check (403), JSON-only POSTs (415), the body limit (413), the bearer API key (401)
  worker         admission: one generation at a time in a worker thread, a bounded queue (429),
                 cancellation when the client disconnects
  openai_models  the request/response models (pydantic) and the error body
  openai_api     the routes and the error handlers (every error is OpenAI's error JSON)
This module wires them (create_app) and starts the server (serve). Startup fails with one line (exit 2)
before the model is loaded when the port is out of range or taken, or when a non-loopback host has no
API key; and when the model cannot load and no cloud is configured to answer instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from edgecpm.app.cloud import redact_url
from edgecpm.app.guard import Guard, allowed_hosts, is_loopback
from edgecpm.app.openai_api import Api, install_error_handlers
from edgecpm.app.router import Router
from edgecpm.app.worker import Worker
from edgecpm.contract import UserError

MAX_BODY = 1 << 20  # bytes
ENV_API_KEY = "EDGECPM_API_KEY"


def create_app(router: Router, model_name: str, queue_size: int = 8, max_body: int = MAX_BODY,
               api_key: str | None = None, hosts: frozenset[str] | None = allowed_hosts("127.0.0.1")) -> FastAPI:
    """The ASGI app: `hosts` are the accepted Host names (None: any), `api_key` None: no key asked."""
    worker = Worker(queue_size)
    api = Api(router, worker, model_name, scrub=partial(scrub, secrets=_secrets(router)))
    app = FastAPI(title="edgecpm", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    install_error_handlers(app)
    app.include_router(api.routes(api_key))
    app.add_middleware(Guard, max_body=max_body, hosts=hosts)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    app.state.worker.shutdown()


def _secrets(router: Router) -> list[tuple[str, str]]:
    """(secret, shown instead) pairs for text that goes out: the cloud URL with credentials, the cloud key."""
    cloud = getattr(router, "cloud", None)
    if cloud is None:
        return []
    pairs = [(cloud.config.url, redact_url(cloud.config.url))]
    if cloud.config.api_key:
        pairs.append((cloud.config.api_key, "***"))
    return pairs


def scrub(text: str | None, secrets: list[tuple[str, str]]) -> str | None:
    """`text` with every secret replaced (the router's reasons and errors may name the cloud)."""
    for secret, shown in secrets:
        if text and secret:
            text = text.replace(secret, shown)
    return text


def check_exposure(host: str, api_key: str | None) -> None:
    """Beyond loopback, anyone who can reach the port could drive generation or spend the cloud key."""
    if not is_loopback(host) and not api_key:
        raise UserError(f"--host {host} makes the server reachable from other machines: set --api-key KEY "
                        f"(or env {ENV_API_KEY}), or serve on 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a one-line UserError (out of range, in use, not allowed)."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port} is out of range: use 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        why = {errno.EADDRINUSE: "the port is already in use", errno.EACCES: "permission denied",
               errno.EADDRNOTAVAIL: "no such address on this machine"}.get(e.errno, e.strerror or type(e).__name__)
        raise UserError(f"cannot listen on {host}:{port}: {why}; choose another --port or --host") from None
    return sock


def load_model(router: Router) -> str:
    """Load the model now (the first request should not pay for it); return the served name. No model and
    no cloud is a one-line UserError; no model with a cloud is said once, and the cloud answers."""
    if router.session() is None:
        if router.cloud is None:
            raise UserError(f"cannot serve: the model did not load ({router.local_problem}), and no cloud is "
                            "configured to answer instead (--cloud-url)")
        print(f"edgecpm serve: the local model is unavailable ({router.local_problem}); the cloud answers",
              file=sys.stderr, flush=True)
    return Path(str(router.artifact).rstrip("/")).name


def serve(host: str = "127.0.0.1", port: int = 8000, queue_size: int = 8, router: Router = None,
          max_body: int = MAX_BODY, api_key: str | None = None, allow_host=(), log_level: str = "warning") -> None:
    """Run the server until interrupted."""
    import uvicorn

    api_key = api_key or os.environ.get(ENV_API_KEY) or None
    check_exposure(host, api_key)
    if max_body < 1:
        raise UserError(f"--max-body {max_body} must be at least 1 byte")
    sock = bind(host, port)  # before loading: a taken port fails in a second, not after the load
    try:
        name = load_model(router)
        app = create_app(router, name, queue_size, max_body, api_key, allowed_hosts(host, allow_host))
        cloud = f", cloud {redact_url(router.cloud.config.url)}" if router.cloud else ""
        shown = f"[{host}]" if ":" in host else host
        print(f"edgecpm serve: {name} on http://{shown}:{port}/v1 (queue {queue_size}, body limit {max_body} "
              f"bytes, API key {'required' if api_key else 'off'}{cloud})", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()
