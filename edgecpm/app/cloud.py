"""A client for any OpenAI-compatible chat endpoint (a provider, or another `edgecpm serve`).

Configured by flags or the environment: EDGECPM_CLOUD_URL (base URL, e.g. https://host/v1),
EDGECPM_CLOUD_MODEL, EDGECPM_CLOUD_API_KEY. The key is sent only as a bearer header: it is never
printed, logged, or put in an error message. Every failure (refused, timeout, HTTP error, malformed
JSON, a stream cut short) is a CloudError with a one-line reason; nothing hangs past the timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

ENV_URL, ENV_MODEL, ENV_KEY = "EDGECPM_CLOUD_URL", "EDGECPM_CLOUD_MODEL", "EDGECPM_CLOUD_API_KEY"


class CloudError(Exception):
    """The cloud could not answer; str() is a one-line reason without secrets."""


@dataclass(frozen=True)
class CloudConfig:
    url: str
    model: str = "default"
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 30.0

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
        return f"CloudClient({self.config.url!r}, model={self.config.model!r})"

    @contextlib.contextmanager
    def _response(self, body: dict, path: str, broken: str):
        """POST body; yield the 200 response; any failure on the way becomes a one-line CloudError
        (`broken` says what a malformed or cut answer is called)."""
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        self.requests += 1
        t, url = self.config.timeout, self.config.url
        with httpx.Client(timeout=httpx.Timeout(t, connect=min(t, 10.0))) as client:
            try:
                resp = client.send(client.build_request("POST", f"{url}{path}", json=body, headers=headers),
                                   stream=True)
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
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
                raise CloudError(f"{broken} from {url}") from None
            finally:
                resp.close()

    def chat(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0) -> CloudAnswer:
        """The whole answer (non-streaming request)."""
        return self._whole({"messages": messages}, max_tokens, temperature, "/chat/completions")

    def complete(self, prompt: str, max_tokens: int = 256, temperature: float = 0.0) -> CloudAnswer:
        """A raw-text continuation (/completions)."""
        return self._whole({"prompt": prompt}, max_tokens, temperature, "/completions")

    def _whole(self, body: dict, max_tokens: int, temperature: float, path: str) -> CloudAnswer:
        body = {"model": self.config.model, **body, "max_tokens": max_tokens, "temperature": temperature,
                "stream": False}
        with self._response(body, path, "a malformed answer") as resp:
            data = json.loads(resp.read())
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            text = choice["message"]["content"] if "message" in choice else choice["text"]
            return CloudAnswer(str(text or ""), usage.get("prompt_tokens"), usage.get("completion_tokens"),
                               choice.get("finish_reason"))

    def stream(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        """Text deltas of a streamed answer; a stream that ends without [DONE] is a CloudError."""
        body = {"model": self.config.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "stream": True}
        with self._response(body, "/chat/completions", "a stream cut short or malformed") as resp:
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                delta = json.loads(data)["choices"][0].get("delta") or {}
                if delta.get("content"):
                    yield delta["content"]
            raise CloudError(f"the stream from {self.config.url} was cut short")
