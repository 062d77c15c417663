"""A client for any OpenAI-compatible chat endpoint (a provider, or another `edgecpm serve`).

Configured by flags or the environment: EDGECPM_CLOUD_URL (base URL, e.g. https://host/v1),
EDGECPM_CLOUD_MODEL, EDGECPM_CLOUD_API_KEY. The key is sent only as a bearer header: it is never
printed, logged, or put in an error message. Every failure (refused, timeout, HTTP error, malformed
JSON, a stream cut short) is a CloudError with a one-line reason; nothing hangs past the timeout.
"""

from __future__ import annotations

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

    def _post(self, body: dict, path: str = "/chat/completions"):
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        self.requests += 1
        t = self.config.timeout
        client = httpx.Client(timeout=httpx.Timeout(t, connect=min(t, 10.0)))
        try:
            req = client.build_request("POST", f"{self.config.url}{path}", json=body, headers=headers)
            resp = client.send(req, stream=True)
        except httpx.TimeoutException:
            client.close()
            raise CloudError(f"{self.config.url} did not answer within {t:g} s") from None
        except httpx.HTTPError as e:
            client.close()
            raise CloudError(f"cannot reach {self.config.url} ({type(e).__name__})") from None
        if resp.status_code != 200:
            resp.close()
            client.close()
            raise CloudError(f"{self.config.url} answered HTTP {resp.status_code}")
        return client, resp

    def chat(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0) -> CloudAnswer:
        """The whole answer (non-streaming request)."""
        return self._whole({"messages": messages}, max_tokens, temperature, "/chat/completions")

    def complete(self, prompt: str, max_tokens: int = 256, temperature: float = 0.0) -> CloudAnswer:
        """A raw-text continuation (/completions)."""
        return self._whole({"prompt": prompt}, max_tokens, temperature, "/completions")

    def _whole(self, body: dict, max_tokens: int, temperature: float, path: str) -> CloudAnswer:
        body = {"model": self.config.model, **body, "max_tokens": max_tokens, "temperature": temperature,
                "stream": False}
        client, resp = self._post(body, path)
        try:
            data = json.loads(resp.read())
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            text = choice["message"]["content"] if "message" in choice else choice["text"]
            return CloudAnswer(str(text or ""), usage.get("prompt_tokens"), usage.get("completion_tokens"),
                               choice.get("finish_reason"))
        except httpx.TimeoutException:
            raise CloudError(f"{self.config.url} stalled past {self.config.timeout:g} s") from None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            raise CloudError(f"{self.config.url} sent a malformed answer") from None
        finally:
            resp.close()
            client.close()

    def stream(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        """Text deltas of a streamed answer; a stream that ends without [DONE] is a CloudError."""
        body = {"model": self.config.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "stream": True}
        client, resp = self._post(body)
        try:
            done = False
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                delta = json.loads(data)["choices"][0].get("delta") or {}
                if delta.get("content"):
                    yield delta["content"]
            if not done:
                raise CloudError(f"the stream from {self.config.url} was cut short")
        except httpx.TimeoutException:
            raise CloudError(f"{self.config.url} stalled past {self.config.timeout:g} s") from None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            raise CloudError(f"the stream from {self.config.url} was cut short or malformed") from None
        finally:
            resp.close()
            client.close()
