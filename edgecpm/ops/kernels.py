"""Which kernel runs the `ai.edgecpm` ops, chosen when an artifact is loaded (`--recurrent-kernel`).

    function  the ONNX function body every node ships with (any onnxruntime; inlined at load)
    ort       onnxruntime's `com.microsoft` kernels of the same name and semantics: the nodes are
              moved to that domain in memory before the session is made
    native    our own kernel library (`EDGECPM_NATIVE_OPS=path/to/libedgecpm_ops.so`, else the one
              `make native` built in this checkout's runtime/build), registered for `ai.edgecpm`, so
              onnxruntime prefers it over the function body
    auto      native when that library is set or built, else ort when this onnxruntime has the
              kernels, else function
AddBlockMins (quantized weights with a per-block min) follows the same choice; it has no com.microsoft
twin, so under ort it runs its function body.

The domain rewrite needs no `onnx` package: it reads the few ModelProto fields it touches through
protobuf (an onnxruntime dependency); every other field passes through as unknown fields, untouched.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from edgecpm.contract import UserError
from edgecpm.ops import DOMAIN, OPS

KERNELS = ("auto", "function", "ort", "native")
MS = "com.microsoft"
NATIVE_ENV = "EDGECPM_NATIVE_OPS"


@dataclass(frozen=True)
class KernelChoice:
    kind: str  # "function" | "ort" | "native"
    reason: str
    library: str | None = None  # native: the custom-op library to register


@functools.cache
def ort_has_kernels() -> bool:
    """True when this onnxruntime defines com.microsoft LinearAttention and CausalConvWithState."""
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    have = {(s.domain, s.name) for s in C.get_all_operator_schema()}
    return all((MS, op) in have for op in OPS)


def built_library() -> str | None:
    """libedgecpm_ops as `make native` builds it beside this package (a source checkout), if it is there."""
    p = Path(__file__).resolve().parents[2] / "runtime" / "build" / "libedgecpm_ops.so"
    return str(p) if p.is_file() else None


def choose(requested: str = "auto") -> KernelChoice:
    """Resolve --recurrent-kernel to what this machine can run; refuse an impossible request."""
    if requested not in KERNELS:
        raise UserError(f"--recurrent-kernel {requested!r} is unknown; use one of {', '.join(KERNELS)}")
    lib = os.environ.get(NATIVE_ENV) or (built_library() if requested in ("auto", "native") else None)
    if requested == "native" or (requested == "auto" and lib):
        if not lib or not os.path.isfile(lib):
            raise UserError(f"--recurrent-kernel native needs {NATIVE_ENV} set to the edgecpm op library; "
                            "build runtime/ or use --recurrent-kernel auto")
        return KernelChoice("native", f"native library {lib}", lib)
    if requested == "ort" and not ort_has_kernels():
        raise UserError("this onnxruntime has no com.microsoft LinearAttention kernel; "
                        "use --recurrent-kernel function or onnxruntime >= 1.31")
    if requested == "function":
        return KernelChoice("function", "requested")
    if ort_has_kernels():
        return KernelChoice("ort", "onnxruntime's com.microsoft kernels")
    return KernelChoice("function", "this onnxruntime has no com.microsoft kernels")


@functools.cache
def _messages():
    """Minimal ModelProto/GraphProto/NodeProto views: only the fields the rewrite touches."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="edgecpm_onnx_view.proto", package="edgecpm_view",
                                             syntax="proto2")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, num, ftype, label, tname in fields:
            m.field.add(name=fname, number=num, type=ftype, label=label, type_name=tname)

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("Node", [("op_type", 4, F.TYPE_STRING, opt, None), ("domain", 7, F.TYPE_STRING, opt, None),
                 ("overload", 8, F.TYPE_STRING, opt, None)])
    msg("Graph", [("node", 1, F.TYPE_MESSAGE, rep, ".edgecpm_view.Node")])
    msg("Opset", [("domain", 1, F.TYPE_STRING, opt, None), ("version", 2, F.TYPE_INT64, opt, None)])
    msg("Model", [("graph", 7, F.TYPE_MESSAGE, opt, ".edgecpm_view.Graph"),
                  ("opset_import", 8, F.TYPE_MESSAGE, rep, ".edgecpm_view.Opset")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgecpm_view.Model"))


def retarget(model_bytes: bytes, domain: str = MS) -> tuple[bytes, int]:
    """Move every top-level ai.edgecpm op node to `domain`; returns (new model bytes, nodes moved)."""
    model = _messages()()
    model.ParseFromString(model_bytes)
    moved = 0
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type in OPS:
            node.domain = domain
            node.ClearField("overload")
            moved += 1
    if moved and not any(o.domain == domain for o in model.opset_import):
        model.opset_import.add(domain=domain, version=1)
    return model.SerializeToString(), moved
