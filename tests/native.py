"""The native build (runtime/build, made by `make native`) for the test_native_* tests: paths, and a
small ctypes binding of runtime/include/edgecpm.h."""

import ctypes as C
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("EDGECPM_NATIVE_BUILD", ROOT / "runtime" / "build"))
RUN = BUILD / "edgecpm-run"
LIB = BUILD / "libedgecpm.so"
OPS_LIB = BUILD / "libedgecpm_ops.so"

# Skipped only outside CI: `make test` builds the native runtime first, so there a missing build fails.
BUILT = RUN.is_file() and LIB.is_file() and OPS_LIB.is_file()
need_native = pytest.mark.skipif(not BUILT and not os.environ.get("CI"),
                                 reason="native runtime not built: run `make native`")


# Under the ASan build (make native-asan) edgecpm-run also checks for leaks at exit (the Python process cannot).
ASAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1", "LD_PRELOAD": ""} if "asan" in BUILD.name else {}


def run(*args, check=True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **ASAN_ENV} if ASAN_ENV else None
    r = subprocess.run([str(RUN), *map(str, args)], capture_output=True, text=True, timeout=600, env=env, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"edgecpm-run failed ({r.returncode}): {r.stderr}")
    return r


def run_json(*args, **kw) -> dict:
    return json.loads(run(*args, "--json", **kw).stdout)


LOG = C.CFUNCTYPE(None, C.c_char_p, C.c_void_p)


class OpenOptions(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("threads", C.c_int32), ("context", C.c_int32), ("providers", C.c_char_p),
                ("recurrent_kernel", C.c_char_p), ("ops_library", C.c_char_p), ("verify_hashes", C.c_int32),
                ("report_placement", C.c_int32), ("qnn_library", C.c_char_p), ("qnn_backend_path", C.c_char_p),
                ("strict", C.c_int32), ("log", LOG), ("log_user", C.c_void_p)]


class GenParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("max_tokens", C.c_int32), ("temp", C.c_double), ("top_p", C.c_double),
                ("top_k", C.c_int32), ("min_p", C.c_double), ("repetition_penalty", C.c_double), ("seed", C.c_int64),
                ("prefill_chunk", C.c_int32), ("stop", C.POINTER(C.c_char_p)), ("n_stop", C.c_size_t)]


class Stats(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("prompt_tokens", C.c_int32), ("generated_tokens", C.c_int32),
                ("prefill_tps", C.c_double), ("decode_tps", C.c_double), ("position", C.c_int32),
                ("finish_reason", C.c_int32)]


STREAM = C.CFUNCTYPE(C.c_int, C.POINTER(C.c_char), C.c_size_t, C.c_int32, C.c_void_p)
FINISH = {0: None, 1: "stop", 2: "length", 3: "callback"}


class NativeError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"[{status}] {message}")
        self.status, self.message = status, message


def lib():
    L = C.CDLL(str(LIB))
    vp, i32p, sz = C.c_void_p, C.POINTER(C.c_int32), C.c_size_t
    sig = {
        "edgecpm_version": (C.c_char_p, []), "edgecpm_api_version": (C.c_int, []),
        "edgecpm_last_error": (C.c_char_p, []), "edgecpm_free": (None, [vp]),
        "edgecpm_open_options_default": (None, [C.POINTER(OpenOptions)]),
        "edgecpm_gen_params_default": (None, [C.POINTER(GenParams)]),
        "edgecpm_open": (C.c_int, [C.c_char_p, C.POINTER(OpenOptions), C.POINTER(vp)]),
        "edgecpm_close": (None, [vp]),
        "edgecpm_tokenize": (C.c_int, [vp, C.c_char_p, C.c_int, C.POINTER(i32p), C.POINTER(sz)]),
        "edgecpm_detokenize": (C.c_int, [vp, i32p, sz, C.POINTER(vp)]),
        "edgecpm_apply_chat_template": (C.c_int, [vp, C.POINTER(C.c_char_p), C.POINTER(C.c_char_p), sz, C.c_int,
                                                  C.POINTER(vp)]),
        "edgecpm_generate": (C.c_int, [vp, C.c_char_p, C.POINTER(GenParams), STREAM, vp, C.POINTER(vp)]),
        "edgecpm_generate_tokens": (C.c_int, [vp, i32p, sz, C.POINTER(GenParams), STREAM, vp, C.POINTER(vp)]),
        "edgecpm_last_tokens": (C.c_int, [vp, C.POINTER(i32p), C.POINTER(sz)]),
        "edgecpm_get_stats": (C.c_int, [vp, C.POINTER(Stats)]),
        "edgecpm_reset": (C.c_int, [vp]),
        "edgecpm_feed": (C.c_int, [vp, i32p, sz, C.c_int32, C.POINTER(C.c_float)]),
        "edgecpm_model_info": (C.c_int, [vp, C.POINTER(vp), i32p, i32p]),
        "edgecpm_snapshot_take": (C.c_int, [vp, C.POINTER(vp)]),
        "edgecpm_snapshot_restore": (C.c_int, [vp, vp]),
        "edgecpm_snapshot_free": (None, [vp]),
        "edgecpm_chat_create": (C.c_int, [vp, C.c_char_p, C.POINTER(vp)]),
        "edgecpm_chat_send": (C.c_int, [vp, C.c_char_p, C.POINTER(GenParams), STREAM, vp, C.POINTER(vp)]),
        "edgecpm_chat_last_prefill": (C.c_int32, [vp]),
        "edgecpm_chat_add": (C.c_int, [vp, C.c_char_p, C.c_char_p]),
        "edgecpm_chat_destroy": (None, [vp]),
    }
    for name, (res, args) in sig.items():
        f = getattr(L, name)
        f.restype, f.argtypes = res, args
    return L


class Model:
    """One native model through the C API (ctypes)."""

    def __init__(self, artifact, context: int = 0, recurrent_kernel: str = "auto", providers: str | None = None,
                 qnn_library: str | None = None, strict: bool = False, report_placement: bool = False, log=None):
        """log: called with each one-line notice of the open."""
        self.L = lib()
        o = OpenOptions()
        self.L.edgecpm_open_options_default(C.byref(o))
        o.context, o.recurrent_kernel = context, recurrent_kernel.encode()
        o.providers = providers.encode() if providers else None
        o.qnn_library = qnn_library.encode() if qnn_library else None
        o.strict, o.report_placement = int(strict), int(report_placement)
        self._log = LOG(lambda line, _: log(line.decode())) if log else LOG()  # kept alive while open runs
        o.log = self._log
        self.h = C.c_void_p()
        self._check(self.L.edgecpm_open(str(artifact).encode(), C.byref(o), C.byref(self.h)))

    def close(self):
        if self.h:
            self.L.edgecpm_close(self.h)
            self.h = C.c_void_p()

    def _check(self, status: int):
        if status:
            raise NativeError(status, self.L.edgecpm_last_error().decode())

    def _take_string(self, p: C.c_void_p) -> str:
        text = C.string_at(p.value).decode() if p.value else ""
        self.L.edgecpm_free(p)
        return text

    def _take_ids(self, ids, n) -> list[int]:
        out = [ids[i] for i in range(n.value)]
        self.L.edgecpm_free(C.cast(ids, C.c_void_p))
        return out

    def tokenize(self, text: str | bytes, add_bos: int = -1) -> list[int]:
        ids, n = C.POINTER(C.c_int32)(), C.c_size_t()
        raw = text if isinstance(text, bytes) else text.encode()
        self._check(self.L.edgecpm_tokenize(self.h, raw, add_bos, C.byref(ids), C.byref(n)))
        return self._take_ids(ids, n)

    def detokenize(self, ids: list[int]) -> str:
        arr = (C.c_int32 * len(ids))(*ids)
        out = C.c_void_p()
        self._check(self.L.edgecpm_detokenize(self.h, arr, len(ids), C.byref(out)))
        return self._take_string(out)

    def chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        n = len(messages)
        roles = (C.c_char_p * n)(*[m["role"].encode() for m in messages])
        contents = (C.c_char_p * n)(*[m["content"].encode() for m in messages])
        out = C.c_void_p()
        self._check(self.L.edgecpm_apply_chat_template(self.h, roles, contents, n, int(add_generation_prompt),
                                                       C.byref(out)))
        return self._take_string(out)

    @staticmethod
    def params(max_tokens=32, temp=0.0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0, seed=-1, stop=()):
        p = GenParams()
        lib().edgecpm_gen_params_default(C.byref(p))
        p.max_tokens, p.temp, p.top_p, p.top_k, p.min_p = max_tokens, temp, top_p, top_k, min_p
        p.repetition_penalty, p.seed = repetition_penalty, seed
        if stop:
            p._stop = (C.c_char_p * len(stop))(*[s.encode() for s in stop])
            p.stop, p.n_stop = p._stop, len(stop)
        return p

    def _stream(self, on_piece):
        pieces = []

        def cb(ptr, n, token, _):
            piece = C.string_at(ptr, n).decode("utf-8")  # strict: a split character would raise here
            pieces.append((piece, token))
            return 1 if on_piece and on_piece(piece, token) else 0

        return STREAM(cb), pieces

    def generate(self, prompt: str | bytes | list[int], on_piece=None, **gen) -> tuple[str, list, list[int]]:
        """(text, [(piece, token)], generated token ids)"""
        cb, pieces = self._stream(on_piece)
        out = C.c_void_p()
        p = self.params(**gen)
        if isinstance(prompt, list):
            arr = (C.c_int32 * len(prompt))(*prompt)
            st = self.L.edgecpm_generate_tokens(self.h, arr, len(prompt), C.byref(p), cb, None, C.byref(out))
        else:
            raw = prompt if isinstance(prompt, bytes) else prompt.encode()
            st = self.L.edgecpm_generate(self.h, raw, C.byref(p), cb, None, C.byref(out))
        self._check(st)
        return self._take_string(out), pieces, self.last_tokens()

    def last_tokens(self) -> list[int]:
        ids, n = C.POINTER(C.c_int32)(), C.c_size_t()
        self._check(self.L.edgecpm_last_tokens(self.h, C.byref(ids), C.byref(n)))
        return self._take_ids(ids, n)

    def stats(self) -> dict:
        s = Stats()
        s.struct_size = C.sizeof(Stats)
        self._check(self.L.edgecpm_get_stats(self.h, C.byref(s)))
        d = {name: getattr(s, name) for name, _ in Stats._fields_[1:]}
        d["finish_reason"] = FINISH[d["finish_reason"]]
        return d

    def reset(self):
        self._check(self.L.edgecpm_reset(self.h))

    def feed(self, ids: list[int]):
        """Feed tokens after the state; the logits [vocab] after the last one (numpy)."""
        import numpy as np

        vocab = C.c_int32()
        self._check(self.L.edgecpm_model_info(self.h, None, None, C.byref(vocab)))
        out = np.zeros(vocab.value, np.float32)
        arr = (C.c_int32 * len(ids))(*ids)
        self._check(self.L.edgecpm_feed(self.h, arr, len(ids), 0, out.ctypes.data_as(C.POINTER(C.c_float))))
        return out

    def placement(self) -> str:
        p = C.c_void_p()
        self._check(self.L.edgecpm_model_info(self.h, C.byref(p), None, None))
        return self._take_string(p)

    def snapshot(self):
        s = C.c_void_p()
        self._check(self.L.edgecpm_snapshot_take(self.h, C.byref(s)))
        return s

    def restore(self, snap):
        self._check(self.L.edgecpm_snapshot_restore(self.h, snap))

    def free_snapshot(self, snap):
        self.L.edgecpm_snapshot_free(snap)


class Chat:
    def __init__(self, model: Model, system: str | None = None):
        self.m = model
        self.h = C.c_void_p()
        model._check(model.L.edgecpm_chat_create(model.h, system.encode() if system else None, C.byref(self.h)))

    def send(self, content: str, **gen) -> str:
        cb, _ = self.m._stream(None)
        out = C.c_void_p()
        p = self.m.params(**gen)
        self.m._check(self.m.L.edgecpm_chat_send(self.h, content.encode(), C.byref(p), cb, None, C.byref(out)))
        return self.m._take_string(out)

    def add(self, role: str, content: str) -> None:
        self.m._check(self.m.L.edgecpm_chat_add(self.h, role.encode(), content.encode()))

    @property
    def last_prefill(self) -> int:
        return self.m.L.edgecpm_chat_last_prefill(self.h)

    def close(self):
        self.m.L.edgecpm_chat_destroy(self.h)
