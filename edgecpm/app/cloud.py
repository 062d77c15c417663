"""A client for any OpenAI-compatible chat endpoint (a provider, or another `edgecpm serve`).

Configured by flags or the environment: EDGECPM_CLOUD_URL (base URL, e.g. https://host/v1),
EDGECPM_CLOUD_MODEL, EDGECPM_CLOUD_API_KEY. The key is sent only as a bearer header: it is never
printed, logged, or put in an error message. Every failure (refused, timeout, HTTP error, malformed
JSON, a stream cut short, the deadline) is a CloudError with a one-line reason.

`timeout` is a total deadline per request: connecting, the first byte and the whole stream together.
The request runs in a helper thread and the caller waits on it with what is left of the deadline, so a
cloud that trickles one byte a second cannot hold the caller past it. Credentials inside the URL
(`user:secret@host`, `?key=...`) are redacted from every message and repr (`redact_url`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

ENV_URL, ENV_MODEL, ENV_KEY = "EDGECPM_CLOUD_URL", "EDGECPM_CLOUD_MODEL", "EDGECPM_CLOUD_API_KEY"


class CloudError(Exception):
    """The cloud could not answer; str() is a one-line reason without secrets."""


def redact_url(url: str) -> str:
    """`url` with any password in it and every query value replaced by `***` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else f"***@{host}"
    query = urlencode([(k, "***") for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class CloudConfig:
    url: str
    model: str = "default"
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    def __repr__(self) -> str:
        return f"CloudConfig({redact_url(self.url)!r}, model={self.model!r}, timeout={self.timeout:g})"

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    @classmethod
    def resolve(cls, url: str | None = None, model: str | None = None, api_key: str | None = None,
                timeout: float | None = None) -> CloudConfig | None:
        """Flags first, then the environment; None when no URL is configured."""
        url = url or os.environ.get(ENV_URL)
        if not url:
            return None
        return cls(url.rstrip("/"), model or os.environ.get(ENV_MODEL) or "default",
                   api_key or os.environ.get(ENV_KEY) or None, float(timeout or 30.0))


@dataclass
class CloudAnswer:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class CloudClient:
    def __init__(self, config: CloudConfig):
        self.config = config
        self.requests = 0  # how many requests this client has sent (tests, logs)

    def __repr__(self) -> str:
        return f"CloudClient({self.config.safe_url!r}, model={self.config.model!r})"

    @contextlib.contextmanager
    def _response(self, client: httpx.Client, body: dict, path: str, broken: str):
        """POST body; yield the 200 response; any failure on the way becomes a one-line CloudError
        (`broken` says what a malformed or cut answer is called)."""
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        self.requests += 1
        t, url = self.config.timeout, self.config.safe_url
        try:
            resp = client.send(client.build_request("POST", f"{self.config.url}{path}", json=body,
                                                    headers=headers), stream=True)
        except httpx.TimeoutException:
            raise CloudError(f"{url} did not answer within {t:g} s") from None
        except httpx.HTTPError as e:
            raise CloudError(f"cannot reach {url} ({type(e).__name__})") from None
        try:
            if resp.status_code != 200:
                raise CloudError(f"{url} answered HTTP {resp.status_code}")
            yield resp
        except httpx.TimeoutException:
            raise CloudError(f"{url} stalled past {t:g} s") from None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise CloudError(f"{broken} from {url}") from None
        finally:
            resp.close()

    def _deadline(self, work) -> Iterator:
        """Run the generator function work(client) in a helper thread; yield its items until it ends, or
        raise CloudError when the total deadline passes first (the thread is told to stop and its
        connection is closed; it ends by itself within the per-read timeout at the latest)."""
        t = self.config.timeout
        end, q, stop = time.monotonic() + t, queue.Queue(), threading.Event()
        client = httpx.Client(timeout=httpx.Timeout(t, connect=min(t, 10.0)))

        def run():
            try:
                for item in work(client):
                    if stop.is_set():
                        return
                    q.put(("item", item))
                q.put(("done", None))
            except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread
                q.put(("error", e))
            finally:
                client.close()

        threading.Thread(target=run, daemon=True, name="edgecpm-cloud").start()
        try:
            while True:
                try:
                    kind, item = q.get(timeout=max(end - time.monotonic(), 0.0))
                except queue.Empty:
                    raise CloudError(f"{self.config.safe_url} did not finish within the {t:g} s "
                                     "deadline (--cloud-timeout)") from None
                if kind == "done":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            stop.set()

    def complete(self, prompt: str, max_tokens: int = 256, temperature: float = 0.0) -> CloudAnswer:
        """A raw-text continuation (/completions), whole."""
        body = {"model": self.config.model, "prompt": prompt, "max_tokens": max_tokens,
                "temperature": temperature, "stream": False}

        def work(client):
            with self._response(client, body, "/completions", "a malformed answer") as resp:
                data = json.loads(resp.read())
                choice, usage = data["choices"][0], data.get("usage") or {}
                text = choice["message"]["content"] if "message" in choice else choice["text"]
                yield CloudAnswer(str(text or ""), usage.get("prompt_tokens"), usage.get("completion_tokens"),
                                  choice.get("finish_reason"))

        answers = self._deadline(work)
        try:
            return next(answers)
        finally:
            answers.close()

    def stream(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        """Text deltas of a streamed chat answer; a stream that ends without [DONE] is a CloudError."""
        body = {"model": self.config.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "stream": True}

        def work(client):
            with self._response(client, body, "/chat/completions", "a stream cut short or malformed") as resp:
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    delta = json.loads(data)["choices"][0].get("delta") or {}
                    if delta.get("content"):
                        yield delta["content"]
                raise CloudError(f"the stream from {self.config.safe_url} was cut short")

        return self._deadline(work)
