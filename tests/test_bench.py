"""`edgecpm bench --json`: speeds and resident memory per phase (after load, prefill, decode)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_json_reports_rss_per_phase(tiny):
    art, _ = tiny("llama", 32)
    r = subprocess.run([sys.executable, "-m", "edgecpm", "bench", str(art), "--runs", "1", "--prompt-lengths", "8,16",
                        "--decode-tokens", "4", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert list(res["rss_mb"]) == ["load", "prefill_16", "decode_4"]
    assert all(0 < mb <= res["peak_rss_mb"] + 1 for mb in res["rss_mb"].values())
    assert res["prefill_8_tps"] > 0 and res["decode_4_tps"] > 0 and res["nodes_per_provider"]


def test_bench_json_reports_drafting(tiny):
    """With --draft: plain and drafted decode of one chat answer, acceptance and tokens per step."""
    art, _ = tiny("qwen3_5", 32)
    r = subprocess.run([sys.executable, "-m", "edgecpm", "bench", str(art), "--runs", "1", "--prompt-lengths", "8",
                        "--decode-tokens", "8", "--json", "--draft", "ngram", "--draft-prompt", "a b c a b c a b c"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    d = res["draft"]
    assert d["drafter"] == "ngram" and d["tokens"] == 16 and d["same_tokens"]
    assert d["plain_decode_tps"] > 0 and d["draft_decode_tps"] > 0 and d["tokens_per_step"] >= 1
    assert "draft" in res["rss_mb"] and (d["acceptance"] is None or 0 <= d["acceptance"] <= 1)
