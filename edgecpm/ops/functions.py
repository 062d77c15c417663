"""ONNX function bodies for the `ai.edgecpm` ops, so an artifact runs on any onnxruntime.

The body is ONNX's own definition of the opset-27 op (its context-dependent function, built by
`onnx` for the node's attributes and input types), moved into our domain and declared against the
standard opset the artifact imports. onnxruntime inlines a model-local function at load (no run-time
cost) unless a kernel is registered for the same domain and op, which then wins.

One function serves every node of an op whose attributes and input ranks are the same; a node that
differs gets its own overload (FunctionProto.overload / NodeProto.overload, IR >= 10).

AddBlockMins has no standard twin: its body is the four nodes an artifact used before the op existed
(Reshape to blocks, ReduceSum, MatMul with the mins, Add), one function per block size and rank.
"""

from __future__ import annotations

import onnx
from onnx import defs, helper

from edgecpm.ops import BLOCK_MINS, DOMAIN, OPS

OPSET = 27  # the standard opset whose op semantics we follow
BODY_OPSET = 21  # the body's ops exist unchanged at this version, which onnxruntime accepts


def function_body(node: onnx.NodeProto, input_types: list[onnx.TypeProto | None]) -> onnx.FunctionProto:
    """The function that computes `node` (domain ai.edgecpm) from standard ops."""
    if node.op_type == BLOCK_MINS:
        return _block_mins_body(node, input_types)
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
    if node.op_type == BLOCK_MINS:  # its body depends on the input ranks and the mins' type only
        return node.op_type, attrs, input_types[2].tensor_type.elem_type, \
            tuple(len(t.tensor_type.shape.dim) for t in input_types)
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


def _block_mins_body(node: onnx.NodeProto, input_types: list[onnx.TypeProto]) -> onnx.FunctionProto:
    """y [..., N], x [..., K], mins [K/b, N] -> y + ReduceSum(Reshape(x, [..., K/b, b]), -1) @ mins
    (fp16 mins are cast to fp32 first: onnxruntime folds that Cast of an initializer at load)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    b = attrs.get("block_size", 0)
    if b <= 0 or set(attrs) != {"block_size"}:
        raise ValueError(f"{BLOCK_MINS} takes one attribute, block_size > 0; got {attrs}")
    rank = len(input_types[1].tensor_type.shape.dim)
    c = lambda name, v: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name, onnx.TensorProto.INT64, [len(v)], v))
    nodes = [
        c("blocks_shape", [0] * (rank - 1) + [-1, b]), c("last_axis", [-1]),
        helper.make_node("Reshape", ["x", "blocks_shape"], ["x_blocks"]),  # [..., K/b, b]
        helper.make_node("ReduceSum", ["x_blocks", "last_axis"], ["sums"], keepdims=0),  # [..., K/b]
        helper.make_node("MatMul", ["sums", "mins32"], ["correction"]),  # [..., N]
        helper.make_node("Add", ["y", "correction"], ["out"]),
    ]
    if input_types[2].tensor_type.elem_type == onnx.TensorProto.FLOAT16:
        nodes.insert(4, helper.make_node("Cast", ["mins"], ["mins32"], to=onnx.TensorProto.FLOAT))
    else:
        nodes[4].input[1] = "mins"
    return helper.make_function(DOMAIN, BLOCK_MINS, ["y", "x", "mins"], ["out"], nodes,
                                [helper.make_opsetid("", BODY_OPSET)], attributes=["block_size"])
