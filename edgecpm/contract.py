"""The artifact contract: the one place that says what an edgecpm artifact is.

The exporter writes it, the runtime (and the Android demo) read it. Documented in docs/artifact.md.

An artifact is a folder:
    edgecpm.json        the manifest (this module's `Manifest`)
    model.onnx          graph, weights stored externally
    model.onnx.data     weights
    tokenizer.json      tokenizers BPE/Unigram (+ tokenizer_config.json with a classic class name)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix: the message says what is wrong and how. The CLI prints it as one
    line and exits with code 2; the server answers it as an OpenAI error."""


FORMAT = "edgecpm"
FORMAT_VERSION = 1
MANIFEST = "edgecpm.json"
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.onnx.data"
CUSTOM_DOMAIN = "ai.edgecpm"

# Graph I/O names. `ctx` in a shape is the context length the runtime allocates.
INPUT_IDS = "input_ids"  # [1, S] int64
SEQLENS_K = "seqlens_k"  # [1] int32: total tokens after this step - 1 (GroupQueryAttention)
TOTAL_SEQ_LEN = "total_sequence_length"  # [] int32: total tokens after this step
LOGITS_INDICES = "logits_indices"  # [n] int64: positions of this step that reach the lm_head
LOGITS = "logits"  # [1, n, vocab] float32

# NPU artifacts (`target` "npu", docs/artifact.md): static-shape graphs, one per step size.
TARGETS = ("cpu", "npu")
POSITION_IDS = "position_ids"  # [1, T] int64: positions of this step's tokens
ATTENTION_MASK = "attention_mask"  # [1, 1, T, ctx + T] float32, additive: 0 = attend, MASK_VALUE = not
MASK_VALUE = -100.0  # softmax weight e^-100: nothing, and a range 16-bit activations resolve finely
NPU_GRAPHS = ("decode", "prefill")  # graph name -> {"file", "tokens"} in Manifest.graphs

STATE_KINDS = ("kv", "conv", "recurrent")
DEFAULT_CONTEXT = 4096  # context a runtime allocates when none is asked for (capped by the model's)
DTYPES = {"float32": 4, "float16": 2}
KV_DTYPES = ("float32", "float16")  # what Quantization.kv_dtype may be


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: fed as `input`, returned as `output`.

    kind "kv": shape [1, kv_heads, "ctx", head_dim]; past and present share one buffer
    (GroupQueryAttention's shared-buffer mode), so the runtime binds one array to both names.
    kind "conv" / "recurrent": fixed shape; the runtime ping-pongs two buffers.
    """

    input: str
    output: str
    kind: str
    layer: int
    shape: tuple
    dtype: str = "float32"

    def dims(self, ctx: int) -> tuple[int, ...]:
        """Concrete shape for a context length."""
        return tuple(ctx if d == "ctx" else int(d) for d in self.shape)

    def nbytes(self, ctx: int) -> int:
        n = DTYPES[self.dtype]
        for d in self.dims(ctx):
            n *= d
        return n

    @property
    def per_token(self) -> bool:
        return "ctx" in self.shape


@dataclass(frozen=True)
class Quantization:
    """The recipe the weights were written with; loading needs no flags."""

    bits: int = 4
    group_size: int = 32
    symmetric: bool = True
    lm_head_bits: int = 8
    embed_bits: int = 16
    accuracy_level: int = 4
    # How the integers were chosen: "rtn" round-to-nearest, "search" error-minimizing block scales
    # (weighted by activation importance when `calibration` names a text), "gptq" the same blocks with
    # error compensation on the calibration text's activations, "gguf" the source's blocks
    # kept exactly (`carried`: GGUF type -> tensors kept; the rest re-quantized by "search").
    method: str = "rtn"
    calibration: str | None = None
    carried: dict = field(default_factory=dict)
    kv_dtype: str = "float32"  # the KV cache's element type ("float16": half the bytes per token)
    # "k_m": llama.cpp Q4_K_M's layer mix, the MLP down projections of layers i < n/8, i >= 7n/8 and
    # every third one between written with 8 bits; "none": every linear layer at `bits`.
    mix: str = "none"


@dataclass
class Manifest:
    """edgecpm.json, as a dataclass. Unknown keys are refused on load."""

    architecture: str
    layer_types: list[str]
    context_length: int
    vocab_size: int
    hidden_size: int
    state: list[StateSpec]
    quantization: Quantization
    tokenizer: dict  # {"files": [...], "bos_token_id", "eos_token_ids", "add_bos_token"}
    chat_template: str | None
    source: dict  # {"kind": "hf"|"gguf", "path", "sha256"}
    files: dict = field(default_factory=dict)  # name -> {"sha256", "bytes"}
    weights_bytes: int = 0
    operators: list[str] = field(default_factory=list)  # ai.edgecpm ops the graph uses (each with a function body)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    exporter: str = ""
    inputs: list[str] = field(default_factory=lambda: [INPUT_IDS, SEQLENS_K, TOTAL_SEQ_LEN, LOGITS_INDICES])
    outputs: list[str] = field(default_factory=lambda: [LOGITS])
    target: str = "cpu"  # "npu": `graphs` holds static-shape QDQ graphs instead of model.onnx
    graphs: dict = field(default_factory=dict)  # name (NPU_GRAPHS) -> {"file", "tokens"}: T of that graph

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)

    def runtime_context(self, requested: int | None = None) -> int:
        """The context a runtime allocates: the one requested (default DEFAULT_CONTEXT), capped by the model's."""
        return min(requested or DEFAULT_CONTEXT, self.context_length)

    def memory_bytes(self, ctx: int) -> int:
        """Weights plus all state at context `ctx`: what loading the artifact needs at least."""
        fixed, per_tok = self.state_bytes(ctx)
        return self.weights_bytes + fixed + per_tok * ctx

    def state_bytes(self, ctx: int) -> tuple[int, int]:
        """(fixed bytes, bytes per context token) of all state tensors."""
        fixed = sum(s.nbytes(ctx) for s in self.state if not s.per_token)
        per_tok = sum(s.nbytes(1) for s in self.state if s.per_token)
        return fixed, per_tok


def npu_mask(pos: int, T: int, ctx: int):
    """The NPU graphs' attention mask [1, 1, T, ctx + T] for T tokens at positions pos.. pos+T-1: the
    first `pos` rows of the KV buffer and the step's own rows up to each token are 0, the rest MASK_VALUE."""
    import numpy as np

    mask = np.full((T, ctx + T), MASK_VALUE, np.float32)  # keys: ctx buffer rows, then this step's T rows
    mask[:, :pos] = 0.0
    mask[:, ctx:] = np.triu(np.full((T, T), MASK_VALUE, np.float32), 1)  # causal within the step
    return mask.reshape(1, 1, T, ctx + T)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_manifest(folder: Path | str, verify: bool = True) -> Manifest:
    """Read and check an artifact's manifest; raise UserError with the reason and the fix."""
    folder = Path(folder)
    path = folder / MANIFEST
    if folder.is_file():
        raise UserError(f"{folder} is a file, not an artifact folder; pass the folder that holds {MANIFEST}")
    if not folder.is_dir():
        raise UserError(f"artifact folder {folder} does not exist; export one with `edgecpm export SOURCE -o {folder}`")
    if not path.is_file():
        raise UserError(f"{folder} is not an edgecpm artifact (no {MANIFEST}); re-export it with `edgecpm export`")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; re-export the artifact") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}); re-export the artifact") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"{path} is not an edgecpm manifest; re-export the artifact")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            f"artifact format version {version} is not supported by this edgecpm (it reads version "
            f"{FORMAT_VERSION}); re-export it with this edgecpm's `edgecpm export`"
        )
    manifest = _parse(raw, path)
    if manifest.target not in TARGETS or (manifest.target == "npu") != bool(manifest.graphs):
        raise UserError(f"{path} has target {manifest.target!r} with graphs {sorted(manifest.graphs)}; "
                        "re-export the artifact")
    for spec in manifest.state:
        if spec.kind not in STATE_KINDS:
            raise UserError(f"state {spec.input} has kind {spec.kind!r}; this edgecpm runs {STATE_KINDS}")
    check_files(folder, manifest, hashes=verify)
    return manifest


# The manifest's typed keys (JSON types); anything else is refused with the key's name.
_TYPES = {"architecture": str, "layer_types": list, "context_length": int, "vocab_size": int, "hidden_size": int,
          "state": list, "quantization": dict, "tokenizer": dict, "files": dict, "weights_bytes": int,
          "operators": list, "inputs": list, "outputs": list, "target": str, "graphs": dict}


def _parse(raw: dict, path: Path) -> Manifest:
    """The Manifest from parsed JSON, every key and file entry type-checked."""
    def bad(what: str) -> UserError:
        return UserError(f"{path} does not follow format version {FORMAT_VERSION} ({what}); re-export the artifact")

    for key, typ in _TYPES.items():
        if key in raw and (not isinstance(raw[key], typ) or isinstance(raw[key], bool)):
            raise bad(f"{key!r} must be a JSON {typ.__name__}")
    for name, meta in raw.get("files", {}).items():
        if not isinstance(meta, dict) or not isinstance(meta.get("bytes"), int) or not isinstance(
                meta.get("sha256"), str):
            raise bad(f"files entry {name!r} needs integer 'bytes' and string 'sha256'")
    try:
        raw = {**raw, "state": [StateSpec(**{**s, "shape": tuple(s["shape"])}) for s in raw["state"]],
               "quantization": Quantization(**_without(raw["quantization"], "overrides"))}
        return Manifest(**raw)
    except (TypeError, KeyError, AttributeError) as e:
        raise bad(str(e)) from None


def _without(d: dict, key: str) -> dict:
    """`d` less a key that earlier version-1 exporters wrote and nothing reads (`overrides`, always {})."""
    return {k: v for k, v in d.items() if k != key}


def check_files(folder: Path, manifest: Manifest, hashes: bool = True) -> None:
    """Every file the manifest lists exists with its size and (optionally) its sha256."""
    for name, meta in manifest.files.items():
        p = folder / name
        if not p.is_file():
            raise UserError(f"artifact file {p} is missing; re-export the artifact")
        if p.stat().st_size != meta["bytes"]:
            raise UserError(f"artifact file {p} has the wrong size (corrupted or truncated); re-export the artifact")
        if hashes and sha256_file(p) != meta["sha256"]:
            raise UserError(f"artifact file {p} fails its sha256 check (corrupted); re-export the artifact")
