// ai.edgecpm kernels (fp32). Semantics: ONNX opset 27 LinearAttention / CausalConvWithState and
// onnxruntime's com.microsoft kernels, and our AddBlockMins; plain reference: edgecpm/ops/reference.py.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace edgecpm_ops {

enum class Rule { Linear, Gated, Delta, GatedDelta };

struct LinearAttentionShape {
  int64_t B, T, hq, hkv, dk, dv;
  bool decay_per_key;  // decay [B, T, hkv * dk] rather than [B, T, hkv]
  bool beta_per_head;  // beta [B, T, hkv] rather than [B, T, 1]
  float scale;
};

// out [B, T, max(hq, hkv) * dv]; past (null = zeros) and present [B, hkv, dk, dv].
void linear_attention(Rule rule, const LinearAttentionShape& s, const float* q, const float* k, const float* v,
                      const float* decay, const float* beta, const float* past, float* present, float* out);

// One (batch, kv head) of it: the unit of parallel work.
void linear_attention_head(Rule rule, const LinearAttentionShape& s, const float* q, const float* k, const float* v,
                           const float* decay, const float* beta, const float* past, float* present, float* out,
                           int64_t b, int64_t h);

// input [B, C, L], weight [C, K], bias [C] or null, state [B, C, K-1] (in: past, out: present, in place).
void causal_conv(int64_t B, int64_t C, int64_t L, int64_t K, const float* x, const float* w, const float* bias,
                 float* state, float* out, bool silu);

// Rows [row_begin, row_end) of the flattened (batch, channel) axis: the unit of parallel work.
void causal_conv_channels(int64_t C, int64_t L, int64_t K, const float* x, const float* w, const float* bias,
                          float* state, float* out, bool silu, int64_t row_begin, int64_t row_end);

// out [rows, N] = y [rows, N] + (per-block sums of x [rows, K], blocks of `block`) @ mins [K/block, N],
// mins fp32 or (mins_f16) IEEE fp16.
struct BlockMinsJob {
  int64_t rows, K, N, block;
  const float *y, *x;
  const void* mins;
  bool mins_f16;
  float* out;
};
void add_block_mins(const BlockMinsJob& j);

// Rows [row_begin, row_end) x columns [col_begin, col_end) of it: the unit of parallel work.
void add_block_mins_part(const BlockMinsJob& j, int64_t row_begin, int64_t row_end, int64_t col_begin,
                         int64_t col_end);

}  // namespace edgecpm_ops
