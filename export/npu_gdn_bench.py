"""One Gated DeltaNet recurrence alone, as the NPU prefill graph builds it (edgecpm/export/npu/recurrent.py),
at a real model's head shape: graph size, QDQ error (uint16 activations, calibrated like the exporter's
graphs) and, with onnxruntime-qnn, the QNN-simulator compile and run time.

    .venv/bin/python export/npu_gdn_bench.py [--tokens 64] [--heads 16] [--dim 128] [--runs 5]
    PYTHONPATH=/tmp/base .venv/bin/python export/npu_gdn_bench.py   # another checkout's (unrolled) form

Inputs are random but shaped like the model's: L2-normed q and k, beta in (0, 1), log decays g <= 0,
a nonzero incoming state. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def build(folder: Path, T: int, H: int, d: int) -> Path:
    """q, k, v [1, T, H*d], decay, beta [1, T, H], past_state.0.recurrent [1, H, d, d] -> o, present state."""
    import edgecpm
    from edgecpm.export.graph import GraphBuilder
    from edgecpm.export.npu import _set_opset
    from edgecpm.export.npu.blocks import F32, OPSET, NpuCtx
    from edgecpm.export.npu.recurrent import gated_delta

    folder.mkdir(parents=True)
    g = GraphBuilder(folder)
    c = NpuCtx(g=g, w=None, T=T, ctx_len=T)
    x = {n: g.input(n, F32, [1, T, H * (d if n in "qkv" else 1)]) for n in ("q", "k", "v", "decay", "beta")}
    o = gated_delta(c, 0, x["q"], x["k"], x["v"], x["decay"], x["beta"], heads=H, dk=d, dv=d, name="gdn")
    g.output(o, "o", F32, [1, T, H * d])
    g.finish(folder / "model.onnx", edgecpm.__version__)
    _set_opset(folder / "model.onnx", OPSET)
    return folder / "model.onnx"


def feeds(rng, T: int, H: int, d: int) -> dict[str, np.ndarray]:
    def unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    q, k = (unit(rng.standard_normal((1, T, H, d))).reshape(1, T, H * d) for _ in range(2))
    return {"q": q, "k": k, "v": rng.standard_normal((1, T, H * d)), "decay": -rng.exponential(0.3, (1, T, H)),
            "beta": 1 / (1 + np.exp(-rng.standard_normal((1, T, H)))),
            "past_state.0.recurrent": 0.3 * rng.standard_normal((1, H, d, d))}


def quantize(src: Path, dst: Path, calib: list[dict]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    cfg = get_qnn_qdq_config(str(src), Reader(), activation_type=QuantType.QUInt16, weight_type=QuantType.QInt8,
                             per_channel=True)
    quantize(str(src), str(dst), cfg)


def _errors(fp32: Path, qdq: Path, test: dict) -> dict[str, float]:
    """Per output (o, the state): |QDQ - fp32| relative to the fp32 output, as the largest element over the
    largest |value| and as the RMS ratio (CPU EP, on inputs the calibration did not see)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    ref, got = (ort.InferenceSession(str(p), so, providers=cpu).run(None, test) for p in (fp32, qdq))
    outputs = onnx.load(str(fp32), load_external_data=False).graph.output
    names = ["state" if "state" in o.name else o.name for o in outputs]
    errors = {}
    for name, a, b in zip(names, ref, got):
        errors[f"qdq_max_err_{name}"] = round(float(np.abs(a - b).max() / np.abs(a).max()), 4)
        errors[f"qdq_rms_err_{name}"] = round(float(np.linalg.norm(a - b) / np.linalg.norm(a)), 4)
    return errors


def _qnn(path: Path, test: dict, runs: int) -> dict:
    from edgecpm.runtime.npu import qnn_provider

    qnn, why = qnn_provider()
    if qnn is None:
        return {"qnn": why}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.add_provider_for_devices(*qnn)
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(path), so)
    compile_s, wall, cpu = time.perf_counter() - t0, [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        session.run(None, test)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"qnn_compile_s": round(compile_s, 2), "qnn_run_ms_median": round(1e3 * statistics.median(wall), 1),
            "qnn_run_cpu_ms_median": round(1e3 * statistics.median(cpu), 1)}


def main() -> None:
    import edgecpm

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    T, H, d = a.tokens, a.heads, a.dim
    work = Path(tempfile.mkdtemp(prefix="gdn-bench-"))
    fp32 = build(work / "fp32", T, H, d)
    rng = np.random.default_rng(0)
    cast = [{n: v.astype(np.float32) for n, v in feeds(rng, T, H, d).items()} for _ in range(9)]
    t0 = time.perf_counter()
    quantize(fp32, work / "qdq.onnx", cast[:8])
    result = {"exporter": str(Path(edgecpm.__file__).parent), "tokens": T, "heads": H, "dim": d,
              "quantize_s": round(time.perf_counter() - t0, 1),
              "fp32_nodes": len(onnx.load(str(fp32), load_external_data=False).graph.node),
              "qdq_nodes": len(onnx.load(str(work / "qdq.onnx")).graph.node),
              "qdq_onnx_bytes": (work / "qdq.onnx").stat().st_size, **_errors(fp32, work / "qdq.onnx", cast[8]),
              **_qnn(work / "qdq.onnx", cast[8], a.runs)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
