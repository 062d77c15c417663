// LinearAttention, fp32 in/out, double accumulation inside.
// Decode (T = 1) is the recurrence itself, in two passes over the state (past -> present). Prefill works
// in chunks of kChunk tokens (matmul-shaped; AVX-512 / AVX2 clones chosen at run time):
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

// Chunked prefill for one (batch, kv head), any decay (per key dim: pairwise decays, double).
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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && !defined(__ANDROID__)
// Named ISA levels chosen at run time (ifunc): AVX-512, AVX2+FMA, and the x86-64-v2 baseline.
#define EDGECPM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EDGECPM_CLONES  // arm64 (NEON is the baseline), Android (ifunc needs API 29), clang: one build
#endif

// C[m x n] (+)= A[m x k] B[k x n], row-major with leading dimensions. Register tiles of MR x NR
// (the compiler keeps the tile in vector registers); edges fall back to a plain loop.
template <int MR, int NR>
__attribute__((always_inline)) inline void tile(int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                 bool accumulate) {
  float c[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) c[r][j] = accumulate ? C[r * ldc + j] : 0.f;
  for (int64_t p = 0; p < k; ++p) {
    const float* b = B + p * ldb;
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * lda + p];
      for (int j = 0; j < NR; ++j) c[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) C[r * ldc + j] = c[r][j];
}

EDGECPM_CLONES void gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
                         float* C, int64_t ldc, bool accumulate) {
  constexpr int MR = 4, NR = 32;
  int64_t i = 0;
  for (; i + MR <= m; i += MR) {
    int64_t j = 0;
    for (; j + NR <= n; j += NR) tile<MR, NR>(k, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
    for (; j + 16 <= n; j += 16) tile<MR, 16>(k, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
    for (int64_t r = i; r < i + MR; ++r)
      for (int64_t jj = j; jj < n; ++jj) {
        float acc = accumulate ? C[r * ldc + jj] : 0.f;
        for (int64_t p = 0; p < k; ++p) acc += A[r * lda + p] * B[p * ldb + jj];
        C[r * ldc + jj] = acc;
      }
  }
  for (; i < m; ++i) {
    float* c = C + i * ldc;
    if (!accumulate) std::fill(c, c + n, 0.f);
    const float* a = A + i * lda;
    for (int64_t p = 0; p < k; ++p) {
      const float x = a[p];
      const float* bp = B + p * ldb;
      for (int64_t j = 0; j < n; ++j) c[j] += x * bp[j];
    }
  }
}

// One decode step (T = 1) for one kv head, reading the past state and writing the present one in two passes.
EDGECPM_CLONES void decode_rows(int64_t dk, int64_t dv, const float* P, float* S, const float* kt, const float* e,
                                bool per_key, const float* const* qs, int nq, float* u, float* wq) {
  std::fill(u, u + dv, 0.f);
  std::fill(wq, wq + nq * dv, 0.f);
  if (!P) return;
  for (int64_t i = 0; i < dk; ++i) {
    const float ei = per_key ? e[i] : e[0];
    const float* row = P + i * dv;
    const float ki = kt[i] * ei;
    for (int64_t j = 0; j < dv; ++j) u[j] += ki * row[j];
    for (int r = 0; r < nq; ++r) {
      const float qi = qs[r][i] * ei;
      float* w = wq + r * dv;
      for (int64_t j = 0; j < dv; ++j) w[j] += qi * row[j];
    }
  }
}

EDGECPM_CLONES void update_rows(int64_t dk, int64_t dv, const float* P, float* S, const float* kt, const float* e,
                                bool per_key, const float* vt) {
  for (int64_t i = 0; i < dk; ++i) {
    const float ei = per_key ? e[i] : e[0];
    const float ki = kt[i];
    float* out = S + i * dv;
    if (P) {
      const float* row = P + i * dv;
      for (int64_t j = 0; j < dv; ++j) out[j] = ei * row[j] + ki * vt[j];
    } else {
      for (int64_t j = 0; j < dv; ++j) out[j] = ki * vt[j];
    }
  }
}

void decode_step(const Ctx& c, int64_t b, int64_t h, const float* P, float* S) {
  const auto& s = c.s;
  const int64_t dk = s.dk, dv = s.dv;
  thread_local std::vector<float> e, u, vt, wq;
  e.assign(s.decay_per_key ? dk : 1, 1.f);
  if (gated(c.rule))
    for (size_t i = 0; i < e.size(); ++i) e[i] = std::exp(static_cast<float>(c.G(b, 0, h, static_cast<int64_t>(i))));
  const float* qs[64];
  int64_t ohs[64];
  int nq = 0;
  c.for_outputs(h, [&](int64_t qh, int64_t oh) {
    if (nq < 64) { qs[nq] = c.Q(b, 0, qh); ohs[nq] = oh; ++nq; }
  });
  u.resize(dv);
  vt.resize(dv);
  wq.resize(nq * dv);
  const float* kt = c.K(b, 0, h);
  const float* vv = c.V(b, 0, h);
  decode_rows(dk, dv, P, S, kt, e.data(), s.decay_per_key, qs, nq, u.data(), wq.data());
  if (delta(c.rule)) {
    const float bt = static_cast<float>(c.Beta(b, 0, h));
    for (int64_t j = 0; j < dv; ++j) vt[j] = bt * (vv[j] - u[j]);
  } else {
    for (int64_t j = 0; j < dv; ++j) vt[j] = vv[j];
  }
  update_rows(dk, dv, P, S, kt, e.data(), s.decay_per_key, vt.data());
  for (int r = 0; r < nq; ++r) {  // q^T S_new = q^T D S_old + (q . k) vt
    float qk = 0.f;
    for (int64_t i = 0; i < dk; ++i) qk += qs[r][i] * kt[i];
    float* o = c.O(b, 0, ohs[r]);
    const float* w = &wq[r * dv];
    for (int64_t j = 0; j < dv; ++j) o[j] = s.scale * (w[j] + qk * vt[j]);
  }
}

// Chunked prefill with a per-head (or no) decay, in float matmuls: for a chunk of n tokens with
// a_t = exp(gamma_t) and L[t,u] = exp(gamma_t - gamma_u) (u <= t):
//   delta rules: (I + strictly-lower(beta_t L[t,u] k_t.k_u)) D = beta (V - a (K S0)); else D = V
//   O = scale (a (Q S0) + (L o Q K^T, u <= t) D);   S_n = a_n S0 + (L[n-1,u] k_u)^T D
void head_chunked_fast(const Ctx& c, int64_t b, int64_t h, float* S) {
  const auto& s = c.s;
  const int64_t dk = s.dk, dv = s.dv, C = kChunk;
  thread_local std::vector<float> Kc, KT, Vc, D, KS, KK, Qc, QS, QK, gam, tmp;
  Kc.resize(C * dk); KT.resize(dk * C); Vc.resize(C * dv); D.resize(C * dv); KS.resize(C * dv);
  KK.resize(C * C); Qc.resize(C * dk); QS.resize(C * dv); QK.resize(C * C); gam.resize(C); tmp.resize(C * dk);
  std::vector<std::pair<int64_t, int64_t>> outs;
  c.for_outputs(h, [&](int64_t qh, int64_t oh) { outs.emplace_back(qh, oh); });
  for (int64_t t0 = 0; t0 < s.T; t0 += C) {
    const int64_t n = std::min(C, s.T - t0);
    float g = 0.f;
    for (int64_t t = 0; t < n; ++t) {
      g += static_cast<float>(c.G(b, t0 + t, h, 0));
      gam[t] = g;
      std::copy(c.K(b, t0 + t, h), c.K(b, t0 + t, h) + dk, &Kc[t * dk]);
      std::copy(c.V(b, t0 + t, h), c.V(b, t0 + t, h) + dv, &Vc[t * dv]);
    }
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < dk; ++i) KT[i * n + t] = Kc[t * dk + i];
    if (delta(c.rule)) {
      gemm(n, dv, dk, Kc.data(), dk, S, dv, KS.data(), dv, false);  // K S0
      gemm(n, n, dk, Kc.data(), dk, KT.data(), n, KK.data(), n, false);  // K K^T
      for (int64_t t = 0; t < n; ++t) {
        const float bt = static_cast<float>(c.Beta(b, t0 + t, h));
        const float at = std::exp(gam[t]);
        float* d = &D[t * dv];
        for (int64_t j = 0; j < dv; ++j) d[j] = bt * (Vc[t * dv + j] - at * KS[t * dv + j]);
        for (int64_t u = 0; u < t; ++u) {
          const float a = bt * KK[t * n + u] * std::exp(gam[t] - gam[u]);
          const float* du = &D[u * dv];
          for (int64_t j = 0; j < dv; ++j) d[j] -= a * du[j];
        }
      }
    } else {
      std::copy(Vc.begin(), Vc.begin() + n * dv, D.begin());
    }
    for (auto [qh, oh] : outs) {
      for (int64_t t = 0; t < n; ++t) std::copy(c.Q(b, t0 + t, qh), c.Q(b, t0 + t, qh) + dk, &Qc[t * dk]);
      gemm(n, dv, dk, Qc.data(), dk, S, dv, QS.data(), dv, false);        // Q S0
      gemm(n, n, dk, Qc.data(), dk, KT.data(), n, QK.data(), n, false);   // Q K^T
      for (int64_t t = 0; t < n; ++t) {
        const float at = std::exp(gam[t]);
        for (int64_t j = 0; j < dv; ++j) QS[t * dv + j] *= at;
        for (int64_t u = 0; u < n; ++u) QK[t * n + u] = u <= t ? QK[t * n + u] * std::exp(gam[t] - gam[u]) : 0.f;
      }
      gemm(n, dv, n, QK.data(), n, D.data(), dv, QS.data(), dv, true);    // + (L o QK^T) D
      for (int64_t t = 0; t < n; ++t) {
        float* o = c.O(b, t0 + t, oh);
        for (int64_t j = 0; j < dv; ++j) o[j] = s.scale * QS[t * dv + j];
      }
    }
    // S <- a_n S0 + (L[n-1,u] k_u)^T D
    const float an = std::exp(gam[n - 1]);
    for (int64_t i = 0; i < dk * dv; ++i) S[i] *= an;
    for (int64_t i = 0; i < dk; ++i)
      for (int64_t u = 0; u < n; ++u) tmp[i * n + u] = KT[i * n + u] * std::exp(gam[n - 1] - gam[u]);
    gemm(dk, dv, n, tmp.data(), n, D.data(), dv, S, dv, true);
  }
}
}  // namespace

void linear_attention_head(Rule rule, const LinearAttentionShape& s, const float* q, const float* k, const float* v,
                           const float* decay, const float* beta, const float* past, float* present, float* out,
                           int64_t b, int64_t h) {
  Ctx c{rule, s, q, k, v, decay, beta, out, std::max(s.hq, s.hkv)};
  const size_t off = static_cast<size_t>((b * s.hkv + h) * s.dk * s.dv);
  float* S = present + off;
  const float* P = past ? past + off : nullptr;
  if (s.T == 1) {
    decode_step(c, b, h, P, S);
    return;
  }
  if (P) std::copy(P, P + s.dk * s.dv, S);
  else std::fill(S, S + s.dk * s.dv, 0.f);
  if (s.decay_per_key) head_chunked(c, b, h, S);  // pairwise decays, double (exact, slower)
  else head_chunked_fast(c, b, h, S);
}

void linear_attention(Rule rule, const LinearAttentionShape& s, const float* q, const float* k, const float* v,
                      const float* decay, const float* beta, const float* past, float* present, float* out) {
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.hkv; ++h) linear_attention_head(rule, s, q, k, v, decay, beta, past, present, out, b, h);
}

}  // namespace edgecpm_ops
