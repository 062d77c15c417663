"""The recurrent-state operators of domain `ai.edgecpm`: LinearAttention and CausalConvWithState.

Their inputs, outputs, attributes and semantics are those of ONNX opset 27's ops of the same names
(and of onnxruntime's `com.microsoft` kernels).

    reference.py   plain numpy implementations, token by token: the oracle for every kernel
    functions.py   ONNX function bodies (standard ops) shipped inside each artifact (export side)
    kernels.py     load-time kernel choice: function body, onnxruntime's kernel, or a native library
"""

DOMAIN = "ai.edgecpm"
OPS = ("LinearAttention", "CausalConvWithState")
