"""Size and QNN-simulator cost of the NPU prefill graph of the tiny random Qwen3.5 that tests/test_npu.py
uses: node count, file size, compile time (a QNN session made with no context cache and the CPU fallback
disabled) and the median wall and CPU time of one run.

    .venv/bin/python export/npu_prefill_bench.py [--chunk 8] [--runs 5] [--solve rows]
    PYTHONPATH=/tmp/base .venv/bin/python export/npu_prefill_bench.py   # another checkout's exporter

Prints one JSON object. The simulator's times say nothing of a phone's; they compare graphs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _options(qnn) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.add_provider_for_devices(*qnn)
    return so


def _session(path: Path) -> tuple[ort.InferenceSession, float, int]:
    """A QNN-only session of the graph at `path`, the seconds it took to make (the HTP compile) and the
    ONNX nodes (QDQ included) that QNN's fused node took (a second, verbose session reads them)."""
    from edgecpm.runtime.npu import placed_nodes, qnn_provider

    qnn, why = qnn_provider()
    if qnn is None:
        raise SystemExit(why)
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(path), _options(qnn))
    seconds = time.perf_counter() - t0
    so = _options(qnn)
    _, placed = placed_nodes(lambda: ort.InferenceSession(str(path), so), so)
    return session, seconds, placed.get("QNN graph nodes", 0)


def _feeds(session: ort.InferenceSession, vocab: int) -> dict[str, np.ndarray]:
    """Random tokens at position 0, a zero past (the mask lets the step see its own rows only)."""
    from edgecpm.contract import npu_mask

    feeds = {}
    for i in session.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = np.random.default_rng(0).integers(3, vocab, i.shape).astype(np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.arange(i.shape[1], dtype=np.int64)[None]
        elif i.name == "attention_mask":
            T, width = i.shape[2], i.shape[3]
            feeds[i.name] = npu_mask(0, T, width - T)
        else:
            feeds[i.name] = np.zeros(i.shape, np.float32)
    return feeds


def _solve_rows(c, nil: str, rhs: str, n: int) -> str:
    """Forward substitution, row by row: x_i = rhs_i + N_i,:i x_:i (the alternative to chunked._solve's
    doubling, for --solve rows). nil [1, H, n, n], rhs [1, H, n, m] -> same as rhs."""
    from edgecpm.export.npu.chunked import _slice

    g, rows = c.g, [_slice(c, rhs, 0, 1, 2)]  # each [1, H, 1, m]
    for i in range(1, n):
        done = rows[0] if i == 1 else g.op("Concat", *rows, axis=2)  # [1, H, i, m]
        coeff = _slice(c, _slice(c, nil, i, i + 1, 2), 0, i, 3)  # [1, H, 1, i]
        rows.append(g.op("Add", _slice(c, rhs, i, i + 1, 2), g.op("MatMul", coeff, done)))
    return g.op("Concat", *rows, axis=2)  # [1, H, n, m]


def main() -> None:
    from conftest import VOCAB, make_model

    import edgecpm
    from edgecpm.export.npu import export

    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--solve", choices=["doubling", "rows"], default="doubling",
                    help="the chunked form's triangular solve (this checkout's exporter only)")
    a = ap.parse_args()
    if a.solve == "rows":
        from edgecpm.export.npu import chunked

        chunked._solve = _solve_rows
    work = Path(tempfile.mkdtemp(prefix="npu-bench-"))
    make_model("qwen3_5", work / "hf")
    t0 = time.perf_counter()
    art = export(str(work / "hf"), str(work / "npu"), prefill_chunk=a.chunk, quiet=True)
    export_s = time.perf_counter() - t0
    path = Path(art) / "prefill.onnx"
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    session, compile_s, qnn_nodes = _session(path)
    feeds = _feeds(session, VOCAB)
    times, cpu = [], []  # wall and process CPU seconds per run (CPU time moves less on a shared box)
    for _ in range(a.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ops = Counter(n.op_type for n in nodes)
    result = {"exporter": str(Path(edgecpm.__file__).parent), "chunk": a.chunk, "solve": a.solve,
              "export_s": round(export_s, 1),
              "prefill_nodes": len(nodes), "qnn_graph_nodes": qnn_nodes,
              "prefill_nodes_without_qdq": len(nodes) - ops["QuantizeLinear"] - ops["DequantizeLinear"],
              "prefill_onnx_bytes": path.stat().st_size,
              "weights_file_bytes": (Path(art) / "npu.onnx.data").stat().st_size,
              "qnn_compile_s": round(compile_s, 2), "qnn_run_ms_median": round(1e3 * statistics.median(times), 1),
              "qnn_run_cpu_ms_median": round(1e3 * statistics.median(cpu), 1),
              "qnn_run_ms_all": [round(1e3 * t, 1) for t in times]}
    print(json.dumps(result))

if __name__ == "__main__":
    main()
