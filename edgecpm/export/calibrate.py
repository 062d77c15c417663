"""Activation statistics from a calibration text, for the "search" and "gptq" quantizers.

A first, quick export of the same checkpoint (round-to-nearest: int4 for "search", int8 for "gptq",
whose error compensation needs inputs close to the float model's) runs the text in chunks of CHUNK
tokens; every MatMulNBits input is read out. For "search" its per-channel mean square becomes that
layer's importance [K] (imatrix-style, summed in the graph); for "gptq" the inputs themselves
X [T, K] are written to one .npy per input under the export's temporary folder (T <= MAX_CHUNKS *
CHUNK tokens: smaller than X^T X for K > T, and read back one layer at a time). The first export
lives inside the real export's temporary folder, so a failed or killed calibration leaves no
artifact behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgecpm.contract import MODEL_FILE, UserError

CHUNK = 512  # tokens per calibration step (and the least a calibration text must have)
MAX_CHUNKS = 4
DEFAULT_TEXT = Path(__file__).parent / "data" / "calibration.txt"
ACTIVATIONS = "calibration-activations"  # the "gptq" inputs' folder in the export's temporary folder
METHODS = ("search", "gptq")  # the recipes a calibration text weights


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


def _probe(folder: Path, raw: bool = False) -> tuple[str, dict[str, list[str]]]:
    """Write a copy of the graph that also outputs, for every MatMulNBits input x [1, S, K], its sum of
    squares over the tokens [K] (in the graph: only K floats per layer come out), or with `raw` x
    itself; returns (model path, {output name: names of the layers that read that input})."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(folder / MODEL_FILE), load_external_data=False)
    inputs: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            inputs.setdefault(node.input[0], []).append(node.name.removeprefix("n/"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 1], np.int64), "calibration/axes"))
    taps = {}
    for i, (value, layers) in enumerate(inputs.items()):
        out = f"calibration/{'x' if raw else 'sumsq'}{i}"
        node = (helper.make_node("Identity", [value], [out]) if raw else
                helper.make_node("ReduceSumSquare", [value, "calibration/axes"], [out], keepdims=0))
        model.graph.node.append(node)
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        taps[out] = layers
    _keep_only(model.graph, set(taps))
    path = folder / "probe.onnx"
    onnx.save_model(model, str(path))
    return str(path), taps


def _keep_only(graph, outputs: set[str]) -> None:
    """Cut the graph down to the nodes the tap `outputs` need: the lm_head (the largest matrix, whose
    logits calibration never reads) and the states' outputs go, so their weights are never touched."""
    need, keep = set(outputs), []
    for node in reversed(graph.node):  # topological order: a node's consumers come after it
        if need.intersection(node.output):
            keep.append(node)
            need.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    outs = [o for o in graph.output if o.name in outputs]
    del graph.output[:]
    graph.output.extend(outs)
    inits = [t for t in graph.initializer if t.name in need]
    del graph.initializer[:]
    graph.initializer.extend(inits)


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


def importance(source, tokenizer, text: str, where: str, work: Path, raw: bool = False) -> dict:
    """{layer name: per-input-channel mean square activation [K]} of `source` on `text`; with `raw`,
    {layer name: path of its inputs X [T, K] fp32 .npy under work/ACTIVATIONS} instead.

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
        job = pool.submit(_measure, str(source), tokenizer, ids, str(work / "calibration-model"),
                          str(work / ACTIVATIONS) if raw else None, 8 if raw else 4)
        return job.result()


def _chunks(ids: list[int]) -> list[list[int]]:
    """The calibration steps: up to MAX_CHUNKS chunks of CHUNK tokens (a short tail adds little)."""
    parts = [ids[s : s + CHUNK] for s in range(0, min(len(ids), MAX_CHUNKS * CHUNK), CHUNK)]
    return [p for p in parts if len(p) >= CHUNK // 8]


def _measure(source: str, tokenizer, ids: list[int], out: str, raw: str | None, bits: int = 4) -> dict:
    """(In the child process) RTN export (`bits`) of `source` to `out`, run `ids` through it in chunks;
    `raw`: the folder the inputs X [T, K] go to, one .npy per input (else mean squares come back)."""
    import onnxruntime as ort

    from edgecpm.export import export

    folder = export(source, out, q_bits=bits, q_method="rtn", quiet=True, context_length=CHUNK, tokenizer=tokenizer,
                    calibration="none", lm_head_bits=8, embed_bits=8)  # int8 head/embeddings at either bits
    path, taps = _probe(folder, raw=bool(raw))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # Unpacked int8 weights: MatMulNBits then dequantizes each matrix per call and runs an fp32 GEMM
    # (inputs nearer the float model's), and the weights are never held twice (packed + mapped).
    so.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(path, so)
    parts, names = _chunks(ids), list(taps)
    total = sum(len(p) for p in parts)
    sums: dict = {}
    for chunk in parts:
        for value, x in zip(names, session.run(names, _feeds(session, chunk))):
            if raw and x.shape[1] != len(chunk):  # the lm_head's input: only the logits' positions
                continue
            if raw:  # x [1, S, K]: the next S rows of this input's X [total, K]
                if value not in sums:
                    sums[value] = _npy_writer(raw, value, (total, x.shape[-1]))
                np.ascontiguousarray(x[0], np.float32).tofile(sums[value])
            else:  # x [K]: sum over this chunk's tokens of x^2
                sums[value] = sums.get(value, 0) + x.astype(np.float64)
    del session
    shutil.rmtree(folder, ignore_errors=True)
    if raw:
        for f in sums.values():
            f.close()
        return {layer: _npy(raw, value) for value in sums for layer in taps[value]}
    return {layer: (s / total).astype(np.float32) for value, s in sums.items() for layer in taps[value]}


def _npy_writer(folder: str, value: str, shape: tuple):
    """An open .npy file of fp32 `shape` whose rows the caller appends in order: plain writes, so the
    calibration inputs (~1 GB for a 2B model) never sit in this process's memory as mapped pages."""
    f = open(_npy(folder, value), "wb")
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return f


def _npy(folder: str, value: str) -> str:
    Path(folder).mkdir(exist_ok=True)
    return str(Path(folder) / f"{value.replace('/', '_')}.npy")


def prepare(calibration: str | None, q):
    """(recipe with its calibration named, text or None, where) for the export's flags; a text the
    recipe cannot use, or a bad file, is a one-line error before any work."""
    import dataclasses

    if calibration == "none":  # gptq without activations is the plain search
        return (dataclasses.replace(q, method="search") if q.method == "gptq" else q), None, ""
    if q.method not in METHODS or q.bits != 4:
        if calibration:
            raise UserError("--calibration weights the int4 search; it needs --q-bits 4 and --q-method search "
                            "or gptq (a GGUF source also needs --q-bits 4 to be re-quantized)")
        return q, None, ""
    text = read_text(calibration or DEFAULT_TEXT, "--calibration")
    name = Path(calibration).name if calibration else "default"
    return dataclasses.replace(q, calibration=name), text, str(calibration or "(the default text)")
