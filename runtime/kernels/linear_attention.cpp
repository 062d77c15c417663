// LinearAttention, fp32 in/out, double accumulation inside.
// Decode (T = 1) is the recurrence itself. Prefill works in chunks of kChunk tokens (matmul-shaped):
// with gamma_t the cumulative log decay inside the chunk and S0 the state at its start,
//   S_t = D(t,0) S0 + sum_{s<=t} D(t,s) k_s d_s^T,      D(t,s) = diag(exp(gamma_t - gamma_s))
// where the values d_s are v_s (linear, gated) or, for the delta rules, the solution of the unit
// lower-triangular system  d_t + beta_t sum_{s<t} (k_t . D(t,s) k_s) d_s = beta_t (v_t - (D(t,0) k_t)^T S0).
// Outputs: o_t = scale * S_t^T q_t; the chunk's last S_t carries into the next chunk.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops.h"

namespace edgecpm_ops {

namespace {
constexpr int64_t kChunk = 64;

bool gated(Rule r) { return r == Rule::Gated || r == Rule::GatedDelta; }
bool delta(Rule r) { return r == Rule::Delta || r == Rule::GatedDelta; }

struct Ctx {
  Rule rule;
  const LinearAttentionShape& s;
  const float *q, *k, *v, *decay, *beta;
  float* out;
  int64_t heads;
  const float* K(int64_t b, int64_t t, int64_t h) const { return k + ((b * s.T + t) * s.hkv + h) * s.dk; }
  const float* V(int64_t b, int64_t t, int64_t h) const { return v + ((b * s.T + t) * s.hkv + h) * s.dv; }
  const float* Q(int64_t b, int64_t t, int64_t h) const { return q + ((b * s.T + t) * s.hq + h) * s.dk; }
  float* O(int64_t b, int64_t t, int64_t oh) const { return out + ((b * s.T + t) * heads + oh) * s.dv; }
  // log decay of key dim i (per-head decay: the same for every i)
  double G(int64_t b, int64_t t, int64_t h, int64_t i) const {
    if (!gated(rule)) return 0.0;
    return s.decay_per_key ? decay[((b * s.T + t) * s.hkv + h) * s.dk + i] : decay[(b * s.T + t) * s.hkv + h];
  }
  double Beta(int64_t b, int64_t t, int64_t h) const {
    return s.beta_per_head ? beta[(b * s.T + t) * s.hkv + h] : beta[b * s.T + t];
  }
  // (q head, output head) pairs served by kv head h
  template <typename F>
  void for_outputs(int64_t h, F&& f) const {
    if (s.hq >= s.hkv) {
      int64_t r = s.hq / s.hkv;
      for (int64_t j = 0; j < r; ++j) f(h * r + j, h * r + j);
    } else {
      f(h / (s.hkv / s.hq), h);
    }
  }
};

// One token at a time (decode, and the reference the chunked path is checked against).
void head_recurrent(const Ctx& c, int64_t b, int64_t h, float* S) {
  const auto& s = c.s;
  std::vector<double> u(s.dv), vt(s.dv);
  for (int64_t t = 0; t < s.T; ++t) {
    const float* kt = c.K(b, t, h);
    const float* vv = c.V(b, t, h);
    if (gated(c.rule)) {
      for (int64_t i = 0; i < s.dk; ++i) {
        float e = static_cast<float>(std::exp(c.G(b, t, h, i)));
        float* row = S + i * s.dv;
        for (int64_t j = 0; j < s.dv; ++j) row[j] *= e;
      }
    }
    if (delta(c.rule)) {
      std::fill(u.begin(), u.end(), 0.0);
      for (int64_t i = 0; i < s.dk; ++i) {
        const float* row = S + i * s.dv;
        double ki = kt[i];
        for (int64_t j = 0; j < s.dv; ++j) u[j] += ki * row[j];
      }
      double bt = c.Beta(b, t, h);
      for (int64_t j = 0; j < s.dv; ++j) vt[j] = bt * (vv[j] - u[j]);
    } else {
      for (int64_t j = 0; j < s.dv; ++j) vt[j] = vv[j];
    }
    for (int64_t i = 0; i < s.dk; ++i) {
      float* row = S + i * s.dv;
      double ki = kt[i];
      for (int64_t j = 0; j < s.dv; ++j) row[j] = static_cast<float>(row[j] + ki * vt[j]);
    }
    c.for_outputs(h, [&](int64_t qh, int64_t oh) {
      const float* qt = c.Q(b, t, qh);
      float* o = c.O(b, t, oh);
      std::fill(u.begin(), u.end(), 0.0);
      for (int64_t i = 0; i < s.dk; ++i) {
        const float* row = S + i * s.dv;
        double qi = qt[i];
        for (int64_t j = 0; j < s.dv; ++j) u[j] += qi * row[j];
      }
      for (int64_t j = 0; j < s.dv; ++j) o[j] = static_cast<float>(s.scale * u[j]);
    });
  }
}

// Chunked prefill for one (batch, kv head).
void head_chunked(const Ctx& c, int64_t b, int64_t h, float* Sf) {
  const auto& s = c.s;
  const int64_t dk = s.dk, dv = s.dv, gk = s.decay_per_key ? dk : 1;
  std::vector<double> S(Sf, Sf + dk * dv);            // state at the chunk start
  std::vector<double> gam(kChunk * gk);               // cumulative log decay
  std::vector<double> D(kChunk * dv);                 // the chunk's values d_t
  std::vector<double> A(kChunk * kChunk);             // k_t . D(t,s) k_s (delta) / q_t . D(t,s) k_s
  std::vector<double> kd(kChunk * dk), qd(kChunk * dk), acc(dv);
  for (int64_t t0 = 0; t0 < s.T; t0 += kChunk) {
    const int64_t n = std::min(kChunk, s.T - t0);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < gk; ++i)
        gam[t * gk + i] = (t ? gam[(t - 1) * gk + i] : 0.0) + c.G(b, t0 + t, h, i);
    auto dec = [&](int64_t t, int64_t i) { return gam[t * gk + (gk == 1 ? 0 : i)]; };
    // kd_t = D(t,0) k_t, for the S0 terms
    for (int64_t t = 0; t < n; ++t) {
      const float* kt = c.K(b, t0 + t, h);
      for (int64_t i = 0; i < dk; ++i) kd[t * dk + i] = kt[i] * std::exp(dec(t, i));
    }
    // values d_t
    for (int64_t t = 0; t < n; ++t) {
      const float* vt = c.V(b, t0 + t, h);
      double* d = &D[t * dv];
      if (!delta(c.rule)) {
        for (int64_t j = 0; j < dv; ++j) d[j] = vt[j];
        continue;
      }
      const double bt = c.Beta(b, t0 + t, h);
      std::fill(acc.begin(), acc.end(), 0.0);  // (D(t,0) k_t)^T S0
      for (int64_t i = 0; i < dk; ++i) {
        const double* row = &S[i * dv];
        const double x = kd[t * dk + i];
        for (int64_t j = 0; j < dv; ++j) acc[j] += x * row[j];
      }
      for (int64_t j = 0; j < dv; ++j) d[j] = bt * (vt[j] - acc[j]);
      const float* kt = c.K(b, t0 + t, h);
      for (int64_t u = 0; u < t; ++u) {  // forward substitution
        const float* ku = c.K(b, t0 + u, h);
        double a = 0;
        if (gk == 1) {
          for (int64_t i = 0; i < dk; ++i) a += double(kt[i]) * ku[i];
          a *= std::exp(dec(t, 0) - dec(u, 0));
        } else {
          for (int64_t i = 0; i < dk; ++i) a += double(kt[i]) * ku[i] * std::exp(dec(t, i) - dec(u, i));
        }
        a *= bt;
        const double* du = &D[u * dv];
        for (int64_t j = 0; j < dv; ++j) d[j] -= a * du[j];
      }
    }
    // outputs
    c.for_outputs(h, [&](int64_t qh, int64_t oh) {
      for (int64_t t = 0; t < n; ++t) {
        const float* qt = c.Q(b, t0 + t, qh);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t i = 0; i < dk; ++i) {  // (D(t,0) q_t)^T S0
          const double x = qt[i] * std::exp(dec(t, i));
          const double* row = &S[i * dv];
          for (int64_t j = 0; j < dv; ++j) acc[j] += x * row[j];
        }
        for (int64_t u = 0; u <= t; ++u) {
          const float* ku = c.K(b, t0 + u, h);
          double a = 0;
          if (gk == 1) {
            for (int64_t i = 0; i < dk; ++i) a += double(qt[i]) * ku[i];
            a *= std::exp(dec(t, 0) - dec(u, 0));
          } else {
            for (int64_t i = 0; i < dk; ++i) a += double(qt[i]) * ku[i] * std::exp(dec(t, i) - dec(u, i));
          }
          const double* du = &D[u * dv];
          for (int64_t j = 0; j < dv; ++j) acc[j] += a * du[j];
        }
        float* o = c.O(b, t0 + t, oh);
        for (int64_t j = 0; j < dv; ++j) o[j] = static_cast<float>(s.scale * acc[j]);
      }
    });
    // carry: S <- D(n-1,0) S0 + sum_u D(n-1,u) k_u d_u^T
    for (int64_t i = 0; i < dk; ++i) {
      double* row = &S[i * dv];
      const double e = std::exp(dec(n - 1, i));
      for (int64_t j = 0; j < dv; ++j) row[j] *= e;
      for (int64_t u = 0; u < n; ++u) {
        const double x = c.K(b, t0 + u, h)[i] * std::exp(dec(n - 1, i) - dec(u, i));
        const double* du = &D[u * dv];
        for (int64_t j = 0; j < dv; ++j) row[j] += x * du[j];
      }
    }
  }
  for (int64_t i = 0; i < dk * dv; ++i) Sf[i] = static_cast<float>(S[i]);
}
}  // namespace

void linear_attention_head(Rule rule, const LinearAttentionShape& s, const float* q, const float* k, const float* v,
                           const float* decay, const float* beta, float* state, float* out, int64_t b, int64_t h) {
  Ctx c{rule, s, q, k, v, decay, beta, out, std::max(s.hq, s.hkv)};
  float* S = state + (b * s.hkv + h) * s.dk * s.dv;
  if (s.T == 1) head_recurrent(c, b, h, S);
  else head_chunked(c, b, h, S);
}

void linear_attention(Rule rule, const LinearAttentionShape& s, const float* q, const float* k, const float* v,
                      const float* decay, const float* beta, float* state, float* out) {
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.hkv; ++h) linear_attention_head(rule, s, q, k, v, decay, beta, state, out, b, h);
}

}  // namespace edgecpm_ops
