"""Activation importance from a calibration text, for the "search" quantizer (imatrix-style).

A first, quick export of the same checkpoint (int4 round-to-nearest) runs the text in chunks of
CHUNK tokens; every MatMulNBits input is read out and its per-channel mean square becomes that
layer's importance [K]. The first export lives inside the real export's temporary folder, so a
failed or killed calibration leaves no artifact behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgecpm.contract import MODEL_FILE, UserError

CHUNK = 512  # tokens per calibration step (and the least a calibration text must have)
MAX_CHUNKS = 4
DEFAULT_TEXT = Path(__file__).parent / "data" / "calibration.txt"


def read_text(path: str | Path, flag: str) -> str:
    """A UTF-8 text file, or a one-line UserError saying what is wrong with it and what to pass."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {p} does not exist; pass a UTF-8 text file")
    data = p.read_bytes()
    if b"\0" in data:
        raise UserError(f"{flag} {p} is binary (it holds NUL bytes); pass a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{flag} {p} is not UTF-8 text; pass a UTF-8 text file") from None
    if not text.strip():
        raise UserError(f"{flag} {p} is empty; pass a text of at least a few hundred words")
    return text


def tokens(text: str, folder: Path, where: str) -> list[int]:
    """Token ids of `text` with the tokenizer files in `folder`; at least one chunk of them."""
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    else:
        import sentencepiece

        ids = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).encode(text)
    if len(ids) < CHUNK:
        raise UserError(f"--calibration {where} has {len(ids)} tokens, fewer than one chunk ({CHUNK}); "
                        "pass a longer text")
    return list(ids)


def _probe(folder: Path) -> tuple[str, dict[str, str]]:
    """Write a copy of the graph that also outputs, for every MatMulNBits input x [1, S, K], its sum of
    squares over the tokens [K] (in the graph: only K floats per layer come out); returns
    (model path, {output name: layer name})."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(folder / MODEL_FILE), load_external_data=False)
    inputs: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            inputs.setdefault(node.input[0], node.name.removeprefix("n/"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 1], np.int64), "calibration/axes"))
    taps = {}
    for i, (value, layer) in enumerate(inputs.items()):
        out = f"calibration/sumsq{i}"
        model.graph.node.append(helper.make_node("ReduceSumSquare", [value, "calibration/axes"], [out], keepdims=0))
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        taps[out] = layer
    path = folder / "probe.onnx"
    onnx.save_model(model, str(path))
    return str(path), taps


def _feeds(session, chunk: list[int]) -> dict:
    """One step from an empty state: ids [1, S], zero state tensors of the graph's input shapes."""
    S = len(chunk)
    feeds = {"input_ids": np.asarray([chunk], np.int64), "seqlens_k": np.array([S - 1], np.int32),
             "total_sequence_length": np.array(S, np.int32), "logits_indices": np.array([S - 1], np.int64)}
    for i in session.get_inputs():
        if i.name not in feeds:
            shape = [CHUNK if not isinstance(d, int) else d for d in i.shape]
            shape[0] = 1
            feeds[i.name] = np.zeros(shape, np.float32)
    return feeds


def importance(source, tokenizer, text: str, where: str, work: Path) -> dict[str, np.ndarray]:
    """{layer name: per-input-channel mean square activation [K]} of `source` on `text`.

    The text is tokenized here (a too-short one fails at once); the first export and its session run
    in a child process, so their memory is returned before the real export starts (the export's peak
    is then the larger of the two, not their sum)."""
    import concurrent.futures
    import multiprocessing

    from edgecpm.export import _tokenizer, _tokenizer_source
    from edgecpm.export.checkpoint import open_source

    src = open_source(source)
    (work / "calibration-tokenizer").mkdir()
    _tokenizer(_tokenizer_source(src, tokenizer), work / "calibration-tokenizer", src.config)
    ids = tokens(text, work / "calibration-tokenizer", where)
    shutil.rmtree(work / "calibration-tokenizer", ignore_errors=True)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_measure, str(source), tokenizer, ids, str(work / "calibration-model")).result()


def _measure(source: str, tokenizer, ids: list[int], out: str) -> dict[str, np.ndarray]:
    """(In the child process) int4 RTN export of `source` to `out`, run `ids` through it in chunks."""
    import onnxruntime as ort

    from edgecpm.export import export

    folder = export(source, out, q_bits=4, q_method="rtn", quiet=True, context_length=CHUNK, tokenizer=tokenizer,
                    calibration="none")
    path, taps = _probe(folder)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(path, so)
    names = list(taps)
    sums: dict[str, np.ndarray] = {}
    count = 0
    for start in range(0, min(len(ids), MAX_CHUNKS * CHUNK), CHUNK):
        chunk = ids[start : start + CHUNK]
        if len(chunk) < CHUNK // 8:
            break  # a short tail adds little
        outs = session.run(names, _feeds(session, chunk))
        for value, sq in zip(names, outs):  # sq [K]: sum over this chunk's tokens of x^2
            sums[taps[value]] = sums.get(taps[value], 0) + sq.astype(np.float64)
        count += len(chunk)
    del session
    shutil.rmtree(folder, ignore_errors=True)
    return {name: (s / count).astype(np.float32) for name, s in sums.items()}


def prepare(calibration: str | None, q):
    """(recipe with its calibration named, text or None, where) for the export's flags; a text the
    recipe cannot use, or a bad file, is a one-line error before any work."""
    import dataclasses

    if calibration == "none":
        return q, None, ""
    if q.method != "search" or q.bits != 4:
        if calibration:
            raise UserError("--calibration weights the int4 search; it needs --q-bits 4 and --q-method search "
                            "(a GGUF source also needs --q-bits 4 to be re-quantized)")
        return q, None, ""
    text = read_text(calibration or DEFAULT_TEXT, "--calibration")
    name = Path(calibration).name if calibration else "default"
    return dataclasses.replace(q, calibration=name), text, str(calibration or "(the default text)")
