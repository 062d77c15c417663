"""A small ONNX graph builder that streams initializers to the external data file.

Each initializer is written to `model.onnx.data` the moment it is made and dropped from memory, so
an export's peak RAM is a small multiple of the largest tensor, not of the model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecpm.contract import CUSTOM_DOMAIN, WEIGHTS_FILE

MS = "com.microsoft"
OPSETS = {"": 21, MS: 1, CUSTOM_DOMAIN: 1}
ALIGN = 64  # bytes: lets onnxruntime mmap weights aligned
SMALL = 64  # tensors up to this many elements stay inline in the graph


class GraphBuilder:
    """Collects nodes and I/O; writes initializers through to `folder/model.onnx.data`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data = open(folder / WEIGHTS_FILE, "wb")
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.functions: dict[str, onnx.FunctionProto] = {}
        self._names: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}
        self._overloads: dict[tuple, str] = {}  # function signature -> overload id
        self._written: dict[tuple, tuple] = {}  # (dtype, blake2b of the bytes) -> (first tensor, offset)
        self.weights_bytes = 0

    def name(self, base: str) -> str:
        """A fresh value name derived from `base`."""
        n = self._names.get(base, 0)
        self._names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def init(self, name: str, array: np.ndarray) -> str:
        """Add an initializer; anything but tiny tensors goes straight to the data file."""
        if name in self._names:
            raise ValueError(f"initializer name {name} is already used")
        self._names[name] = 1
        return self._add_init(name, array)

    def _add_init(self, name: str, array: np.ndarray) -> str:
        array = np.ascontiguousarray(array)
        if array.size <= SMALL:
            self.inits.append(numpy_helper.from_array(array, name))
            return name
        # Big tensors: write the array's own buffer (no serialized copy) and reference it. Bytes already
        # written (a tied embedding's blocks reused by the lm_head) are referenced again, not rewritten:
        # the same shape shares the initializer itself, another shape points at the same bytes.
        view = memoryview(array.reshape(-1)).cast("B")
        key = (array.dtype.str, hashlib.blake2b(view, digest_size=16).digest())
        if key in self._written:
            first, offset = self._written[key]
            if tuple(first.dims) == array.shape:
                return first.name
        else:
            offset = self.data.tell()
            pad = -offset % ALIGN
            self.data.write(b"\0" * pad)
            offset += pad
            self.data.write(view)
            self.weights_bytes += array.nbytes
        tensor = onnx.TensorProto(name=name, dims=array.shape,
                                  data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
        self._written.setdefault(key, (tensor, offset))
        tensor.data_location = TensorProto.EXTERNAL
        for k, v in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(array.nbytes))):
            tensor.external_data.add(key=k, value=v)
        self.inits.append(tensor)
        return name

    def const(self, name: str, value, dtype=np.int64) -> str:
        """A small constant, shared by every node that asks for the same value."""
        value = np.asarray(value, dtype)
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self._consts:
            self._consts[key] = self._add_init(self.name(name), value)
        return self._consts[key]

    def node(self, op: str, inputs: list[str], n_out: int = 1, name: str | None = None,
             domain: str = "", **attrs) -> list[str]:
        """Add a node; returns its output names (fresh ones, from `name` or the op)."""
        base = name or op.lower()
        outs = [self.name(f"{base}/out{i}" if n_out > 1 else base) for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(f"n/{base}"), domain=domain, **attrs))
        return outs

    def op(self, op: str, *inputs: str, name: str | None = None, domain: str = "", **attrs) -> str:
        """Single-output node."""
        return self.node(op, list(inputs), 1, name, domain, **attrs)[0]

    def input(self, name: str, elem: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, value: str, name: str, elem: int, shape: list) -> None:
        """Expose `value` as graph output `name` (via Identity when the names differ)."""
        if value != name:
            self.nodes.append(helper.make_node("Identity", [value], [name], name=self.name(f"n/{name}")))
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))

    def custom(self, op: str, inputs: list[str], types: list, n_out: int, name: str, **attrs) -> list[str]:
        """An `ai.edgecpm` node plus the function body that lets any onnxruntime run it.

        types: the inputs' onnx TypeProtos (None for an absent optional input); the body is built
        for them. Nodes whose attributes and input types match share one function; others get an
        overload of their own.
        """
        from edgecpm.ops.functions import function_body, signature

        outs = self.node(op, inputs, n_out, name, CUSTOM_DOMAIN, **attrs)
        node = self.nodes[-1]
        sig = signature(node, types)
        if sig not in self._overloads:
            fn = function_body(node, types)
            n = sum(1 for s in self._overloads if s[0] == op)
            fn.overload = f"v{n}" if n else ""
            self._overloads[sig] = fn.overload
            self.functions[f"{fn.domain}::{fn.name}::{fn.overload}"] = fn
        node.overload = self._overloads[sig]
        return outs

    def finish(self, path: Path, producer: str) -> None:
        """Close the data file and write the graph (without weights) to `path`."""
        self.data.close()
        graph = helper.make_graph(self.nodes, "edgecpm", self.inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid(d, v) for d, v in OPSETS.items()]
        model = helper.make_model(graph, opset_imports=opsets, functions=list(self.functions.values()),
                                  producer_name="edgecpm", producer_version=producer)
        model.ir_version = 10
        onnx.save_model(model, str(path))
