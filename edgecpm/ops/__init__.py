"""The operators of domain `ai.edgecpm`.

Recurrent state: LinearAttention and CausalConvWithState, with the inputs, outputs, attributes and
semantics of ONNX opset 27's ops of the same names (and of onnxruntime's `com.microsoft` kernels).
Quantized weights: AddBlockMins, the min correction of blocks `w = d*q + m` (ours; no standard twin).

    reference.py   plain numpy implementations, token by token: the oracle for every kernel
    functions.py   ONNX function bodies (standard ops) shipped inside each artifact (export side)
    kernels.py     load-time kernel choice: function body, onnxruntime's kernel, or a native library
"""

DOMAIN = "ai.edgecpm"
OPS = ("LinearAttention", "CausalConvWithState")  # the ones onnxruntime's com.microsoft also has
BLOCK_MINS = "AddBlockMins"
