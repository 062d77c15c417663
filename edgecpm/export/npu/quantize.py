"""Static QDQ quantization of the NPU graphs with onnxruntime's QNN helpers, calibrated on text.

Each fp32 graph is replayed over the calibration tokens on the CPU (its KV rows and fixed states
carried from step to step, as the runtime does), and those feeds calibrate
`onnxruntime.quantization`'s static quantizer with the QNN configuration: uint16 activations,
int8 weights per output channel through DequantizeLinear. The embedding table and the rotary tables
(Gather data, not MatMul weights) are 16-bit per tensor. Then both graphs' initializers go to one
shared data file: identical bytes (every weight: its scales depend on the weight only) are stored once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgecpm.contract import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS, StateSpec, npu_mask

ALIGN = 64
SMALL = 64  # elements: tensors this small stay inline in the graph


class Replay:
    """Runs one fp32 graph step after step over a token stream, keeping its state like the runtime."""

    def __init__(self, path: Path, T: int, specs: list[StateSpec], ctx: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.T, self.ctx, self.specs, self.pos = T, ctx, specs, 0
        self.values = {s.input: np.zeros(s.dims(ctx), np.float32) for s in specs}

    def feeds(self, tokens: list[int]) -> dict[str, np.ndarray]:
        T, pos = self.T, self.pos
        return {INPUT_IDS: np.asarray([tokens], np.int64), POSITION_IDS: np.arange(pos, pos + T)[None],
                ATTENTION_MASK: npu_mask(pos, T, self.ctx), **{k: v.copy() for k, v in self.values.items()}}

    def step(self, tokens: list[int]) -> dict[str, np.ndarray]:
        """Feed T tokens; returns the feeds used (for the calibrator). The outputs (logits and
        states) are kept in self.outputs."""
        feeds = self.feeds(tokens)
        names = [LOGITS] + [s.output for s in self.specs]
        outs = self.outputs = dict(zip(names, self.session.run(names, feeds)))
        for s in self.specs:
            if s.kind == "kv":  # new rows [1, kv, T, hd] -> the buffer at pos
                self.values[s.input][:, :, self.pos : self.pos + self.T] = outs[s.output]
            else:
                self.values[s.input] = outs[s.output]
        self.pos += self.T
        return feeds


def reader(path: Path, T: int, specs: list[StateSpec], ctx: int, ids: list[int], steps: int):
    """A CalibrationDataReader that replays `steps` steps of T tokens of `ids` lazily."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.replay, self.n = Replay(path, T, specs, ctx), 0

        def get_next(self):
            start = self.n * T
            if self.n >= steps or start + T > len(ids) or start + T > ctx:
                return None
            self.n += 1
            return self.replay.step(ids[start : start + T])

    return _Reader()


def quantize_graph(src: Path, dst: Path, data_reader, gather_tables: list[str]) -> None:
    """fp32 graph -> QDQ graph (uint16 activations, int8 per-channel weights) via the QNN helpers."""
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    overrides = {name: [{"quant_type": QuantType.QUInt16}] for name in gather_tables}
    cfg = get_qnn_qdq_config(str(src), data_reader, activation_type=QuantType.QUInt16,
                             weight_type=QuantType.QInt8, per_channel=True, init_overrides=overrides)
    cfg.use_external_data_format = True
    quantize(str(src), str(dst), cfg)


def share_weights(models: dict[str, Path], out: Path, data_name: str) -> int:
    """Rewrite the graphs {file name: path} into `out` with every big initializer in one data file
    `data_name` (identical bytes written once); returns the data file's size."""
    written: dict[tuple, int] = {}
    with open(out / data_name, "wb") as data:
        for name, path in models.items():
            model = onnx.load(str(path), load_external_data=True)
            for t in model.graph.initializer:
                if np.prod(t.dims) <= SMALL:
                    continue
                raw = numpy_helper.to_array(t).tobytes()
                key = (t.data_type, tuple(t.dims), hashlib.blake2b(raw, digest_size=16).digest())
                if key not in written:
                    data.write(b"\0" * (-data.tell() % ALIGN))
                    written[key] = data.tell()
                    data.write(raw)
                _external(t, data_name, written[key], len(raw))
            onnx.save_model(model, str(out / name))
        return data.tell()


def _external(t: TensorProto, location: str, offset: int, length: int) -> None:
    """Point initializer t at bytes of the shared data file."""
    t.ClearField("raw_data")
    for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        t.ClearField(f)
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=k, value=v)


__all__ = ["Replay", "reader", "quantize_graph", "share_weights", "LOGITS"]
