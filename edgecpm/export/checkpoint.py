"""Checkpoint sources: a local HF folder (config.json + safetensors) or a GGUF file.

Both give an HF-style config dict and load tensors one at a time by HF name, as fp32 numpy arrays.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edgecpm.contract import UserError, sha256_file


class HFSource:
    """A local HF folder; tensors are read lazily from (possibly sharded) safetensors."""

    kind = "hf"

    def __init__(self, folder: Path):
        self.path = folder
        try:
            self.config = json.loads((folder / "config.json").read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            why = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            raise UserError(f"{folder}/config.json is not valid JSON ({why}); re-download the checkpoint") from None
        if not isinstance(self.config, dict):
            raise UserError(f"{folder}/config.json must hold a JSON object, not a {type(self.config).__name__}; "
                            "re-download the checkpoint")
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise UserError(f"{folder} has config.json but no *.safetensors weights; download the weights too")
        self._files = files
        self._where: dict[str, str] | None = None  # tensor -> file; read on first use: config errors come first
        self._headers: dict[str, dict] = {}
        self._data_start: dict[str, int] = {}  # file -> offset of its data (after the header)

    def _index(self) -> dict[str, str]:
        from safetensors import safe_open

        if self._where is not None:
            return self._where
        self._where, folder = {}, self.path
        for f in self._files:
            try:
                with safe_open(str(f), framework="numpy") as handle:
                    self._where.update(dict.fromkeys(handle.keys(), str(f)))
            except Exception as e:  # safetensors raises its own error types for a truncated header
                raise UserError(f"{f} is not a readable safetensors file ({e}); re-download it") from None
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            missing = set(json.loads(index.read_text())["weight_map"]) - set(self._where)
            if missing:
                raise UserError(f"{folder} lacks {len(missing)} tensors its index lists (e.g. {min(missing)}); "
                                "a shard is missing, re-download the checkpoint")
        return self._where

    def names(self) -> set[str]:
        return set(self._index())

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape, read from the safetensors header (no data)."""
        from safetensors import safe_open

        with safe_open(self._index()[name], framework="numpy") as handle:
            return tuple(handle.get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        """One tensor as fp32. Float tensors are read with plain reads, ROW_BYTES of the file at a
        time, into the fp32 result: only it and one slice are resident. (safetensors maps the file,
        and the touched pages of a 2B model's bf16 embedding, 1 GB, would stay resident beside its
        2 GB fp32 copy and the library's own bf16 copy.) Other types go through safetensors."""
        from safetensors import safe_open

        path = self._index()[name]
        try:
            info, base = self._header(path)[name], self._data_start[path]
            if info["dtype"] in _FLOATS and info["shape"]:
                return _read_rows(path, base + info["data_offsets"][0], info["dtype"], tuple(info["shape"]))
            with safe_open(path, framework="numpy") as handle:
                return np.asarray(handle.get_tensor(name), dtype=np.float32)
        except Exception as e:  # a shard cut short fails here, not at open
            raise UserError(f"cannot read tensor {name} from {self.path} ({e}); re-download the checkpoint") from None

    def _header(self, path: str) -> dict:
        """The safetensors header of one file (name -> dtype, shape, data_offsets), read once."""
        if path not in self._headers:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                self._headers[path] = json.loads(f.read(n))
            self._data_start[path] = 8 + n
        return self._headers[path]

    def sha256(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for f in [self.path / "config.json", *self._files]:
            h.update(sha256_file(f).encode())
        return h.hexdigest()


ROW_BYTES = 64 << 20  # file bytes converted to fp32 at a time
_FLOATS = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}  # BF16: an fp32's high 16 bits


def _read_rows(path: str, offset: int, dtype: str, shape: tuple) -> np.ndarray:
    """A float tensor [rows, ...] stored at `offset` of `path` -> fp32, ROW_BYTES at a time."""
    out = np.empty(shape, np.float32)
    flat = out.reshape(shape[0], int(np.prod(shape[1:], dtype=np.int64)))  # [rows, cols] (rows may be 0)
    cols, kind = flat.shape[1], _FLOATS[dtype]
    step = max(1, ROW_BYTES // max(1, cols * np.dtype(kind).itemsize))
    with open(path, "rb") as f:
        f.seek(offset)
        for r in range(0, shape[0], step):
            n = min(step, shape[0] - r)
            buf = np.fromfile(f, dtype=kind, count=n * cols)  # [n * cols]
            if buf.size != n * cols:
                raise ValueError(f"the file ends inside it ({buf.size} of {n * cols} values)")
            if dtype == "BF16":  # the high half of each little-endian fp32, the low half zero
                halves = flat[r : r + n].view(np.uint16).reshape(n, cols, 2)  # [n, cols, 2]
                halves[..., 0], halves[..., 1] = 0, buf.reshape(n, cols)
            else:
                flat[r : r + n] = buf.reshape(n, cols)
    return out


def open_source(source: Path | str):
    """Open SOURCE (HF folder or .gguf file) or raise a UserError that says what SOURCE must be."""
    p = Path(source)
    if not p.exists():
        raise UserError(f"checkpoint {p} does not exist; pass a local HF folder (config.json + *.safetensors) "
                        "or a .gguf file")
    if p.is_file():
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise UserError(f"{p} is not a GGUF file (bad magic); pass a .gguf file or an HF folder")
        from edgecpm.export.gguf_source import GGUFSource

        return GGUFSource(p)
    if not (p / "config.json").is_file():
        raise UserError(f"{p} is not an HF checkpoint (no config.json); pass a folder with config.json "
                        "and *.safetensors, or a .gguf file")
    return HFSource(p)


class Weights:
    """fp32 tensors by HF name, passed through the architecture's sanitize(name, array, args).

    A missing lm_head.weight falls back to the embedding (tied weights); sanitize still sees the
    name "lm_head.weight" so it can apply head-only scaling.
    """

    def __init__(self, source, sanitize, args, carry: bool = False):
        self.source, self.sanitize, self.args = source, sanitize, args
        self._names = source.names()
        self.carry = carry and hasattr(source, "blocks")  # GGUF blocks kept as they are (BlockWeight)

    def source_types(self) -> set[str]:
        """The source's tensor types (GGUF type names; empty for other sources)."""
        if not hasattr(self.source, "type_name"):
            return set()
        return {self.source.type_name(n) for n in self._names}

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __getitem__(self, name: str) -> np.ndarray:
        raw = name
        if name == "lm_head.weight" and name not in self._names:
            raw = self.args.embed_name
        if raw not in self._names:
            raise UserError(f"checkpoint {self.source.path} lacks tensor {raw}; it is incomplete or not a "
                            f"{self.args.model_type} checkpoint")
        if self.carry:
            bw = self.source.blocks(raw)
            if bw is not None:
                return self._sanitize_rows(name, bw)
        return self.sanitize(name, self.source.get(raw), self.args, self.source.kind)

    def _sanitize_rows(self, name: str, bw):
        """sanitize() on GGUF blocks: a row permutation (llama.cpp's q/k order) is found by sanitizing
        the row numbers and applied to the blocks; any other change needs floats (dequantized)."""
        N = bw.shape[0]
        rows = np.arange(N, dtype=np.float64).reshape(N, 1)  # [N, 1]
        out = np.asarray(self.sanitize(name, rows, self.args, self.source.kind))
        if out.shape == (N, 1) and np.array_equal(np.sort(out[:, 0]), rows[:, 0]):
            return bw if np.array_equal(out, rows) else bw.take_rows(out[:, 0].astype(np.int64))
        return self.sanitize(name, bw.dequantize(), self.args, self.source.kind)


# Tensor-name suffix -> (dimension, what it must equal) checks every decoder shares; a name missing in
# a checkpoint is simply not checked (the architecture reads what it has).
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def check_shapes(source, args) -> None:
    """Every tensor the config determines has the config's shape, and the layers are exactly
    0..num_hidden_layers-1: checked from the headers before anything is written."""
    names, h = source.names(), args.hidden_size
    q_rows = args.num_attention_heads * args.head_dim
    kv_rows = args.num_key_value_heads * args.head_dim
    rules = {"embed_tokens.weight": {0: args.vocab_size, 1: h}, "lm_head.weight": {0: args.vocab_size, 1: h},
             "input_layernorm.weight": {0: h}, "post_attention_layernorm.weight": {0: h},
             "q_proj.weight": {0: (q_rows, 2 * q_rows), 1: h}, "k_proj.weight": {0: kv_rows, 1: h},
             "v_proj.weight": {0: kv_rows, 1: h}, "o_proj.weight": {0: h, 1: q_rows},
             "mlp.gate_proj.weight": {0: args.intermediate_size or None, 1: h},
             "mlp.up_proj.weight": {0: args.intermediate_size or None, 1: h}, "mlp.down_proj.weight": {0: h}}
    for name in sorted(names):
        rule = next((r for sfx, r in rules.items() if name == sfx or name.endswith("." + sfx)), None)
        if rule is None:
            continue
        shape = source.shape(name)
        for dim, want in rule.items():
            ok = len(shape) > dim and (want is None or (shape[dim] in want if isinstance(want, tuple)
                                                        else shape[dim] == want))
            if not ok:
                raise UserError(f"tensor {name} has shape {list(shape)}, but config.json implies dimension {dim} "
                                f"= {want}; the config does not match the weights (fix config.json or the checkpoint)")
    layers = {int(m.group(1)) for n in names if (m := _LAYER.search(n))}
    if layers and layers != set(range(args.num_hidden_layers)):
        raise UserError(f"the checkpoint has layers {min(layers)}..{max(layers)} but config.json says "
                        f"num_hidden_layers = {args.num_hidden_layers}; fix config.json or the checkpoint")
