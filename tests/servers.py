"""Real HTTP servers on 127.0.0.1 for the device-cloud tests: `edgecpm serve` in a subprocess, and a
small stand-in "cloud" that misbehaves on purpose (HTTP 500, malformed JSON, a stream cut half-way,
a stall) or answers and records what it was sent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EdgecpmServer:
    """`edgecpm serve ARTIFACT` on a free port, until stop(); `env` is added to the environment."""

    def __init__(self, artifact, *flags: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "edgecpm", "serve", str(artifact), "--port",
                                      str(self.port), *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgecpm serve exited: {self.proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("edgecpm serve did not come up in 90 s")

    def rss_mb(self) -> float:
        """The server process's resident memory, from /proc/PID/status (VmRSS)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kb / 1024

    def stop(self) -> str:
        """Stop the server; return what it printed."""
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")


class FakeCloud:
    """mode: ok | 500 | malformed | cut | stall | trickle (one SSE chunk a second, for a minute).
    Counts requests; keeps the last body."""

    def __init__(self, mode: str = "ok", answer: str = "Hello from the cloud."):
        self.mode, self.answer, self.requests, self.last = mode, answer, 0, None
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                cloud.requests += 1
                cloud.last = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                cloud.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client that gave up (stall, trickle) is no news
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        if self.mode == "500":
            return self._send(h, 500, b'{"error": "boom"}')
        if self.mode == "stall":
            time.sleep(5)
            return self._send(h, 200, b"{}")
        if self.mode == "trickle":
            return self._trickle(h)
        if self.mode == "malformed":
            return self._send(h, 200, b'{"choices": [ {"message": ', "application/json")
        if not self.last.get("stream"):
            body = {"choices": [{"message": {"role": "assistant", "content": self.answer}, "text": self.answer,
                                 "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
            return self._send(h, 200, json.dumps(body).encode())
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        words = self.answer.split(" ")
        for i, w in enumerate(words):
            if self.mode == "cut" and i == len(words) // 2:
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)  # the stream stops half-way: no [DONE]
                return
            chunk = {"choices": [{"delta": {"content": w + (" " if i < len(words) - 1 else "")}}]}
            h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        h.wfile.write(b"data: [DONE]\n\n")

    @staticmethod
    def _trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        for _ in range(60):
            try:
                h.wfile.write(f"data: {json.dumps({'choices': [{'delta': {'content': 'drip '}}]})}\n\n".encode())
                h.wfile.flush()
            except OSError:  # the client gave up
                return
            time.sleep(1)

    @staticmethod
    def _send(h, code: int, body: bytes, ctype: str = "application/json") -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def stop(self) -> None:
        self.httpd.shutdown()
