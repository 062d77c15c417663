"""Device-cloud collaboration with real servers on 127.0.0.1 (no HTTP mocks): `edgecpm serve`, the
router's five policies, cloud failures, --local-only, and a load test."""

import concurrent.futures as cf
import os
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from servers import EdgecpmServer, FakeCloud, free_port

from edgecpm.app.cloud import CloudConfig
from edgecpm.app.router import RoutePolicy, Router

HI = [{"role": "user", "content": "Hello world, how are you today?"}]
GEN = dict(max_tokens=12)


@pytest.fixture(scope="module")
def art(tiny):
    return tiny("llama", 32)[0]


@pytest.fixture(scope="module")
def cloud_server(tiny):
    """A second edgecpm serve (another model) plays the cloud."""
    s = EdgecpmServer(tiny("qwen3", 32)[0])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def local_server(art):
    s = EdgecpmServer(art, "--queue-size", "8")
    yield s
    s.stop()


def test_serve_answers_the_openai_client_streamed_equal_to_non_streamed(local_server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{local_server.url}/v1", api_key="unused")
    whole = client.chat.completions.create(model="default", messages=HI, max_tokens=16, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.usage.prompt_tokens > 5 and 0 < whole.usage.completion_tokens <= 16
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="default", messages=HI, max_tokens=16, temperature=0, stream=True) if c.choices)
    assert streamed == text
    raw = httpx.post(f"{local_server.url}/v1/chat/completions", json={"messages": HI, "max_tokens": 4})
    assert raw.headers["x-edgecpm-source"] == "local" and raw.json()["edgecpm"]["source"] == "local"
    comp = client.completions.create(model="default", prompt="The capital of", max_tokens=5)
    assert comp.choices[0].text and comp.usage.completion_tokens == 5
    assert client.models.list().data[0].id
    assert httpx.post(f"{local_server.url}/v1/chat/completions", content=b"{not json",
                      headers={"content-type": "application/json"}).status_code == 400


def test_client_disconnect_stops_the_generation(local_server):
    before = httpx.get(f"{local_server.url}/health").json()["cancelled"]
    body = {"messages": HI, "max_tokens": 230, "stream": True}
    with httpx.stream("POST", f"{local_server.url}/v1/chat/completions", json=body) as r:
        next(r.iter_lines())  # the first chunk, then hang up
    deadline = time.time() + 10
    while time.time() < deadline:
        h = httpx.get(f"{local_server.url}/health").json()
        if h["cancelled"] > before and h["busy"] == 0:
            break
        time.sleep(0.05)
    assert h["cancelled"] == before + 1 and h["busy"] == 0


def _answer(router: Router, messages=HI, **kw):
    evs = list(router.respond(messages, **{**GEN, **kw}))
    return "".join(e.text for e in evs), evs[0]


@pytest.mark.parametrize("policy,load,expect", [
    (RoutePolicy(memory_budget_mb=0.01), {}, "memory-budget"),  # (1) would not fit
    (RoutePolicy(), {"context": 8}, "exceeds the local context"),  # (2) prompt over the context
    (RoutePolicy(local_timeout=0.0), {}, "local-timeout"),  # (3) too slow
    (RoutePolicy(escalate_entropy=0.0), {}, "low confidence"),  # (4) entropy above the threshold
    (RoutePolicy(cloud=True), {}, "asked for"),  # (5) the user asks
])
def test_each_policy_routes_to_the_cloud(art, cloud_server, policy, load, expect):
    router = Router(art, policy, CloudConfig(f"{cloud_server.url}/v1", timeout=30), **load)
    text, first = _answer(router)
    assert first.source == "cloud" and expect in first.reason and text


def test_unloadable_model_goes_to_the_cloud(tmp_path, cloud_server):
    router = Router(tmp_path / "missing", RoutePolicy(), CloudConfig(f"{cloud_server.url}/v1"))
    text, first = _answer(router)
    assert first.source == "cloud" and "local model unavailable" in first.reason and text


def test_confident_or_fast_local_answers_stay_local(art, cloud_server):
    router = Router(art, RoutePolicy(escalate_entropy=1e9, local_timeout=60), CloudConfig(f"{cloud_server.url}/v1"))
    local = Router(art, RoutePolicy(local_only=True))
    text, first = _answer(router)
    assert first.source == "local" and text == _answer(local)[0]


@pytest.mark.parametrize("mode", ["refused", "stall", "500", "malformed", "cut"])
def test_cloud_failures_keep_the_local_answer_or_give_a_clear_error(art, mode):
    fake = None if mode == "refused" else FakeCloud(mode)
    url = fake.url if fake else f"http://127.0.0.1:{free_port()}/v1"
    cfg = CloudConfig(url, timeout=1.0)
    t0 = time.time()
    forced = Router(art, RoutePolicy(cloud=True), cfg)  # a local answer exists: it is kept
    text, first = _answer(forced)
    assert first.source == "local" and "the cloud failed" in first.reason and text
    short = Router(art, RoutePolicy(), cfg, context=8)  # no local answer possible: a one-line error
    evs = list(short.respond(HI, **GEN))
    assert evs[-1].error and "the cloud failed" in evs[-1].error and "\n" not in evs[-1].error
    assert time.time() - t0 < 15  # bounded by the timeout, never a hang
    text2, first2 = _answer(forced, cloud=False)  # the session is still usable
    assert first2.source == "cloud" or text2  # (forced routes to the cloud again, which fails again: local)
    if fake:
        fake.stop()


def test_escalation_mid_conversation_sends_messages_and_local_catches_up(art):
    fake = FakeCloud("ok", answer="Paris is the capital.")
    router = Router(art, RoutePolicy(), CloudConfig(fake.url))
    convo = [{"role": "user", "content": "Hello world"}]
    a1, f1 = _answer(router, convo)
    convo += [{"role": "assistant", "content": a1}, {"role": "user", "content": "how are you today?"}]
    a2, f2 = _answer(router, convo, cloud=True)
    assert f1.source == "local" and f2.source == "cloud" and a2 == "Paris is the capital."
    assert fake.last["messages"] == convo  # the cloud got the whole conversation
    convo += [{"role": "assistant", "content": a2}, {"role": "user", "content": "The capital of France"}]
    a3, f3 = _answer(router, convo)
    assert f3.source == "local"
    fresh = Router(art, RoutePolicy(local_only=True))
    assert a3 == _answer(fresh, convo)[0]  # caught up on the cloud's turn: equals a fresh local run
    fake.stop()


def test_local_only_never_connects(art):
    fake = FakeCloud("ok")
    r = subprocess.run([sys.executable, "-m", "edgecpm", "chat", str(art), "--context", "8", "--local-only",
                        "--cloud-url", fake.url, "-p", "Hello world, how are you today?"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--local-only forbids the cloud" in r.stderr, r.stderr
    assert "exceeds the local context" in r.stderr and fake.requests == 0
    fake.stop()


def test_cli_marks_where_the_answer_came_from(art, cloud_server):
    r = subprocess.run([sys.executable, "-m", "edgecpm", "chat", str(art), "--cloud", "-m", "6",
                        "-p", "Hello"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "EDGECPM_CLOUD_URL": f"{cloud_server.url}/v1",
                            "EDGECPM_CLOUD_API_KEY": "sk-secret-value"})
    assert r.returncode == 0 and "[cloud: asked for]" in r.stdout
    assert "sk-secret-value" not in r.stdout + r.stderr


def test_load_50_clients_queue_8(art):
    server = EdgecpmServer(art, "--queue-size", "8")
    proc = psutil.Process(server.proc.pid)
    body = {"messages": HI, "max_tokens": 6}

    def one(_):
        r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code in (200, 429), r.text
        if r.status_code == 200:
            assert r.json()["choices"][0]["message"]["content"] is not None
            assert r.json()["usage"]["completion_tokens"] > 0
        return r.status_code

    try:
        with cf.ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(one, range(50)))
            rss50 = proc.memory_info().rss
            codes += list(pool.map(one, range(450)))
        rss500 = proc.memory_info().rss
        assert codes.count(200) >= 9 and codes.count(429) > 0  # the queue bounded the load
        assert rss500 <= rss50 * 1.10, (rss50, rss500)
        assert httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).status_code == 200
    finally:
        server.stop()


def test_serve_with_draft_answers_like_without(tiny):
    """`serve --draft ngram` on a recurrent model: the same greedy answers, chat and completions."""
    qwen = tiny("qwen3_5", 32)[0]
    plain, drafted = EdgecpmServer(qwen), EdgecpmServer(qwen, "--draft", "ngram")
    try:
        for route, body in (("chat/completions", {"messages": HI * 2, "max_tokens": 16, "temperature": 0}),
                            ("completions", {"prompt": "a b c a b c a b", "max_tokens": 12})):
            a, b = (httpx.post(f"{s.url}/v1/{route}", json=body, timeout=60).json() for s in (plain, drafted))
            assert a["choices"] == b["choices"] and a["usage"] == b["usage"], route
            assert a["edgecpm"]["drafted"] is None and b["edgecpm"]["drafted"] >= b["edgecpm"]["accepted"] > 0
    finally:
        plain.stop()
        drafted.stop()
