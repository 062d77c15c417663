#include <cmath>
#include <vector>

#include "ops.h"

namespace edgecpm_ops {

void causal_conv_channels(int64_t C, int64_t L, int64_t K, const float* x, const float* w, const float* bias,
                          float* state, float* out, bool silu, int64_t row_begin, int64_t row_end) {
  const int64_t P = K - 1;
  std::vector<float> buf(static_cast<size_t>(P + L));  // [K-1 carried | L new] of one channel
  for (int64_t r = row_begin; r < row_end; ++r) {       // r = b * C + c
    const int64_t c = r % C;
    float* st = state + r * P;
    const float* xc = x + r * L;
    const float* wc = w + c * K;
    for (int64_t i = 0; i < P; ++i) buf[i] = st[i];
    for (int64_t t = 0; t < L; ++t) buf[P + t] = xc[t];
    float* oc = out + r * L;
    for (int64_t t = 0; t < L; ++t) {
      float acc = 0.f;
      for (int64_t j = 0; j < K; ++j) acc += buf[t + j] * wc[j];
      if (bias) acc += bias[c];
      if (silu) acc = acc / (1.f + std::exp(-acc));
      oc[t] = acc;
    }
    for (int64_t i = 0; i < P; ++i) st[i] = buf[L + i];
  }
}

void causal_conv(int64_t B, int64_t C, int64_t L, int64_t K, const float* x, const float* w, const float* bias,
                 float* state, float* out, bool silu) {
  causal_conv_channels(C, L, K, x, w, bias, state, out, silu, 0, B * C);
}

}  // namespace edgecpm_ops
