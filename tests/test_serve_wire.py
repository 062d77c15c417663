"""The server's wire format against a real `edgecpm serve` on 127.0.0.1: every bad field is a 400 with
OpenAI's error JSON (never FastAPI's 422 or a 500 text/plain), content-part messages, model names,
usage that counts the whole prompt, and the Host / Content-Type / body-size guards."""

import time

import httpx
import pytest
from servers import EdgecpmServer

HI = [{"role": "user", "content": "Hello world, how are you today?"}]


@pytest.fixture(scope="module")
def server(tiny):
    s = EdgecpmServer(tiny("llama", 32)[0])
    yield s
    s.stop()


def chat(server, body, **kw) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60, **kw)


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and "\n" not in err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


@pytest.mark.parametrize("body,param", [
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
    ({"messages": HI, "max_tokens": "5"}, "max_tokens"),
    ({"messages": HI, "max_tokens": -1}, "max_tokens"),
    ({"messages": HI, "max_tokens": 0}, "max_tokens"),  # refused, not silently 256
    ({"messages": HI, "max_tokens": 2.5}, "max_tokens"),
    ({"messages": HI, "temperature": "0.5"}, "temperature"),
    ({"messages": HI, "temperature": -0.1}, "temperature"),
    ({"messages": HI, "top_p": 0}, "top_p"),
    ({"messages": HI, "top_p": 1.5}, "top_p"),
    ({"messages": HI, "min_p": 2}, "min_p"),
    ({"messages": HI, "top_k": -1}, "top_k"),
    ({"messages": HI, "seed": -3}, "seed"),
    ({"messages": HI, "stop": 1}, "stop"),
    ({"messages": HI, "stream": "false"}, "stream"),
    ({"messages": HI, "n": 2}, "n"),
    ({"messages": HI, "model": 7}, "model"),
    ([HI], None),
])
def test_wrong_fields_get_400_openai_json(server, body, param):
    assert_openai_error(chat(server, body), 400, param)


@pytest.mark.parametrize("content,status", [(b"{not json", 400), (b"", 400), (b"null", 400), (b'"text"', 400),
                                            (b'{"prompt": "x", "temperature": NaN}', 400)])
def test_bodies_that_are_not_a_json_object(server, content, status):
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = httpx.post(f"{server.url}{path}", content=content, headers={"content-type": "application/json"})
        assert_openai_error(r, status)


@pytest.mark.parametrize("body", [{"prompt": ""}, {"prompt": 3}, {"prompt": ["a", "b"]}, {"prompt": "x", "n": 3},
                                  {"prompt": "x", "max_tokens": "3"}])
def test_completions_fields(server, body):
    assert_openai_error(httpx.post(f"{server.url}/v1/completions", json=body), 400)


def test_content_parts_are_joined_and_models_have_aliases(server, tiny):
    plain = chat(server, {"messages": HI, "max_tokens": 8}).json()["choices"][0]["message"]["content"]
    parts = [{"type": "text", "text": "Hello world, "}, {"type": "text", "text": "how are you today?"}]
    for model in ("default", "edgecpm", "llama-q32"):
        r = chat(server, {"model": model, "messages": [{"role": "user", "content": parts}], "max_tokens": 8})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == plain, r.text
    err = assert_openai_error(chat(server, {"model": "gpt-4o", "messages": HI}), 404, "model")
    assert err["code"] == "model_not_found" and "llama-q32" in err["message"]
    assert_openai_error(httpx.get(f"{server.url}/v1/nothing"), 404)
    assert_openai_error(httpx.get(f"{server.url}/v1/chat/completions"), 405)


def test_usage_counts_the_whole_prompt_even_when_cached(server):
    body = {"messages": HI, "max_tokens": 4}
    first, again = (chat(server, body).json()["usage"] for _ in range(2))  # the second reuses the state
    assert first["prompt_tokens"] > 5 and again == first
    longer = chat(server, {"messages": HI + [{"role": "assistant", "content": "Fine."},
                                             {"role": "user", "content": "And you?"}], "max_tokens": 4})
    assert longer.json()["usage"]["prompt_tokens"] > first["prompt_tokens"] + 4


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_posts_that_are_not_json_get_415(server, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b'{"messages": []}', headers=headers)
    assert_openai_error(r, 415)


@pytest.mark.parametrize("host,status", [("evil.example", 403), ("evil.example:8000", 403), ("127.0.0.2", 403),
                                         ("localhost:1234", 200), ("127.0.0.1", 200), ("[::1]:80", 200)])
def test_host_header_guards_against_dns_rebinding(server, host, status):
    r = httpx.get(f"{server.url}/health", headers={"host": host})
    assert r.status_code == status, r.text
    if status == 403:
        assert_openai_error(r, 403)
        assert_openai_error(chat(server, {"messages": HI}, headers={"host": host}), 403)


def test_ten_megabytes_get_413_at_once_without_growing_the_server(server):
    before = server.rss_mb()
    big = b'{"messages": "' + b"x" * (10 << 20) + b'"}'
    t0 = time.perf_counter()
    r = httpx.post(f"{server.url}/v1/chat/completions", content=big, headers={"content-type": "application/json"},
                   timeout=10)
    assert time.perf_counter() - t0 < 1.0
    assert_openai_error(r, 413)

    def chunks():  # no Content-Length: the server counts while the body streams in
        for _ in range(160):
            yield b"x" * (64 << 10)

    r = httpx.post(f"{server.url}/v1/completions", content=chunks(), headers={"content-type": "application/json"},
                   timeout=10)
    assert_openai_error(r, 413)
    assert server.rss_mb() - before < 50, (before, server.rss_mb())
    assert chat(server, {"messages": HI, "max_tokens": 2}).status_code == 200  # and it still serves

