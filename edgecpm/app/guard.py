"""What stands between the network and the API, so the server is safe to expose.

- Guard, an ASGI middleware in front of every route, before a byte of the body is read:
  a `Host` header that is not the bound host, localhost, 127.0.0.1 or [::1] (any port), nor one named
  with --allow-host, gets 403 (a DNS-rebinding page must not reach a loopback server); a POST that is
  not `Content-Type: application/json` gets 415 (a web page can send text/plain or form posts across
  origins without asking, never JSON); a body over --max-body gets 413 at once: from Content-Length
  when there is one, else by counting bytes while it streams in (chunked uploads); and at most
  `max_inflight` requests with a body are handled at once (more get 429), so memory stays bounded by
  about max_inflight x max_body however many clients connect.
- BearerKey, a FastAPI dependency on the /v1 routes: with --api-key set, `Authorization: Bearer KEY`
  is required (compared in constant time), else 401.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from edgecpm.app.openai_models import ApiError, error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_GONE = object()  # the client disconnected while sending its body


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bound: str, extra=()) -> frozenset[str] | None:
    """The Host names accepted: loopback names, the bound host, and `extra` (None: any, when '*' is in it)."""
    extra = {h.strip().lower().strip("[]") for h in extra}
    if "*" in extra:
        return None
    bound = bound.lower().strip("[]")
    return frozenset(LOOPBACK_NAMES | extra | ({bound} if bound not in WILDCARDS else set()))


def host_name(header: str) -> str:
    """`Host` header value -> the name without its port: "[::1]:80" -> "::1", "a.b:8000" -> "a.b"."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class Guard:
    """ASGI middleware: Host (403), Content-Type (415) and body-size (413) checks; see the module doc."""

    def __init__(self, app, max_body: int, hosts: frozenset[str] | None, max_inflight: int = 64):
        self.app, self.max_body, self.hosts, self.max_inflight, self.inflight = app, max_body, hosts, max_inflight, 0

    async def __call__(self, scope, receive, send) -> None:
        """Refuse on the headers, else read the body within the limit and pass it on, replayed."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope["method"], Headers(scope=scope))
        if refusal is not None:
            return await refusal(scope, receive, send)
        if scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        if self.inflight >= self.max_inflight:
            return await error_response(429, "server busy: too many requests at once, retry later",
                                        "rate_limit_error", code="rate_limit_exceeded")(scope, receive, send)
        self.inflight += 1
        try:
            body = await self.read_body(receive)
            if body is None:
                return await self.too_large()(scope, receive, send)
            if body is not _GONE:
                await self.app(scope, _Replay(body, receive), send)
        finally:
            self.inflight -= 1

    def refusal(self, method: str, headers: Headers):
        """The error response for a request refused on its headers alone, else None."""
        if self.hosts is not None and host_name(headers.get("host", "")) not in self.hosts:
            return error_response(403, f"Host {headers.get('host', '')!r} is not served here; start the server "
                                  "with --allow-host NAME to accept it", "permission_error", code="host_not_allowed")
        if method not in BODY_METHODS:
            return None
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return error_response(415, f"the body must be sent as Content-Type: application/json, not "
                                  f"{ctype or 'none'!r}", code="unsupported_media_type")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return self.too_large() if length.isdigit() else error_response(400, "bad Content-Length")
        return None

    def too_large(self):
        return error_response(413, f"the request body exceeds {self.max_body} bytes (--max-body)",
                              code="request_too_large")

    async def read_body(self, receive):
        """The whole body; None as soon as it grows past max_body (the rest is never stored); _GONE if
        the client disconnected."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return _GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


class _Replay:
    """An ASGI receive that hands over the already-read body once, then passes on (disconnects)."""

    def __init__(self, body: bytes, receive):
        self.body, self.receive = body, receive

    async def __call__(self):
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()


bearer = HTTPBearer(auto_error=False)


class BearerKey:
    """Dependency: with a key set, `Authorization: Bearer KEY` is required (constant-time compare)."""

    def __init__(self, key: str | None):
        self.key = key.encode() if key else None

    async def __call__(self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if self.key is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        if not secrets.compare_digest(given, self.key):
            raise ApiError(401, "a valid API key is required: send Authorization: Bearer KEY",
                           "authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
