#include <cmath>
#include <vector>

#include "ops.h"

namespace edgecpm_ops {

void causal_conv(int64_t B, int64_t C, int64_t L, int64_t K, const float* x, const float* w, const float* bias,
                 float* state, float* out, bool silu) {
  const int64_t P = K - 1;
  std::vector<float> buf(static_cast<size_t>(P + L));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      float* st = state + (b * C + c) * P;
      const float* xc = x + (b * C + c) * L;
      const float* wc = w + c * K;
      for (int64_t i = 0; i < P; ++i) buf[i] = st[i];
      for (int64_t t = 0; t < L; ++t) buf[P + t] = xc[t];
      float* oc = out + (b * C + c) * L;
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
}

}  // namespace edgecpm_ops
