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
