"""ONNX function bodies for the `ai.edgecpm` ops, so an artifact runs on any onnxruntime.

The body is ONNX's own definition of the opset-27 op (its context-dependent function, built by
`onnx` for the node's attributes and input types), moved into our domain and declared against the
standard opset the artifact imports. onnxruntime inlines a model-local function at load (no run-time
cost) unless a kernel is registered for the same domain and op, which then wins.

One function serves every node of an op whose attributes and input ranks are the same; a node that
differs gets its own overload (FunctionProto.overload / NodeProto.overload, IR >= 10).
"""

from __future__ import annotations

import onnx
from onnx import defs, helper

from edgecpm.ops import DOMAIN, OPS

OPSET = 27  # the standard opset whose op semantics we follow
BODY_OPSET = 21  # the body's ops exist unchanged at this version, which onnxruntime accepts


def function_body(node: onnx.NodeProto, input_types: list[onnx.TypeProto | None]) -> onnx.FunctionProto:
    """The function that computes `node` (domain ai.edgecpm) from standard ops."""
    if node.op_type not in OPS:
        raise ValueError(f"{node.op_type} is not an {DOMAIN} op")
    std = onnx.NodeProto()
    std.CopyFrom(node)
    std.domain, std.overload = "", ""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inverse = node.op_type == "LinearAttention" and attrs["kv_num_heads"] > attrs["q_num_heads"]
    if inverse:  # ONNX defines Hq >= Hkv only: repeat each query head, then it is plain multi-head
        for a in std.attribute:
            if a.name == "q_num_heads":
                a.i = attrs["kv_num_heads"]
    schema = defs.get_schema(node.op_type, OPSET)
    blob = schema.get_context_dependent_function(
        std.SerializeToString(), [t.SerializeToString() if t else b"" for t in input_types])
    fn = onnx.FunctionProto()
    fn.ParseFromString(blob)
    if not fn.node:
        raise ValueError(f"onnx {onnx.__version__} builds no function body for {node.op_type} with {attrs}")
    if inverse:
        _repeat_query_heads(fn, attrs["q_num_heads"], attrs["kv_num_heads"])
    fn.domain = DOMAIN
    del fn.opset_import[:]
    fn.opset_import.extend([helper.make_opsetid("", BODY_OPSET)])
    return fn


def signature(node: onnx.NodeProto, input_types: list[onnx.TypeProto | None]) -> tuple:
    """What the generated body depends on: attributes and the inputs' element types and shapes."""
    attrs = tuple(sorted((a.name, helper.get_attribute_value(a)) for a in node.attribute))
    ins = tuple((t.tensor_type.elem_type, tuple(d.dim_value or d.dim_param for d in t.tensor_type.shape.dim))
                if t else None for t in input_types)
    return node.op_type, attrs, ins, tuple(bool(i) for i in node.input)


def _repeat_query_heads(fn: onnx.FunctionProto, hq: int, hkv: int) -> None:
    """Inverse GQA (Hkv > Hq): query head i serves KV heads i*r .. i*r+r-1 (r = Hkv / Hq)."""
    r = hkv // hq
    c = lambda name, v: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name, onnx.TensorProto.INT64, [len(v)], v))
    pre = [
        c("InvGqa.Split", [0, 0, hq, -1]), c("InvGqa.Axis", [3]), c("InvGqa.Rep", [1, 1, 1, r, 1]),
        c("InvGqa.Flat", [0, 0, -1]),
        helper.make_node("Reshape", ["query", "InvGqa.Split"], ["InvGqa.Q4"]),  # [B, T, Hq, dk]
        helper.make_node("Unsqueeze", ["InvGqa.Q4", "InvGqa.Axis"], ["InvGqa.Q5"]),  # [B, T, Hq, 1, dk]
        helper.make_node("Tile", ["InvGqa.Q5", "InvGqa.Rep"], ["InvGqa.Q5r"]),  # [B, T, Hq, r, dk]
        helper.make_node("Reshape", ["InvGqa.Q5r", "InvGqa.Flat"], ["InvGqa.Query"]),  # [B, T, Hkv * dk]
    ]
    for n in fn.node:
        n.input[:] = ["InvGqa.Query" if i == "query" else i for i in n.input]
    nodes = pre + list(fn.node)
    del fn.node[:]
    fn.node.extend(nodes)
