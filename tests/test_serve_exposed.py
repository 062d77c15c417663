"""A server safe to expose, tested on 127.0.0.1: startup refusals (one line, exit 2, before loading),
the bearer API key, allowed Host names, credentials never shown, abandoned requests that free their
slots, and /health answered while a trickling cloud holds the worker."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from servers import EdgecpmServer, FakeCloud, free_port

from edgecpm.app.defaults import default_artifact

HI = [{"role": "user", "content": "Hello world, how are you today?"}]
QUIET = {"EDGECPM_API_KEY": "", "EDGECPM_CLOUD_URL": ""}  # whatever the test machine has set


def serve_once(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecpm", "serve", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **QUIET})


@pytest.mark.parametrize("case", ["exposed", "exposed6", "range", "zero", "in_use", "no_model"])
def test_startup_refusals_are_one_line_exit_2(tiny, tmp_path, case):
    art = str(tiny("llama", 32)[0])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args, expect = {
            "exposed": ([art, "--host", "0.0.0.0"], "--api-key"),
            "exposed6": ([art, "--host", "::"], "--api-key"),
            "range": ([art, "--port", "70000"], "out of range"),
            "zero": ([art, "--port", "0"], "out of range"),
            "in_use": ([art, "--port", str(taken.getsockname()[1])], "already in use"),
            "no_model": ([str(tmp_path / "missing"), "--port", str(free_port())], "did not load"),
        }[case]
        r = serve_once(*args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr


@pytest.fixture(scope="module")
def guarded(tiny):
    """--api-key (from the environment), --allow-host, and a forced cloud that trickles one chunk a second,
    reached through a URL with a password in it and a cloud key: none of which may ever be shown."""
    cloud = FakeCloud("trickle")
    server = EdgecpmServer(tiny("llama", 32)[0], "--allow-host", "edge.example", "--cloud", "--cloud-timeout", "3",
                           "--cloud-url", cloud.url.replace("http://", "http://user:hunter2@"),
                           env={"EDGECPM_API_KEY": "sk-serve-1", "EDGECPM_CLOUD_API_KEY": "sk-cloud-2"})
    shown = []
    yield server, shown
    shown.append(server.stop())
    cloud.stop()
    assert not any(secret in text for text in shown for secret in ("hunter2", "sk-cloud-2", "sk-serve-1"))


KEY = {"authorization": "Bearer sk-serve-1"}


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": "Bearer sk-serve-10"},
                                     {"authorization": "Basic sk-serve-1"}, {"authorization": "sk-serve-1"}])
def test_the_api_key_is_required(guarded, headers):
    server, _ = guarded
    for r in (httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI}, headers=headers),
              httpx.get(f"{server.url}/v1/models", headers=headers)):
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server.url}/health").status_code == 200  # open: it says nothing secret
    assert httpx.get(f"{server.url}/v1/models", headers=KEY).status_code == 200


def test_allowed_host_and_health_while_a_trickling_cloud_holds_the_worker(guarded):
    server, shown = guarded
    assert httpx.get(f"{server.url}/health", headers={"host": "other.example"}).status_code == 403
    result = {}

    def ask():
        t0 = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI, "max_tokens": 4}, timeout=30,
                       headers={**KEY, "host": "edge.example:8000"})
        result.update(r=r, took=time.perf_counter() - t0)

    asker = threading.Thread(target=ask)
    asker.start()
    time.sleep(0.5)
    while asker.is_alive():  # the worker thread waits on the cloud; the server still answers
        t0 = time.perf_counter()
        h = httpx.get(f"{server.url}/health", timeout=5)
        assert h.status_code == 200 and time.perf_counter() - t0 < 1.0
        shown.append(h.text)
        time.sleep(0.3)
    asker.join()
    r = result["r"]
    assert r.status_code == 200 and result["took"] < 3 + 2, (r.text, result["took"])
    answer = r.json()
    assert answer["edgecpm"]["source"] == "local" and "cloud failed" in answer["edgecpm"]["reason"]
    shown.append(r.text)


def test_the_openai_client_with_the_key(guarded):
    from openai import OpenAI

    server, shown = guarded
    client = OpenAI(base_url=f"{server.url}/v1", api_key="sk-serve-1", max_retries=0)
    assert client.models.list().data[0].id == "llama-q32"
    out = client.completions.create(model="default", prompt="The capital of", max_tokens=3)
    assert out.choices[0].text and out.usage.completion_tokens == 3
    shown.append(out.model_dump_json())


def test_abandoned_requests_are_cancelled_and_free_their_slots():
    """Five clients ask for long answers and hang up; the next request is not delayed behind them."""
    server = EdgecpmServer(default_artifact(), "--queue-size", "8")
    long = json.dumps({"messages": [{"role": "user", "content": "Count from 1 to 500, separated by commas."}],
                       "max_tokens": 400}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(long)}\r\n\r\n").encode()
    try:
        before = httpx.get(f"{server.url}/health").json()
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        for c in clients:
            c.sendall(head + long)
        health = wait_health(server, lambda h: h["busy"] == 5)
        assert health["busy"] == 5
        t0 = time.perf_counter()
        assert httpx.get(f"{server.url}/health").status_code == 200 and time.perf_counter() - t0 < 1.0
        for c in clients:
            c.close()
        health = wait_health(server, lambda h: h["busy"] == 0)
        assert health["busy"] == 0 and health["cancelled"] == before["cancelled"] + 5, health
        t0 = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI, "max_tokens": 4}, timeout=60)
        assert r.status_code == 200 and time.perf_counter() - t0 < 5.0  # not 5 x 400 tokens later
    finally:
        server.stop()


def wait_health(server, done, seconds: float = 10.0) -> dict:
    deadline = time.time() + seconds
    while True:
        h = httpx.get(f"{server.url}/health", timeout=5).json()
        if done(h) or time.time() > deadline:
            return h
        time.sleep(0.05)


def test_no_model_but_a_cloud_starts_and_says_so(tmp_path):
    cloud = FakeCloud("ok", answer="From the cloud.")
    server = EdgecpmServer(tmp_path / "missing", "--cloud-url", cloud.url)
    try:
        health = httpx.get(f"{server.url}/health").json()
        assert health["loaded"] is False and health["answers_from"] == "cloud"
        r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "From the cloud."
        assert r.headers["x-edgecpm-source"] == "cloud"
    finally:
        out = server.stop()
        cloud.stop()
    assert "the local model is unavailable" in out
