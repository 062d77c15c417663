// AddBlockMins: out = y + (per-block sums of x) @ mins, the min correction of blocks w = d*q + m'.
// mins are fp32 or fp16 (half the bytes a decode step reads; the exporter writes fp16 only when exact).
// Reference: edgecpm/ops/reference.py add_block_mins.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "ops.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && !defined(__ANDROID__)
// Named ISA levels chosen at run time (ifunc): AVX-512, AVX2+FMA, and the x86-64-v2 baseline.
#define EDGECPM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EDGECPM_CLONES  // arm64 (NEON is the baseline), Android (ifunc needs API 29), clang: one build
#endif

namespace edgecpm_ops {
namespace {

struct Half {  // IEEE binary16 bits
  uint16_t bits;
};

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, em = h & 0x7fffu;
  float f;
  if (em < 0x0400u) {
    f = static_cast<float>(em) * 5.9604644775390625e-8f;  // zero or subnormal: em * 2^-24
  } else {
    const uint32_t u = (em << 13) + (em >= 0x7c00u ? 0x70000000u : 0x38000000u);  // rebias; inf / nan stay so
    std::memcpy(&f, &u, sizeof f);
  }
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u |= sign;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx,f16c"))) void halves_f16c(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}

// o[0, w) += s[0] m[0][.] + ... + s[3] m[3][.] with fp16 m, converted in registers (F16C).
__attribute__((target("avx2,fma,f16c"))) void axpy4_f16c(int64_t w, const float* s, const uint16_t* const* m,
                                                        float* o) {
  const __m256 s0 = _mm256_set1_ps(s[0]), s1 = _mm256_set1_ps(s[1]), s2 = _mm256_set1_ps(s[2]),
               s3 = _mm256_set1_ps(s[3]);
#define EDGECPM_LD(g) _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m[g] + i)))
  int64_t i = 0;
  for (; i + 8 <= w; i += 8) {
    __m256 acc = _mm256_fmadd_ps(s0, EDGECPM_LD(0), _mm256_loadu_ps(o + i));
    acc = _mm256_fmadd_ps(s1, EDGECPM_LD(1), acc);
    acc = _mm256_fmadd_ps(s2, EDGECPM_LD(2), acc);
    _mm256_storeu_ps(o + i, _mm256_fmadd_ps(s3, EDGECPM_LD(3), acc));
  }
#undef EDGECPM_LD
  for (; i < w; ++i)
    o[i] += s[0] * half_to_float(m[0][i]) + s[1] * half_to_float(m[1][i]) + s[2] * half_to_float(m[2][i]) +
            s[3] * half_to_float(m[3][i]);
}
// The same with fp32 m.
__attribute__((target("avx2,fma"))) void axpy4_avx2(int64_t w, const float* s, const float* const* m, float* o) {
  const __m256 s0 = _mm256_set1_ps(s[0]), s1 = _mm256_set1_ps(s[1]), s2 = _mm256_set1_ps(s[2]),
               s3 = _mm256_set1_ps(s[3]);
  int64_t i = 0;
  for (; i + 8 <= w; i += 8) {
    __m256 acc = _mm256_fmadd_ps(s0, _mm256_loadu_ps(m[0] + i), _mm256_loadu_ps(o + i));
    acc = _mm256_fmadd_ps(s1, _mm256_loadu_ps(m[1] + i), acc);
    acc = _mm256_fmadd_ps(s2, _mm256_loadu_ps(m[2] + i), acc);
    _mm256_storeu_ps(o + i, _mm256_fmadd_ps(s3, _mm256_loadu_ps(m[3] + i), acc));
  }
  for (; i < w; ++i) o[i] += s[0] * m[0][i] + s[1] * m[1][i] + s[2] * m[2][i] + s[3] * m[3][i];
}
inline void axpy4_avx2(int64_t w, const float* s, const Half* const* m, float* o) {
  axpy4_f16c(w, s, reinterpret_cast<const uint16_t* const*>(m), o);
}
#define EDGECPM_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) inline
EDGECPM_AVX2 __m256 load8(const float* m) { return _mm256_loadu_ps(m); }
EDGECPM_AVX2 __m256 load8(const Half* m) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m))); }
inline float to_float(float v) { return v; }
inline float to_float(Half h) { return half_to_float(h.bits); }

// out[MR rows, 16 columns] = y + s[MR, kb] (row stride lds) @ m[kb, 16] (row stride N): 2 MR accumulators.
template <int MR, typename M>
EDGECPM_AVX2 void tile16(int64_t kb, int64_t lds, int64_t N, const float* s, const M* m, const float* y, float* out) {
  __m256 c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) c0[r] = _mm256_loadu_ps(y + r * N), c1[r] = _mm256_loadu_ps(y + r * N + 8);
  for (int64_t b = 0; b < kb; ++b) {
    const __m256 m0 = load8(m + b * N), m1 = load8(m + b * N + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(s + r * lds + b);
      c0[r] = _mm256_fmadd_ps(a, m0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, m1, c1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) _mm256_storeu_ps(out + r * N, c0[r]), _mm256_storeu_ps(out + r * N + 8, c1[r]);
}

// MR rows, columns [c0, c1): 16-column tiles, then one column at a time.
template <int MR, typename M>
__attribute__((target("avx2,fma,f16c"))) void tile_rows(int64_t kb, int64_t lds, int64_t N, const float* s,
                                                         const M* m, const float* y, float* out, int64_t c0, int64_t c1) {
  int64_t c = c0;
  for (; c + 16 <= c1; c += 16) tile16<MR>(kb, lds, N, s, m + c, y + c, out + c);
  for (; c < c1; ++c)
    for (int r = 0; r < MR; ++r) {
      float acc = y[r * N + c];
      for (int64_t b = 0; b < kb; ++b) acc += s[r * lds + b] * to_float(m[b * N + c]);
      out[r * N + c] = acc;
    }
}

// Many rows (prefill): register tiles of 6 rows x 16 columns (12 of the 16 AVX2 registers accumulate).
template <typename M>
void gemm_avx2(int64_t R, int64_t kb, int64_t lds, int64_t N, const float* s, const M* m, const float* y, float* out,
               int64_t c0, int64_t c1) {
  int64_t r = 0;
  for (; r + 6 <= R; r += 6) tile_rows<6>(kb, lds, N, s + r * lds, m, y + r * N, out + r * N, c0, c1);
  s += r * lds, y += r * N, out += r * N;
  switch (R - r) {
    case 5: return tile_rows<5>(kb, lds, N, s, m, y, out, c0, c1);
    case 4: return tile_rows<4>(kb, lds, N, s, m, y, out, c0, c1);
    case 3: return tile_rows<3>(kb, lds, N, s, m, y, out, c0, c1);
    case 2: return tile_rows<2>(kb, lds, N, s, m, y, out, c0, c1);
    case 1: return tile_rows<1>(kb, lds, N, s, m, y, out, c0, c1);
    default: return;
  }
}
#undef EDGECPM_AVX2

// EDGECPM_OPS_PORTABLE=1 takes the portable loops on any CPU (tests/test_block_mins.py checks them with it).
static const bool kF16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c") && !std::getenv("EDGECPM_OPS_PORTABLE");
#endif

// dst[0, n) = src as fp32: F16C where the CPU has it (x86-64-v3 and up), NEON on arm64, else bit by bit.
void halves_to_floats(const uint16_t* src, float* dst, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool f16c = __builtin_cpu_supports("f16c");
  if (f16c) return halves_f16c(src, dst, n);
#elif defined(__aarch64__)
  const __fp16* h = reinterpret_cast<const __fp16*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(h[i]);
  return;
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}

constexpr int64_t kChunk = 256;  // columns per pass: a [kb, kChunk] slab of mins stays in cache across rows
constexpr int64_t kGroup = 4;    // block rows of mins streamed together: out is loaded and stored once per 4

// Row b of mins, columns [c, c + w), as fp32: the row itself, or converted into buf.
__attribute__((always_inline)) inline const float* mins_row(const float* mins, int64_t N, int64_t b, int64_t c, int64_t, float*) {
  return mins + b * N + c;
}
__attribute__((always_inline)) inline const float* mins_row(const Half* mins, int64_t N, int64_t b, int64_t c, int64_t w, float* buf) {
  halves_to_floats(&mins[b * N + c].bits, buf, w);
  return buf;
}

// o[0, w) += s[0] m[0][.] + ... + s[3] m[3][.]
__attribute__((always_inline)) inline void axpy4(int64_t w, const float* s, const float* const* m, float* __restrict o) {
  const float *__restrict m0 = m[0], *__restrict m1 = m[1], *__restrict m2 = m[2], *__restrict m3 = m[3];
  const float s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
  for (int64_t i = 0; i < w; ++i) o[i] += s0 * m0[i] + s1 * m1[i] + s2 * m2[i] + s3 * m3[i];
}

#if defined(__x86_64__) && defined(__GNUC__)
// One row (decode): whole mins rows streamed (long runs for the prefetcher) into AVX2 registers.
template <typename M>
void decode_row(const BlockMinsJob& j, const M* mins, const float* sums, int64_t row, int64_t c0, int64_t c1) {
  const int64_t N = j.N, kb = j.K / j.block;
  float* o = j.out + row * N;
  std::copy(j.y + row * N + c0, j.y + row * N + c1, o + c0);
  for (int64_t b = 0; b < kb; b += kGroup) {
    const M* m[kGroup];  // rows past kb: any real row, times a zero sum
    for (int64_t g = 0; g < kGroup; ++g) m[g] = mins + std::min(b + g, kb - 1) * N + c0;
    axpy4_avx2(c1 - c0, sums + b, m, o + c0);
  }
}
#endif

template <typename M>
__attribute__((always_inline)) inline void block_rows(const BlockMinsJob& j, const M* mins, int64_t row_begin,
                                                      int64_t row_end, int64_t col_begin, int64_t col_end) {
  const int64_t K = j.K, N = j.N, block = j.block, kb = K / block, R = row_end - row_begin;
  const int64_t kbp = (kb + kGroup - 1) / kGroup * kGroup;     // sums padded with zeros to whole groups
  std::vector<float> sums(static_cast<size_t>(R * kbp), 0.f);  // [R, kbp] block sums of x
  for (int64_t r = 0; r < R; ++r)
    for (int64_t b = 0; b < kb; ++b) {
      const float* xb = j.x + (row_begin + r) * K + b * block;
      float acc = 0.f;
      for (int64_t i = 0; i < block; ++i) acc += xb[i];
      sums[r * kbp + b] = acc;
    }
#if defined(__x86_64__) && defined(__GNUC__)
  if (R == 1 && kF16c) return decode_row(j, mins, sums.data(), row_begin, col_begin, col_end);
  if (kF16c) {
    const int64_t r0 = row_begin * N;
    return gemm_avx2(R, kb, kbp, N, sums.data(), mins, j.y + r0, j.out + r0, col_begin, col_end);
  }
#endif
  std::vector<float> buf(static_cast<size_t>((kGroup + 1) * kChunk), 0.f);  // fp16 rows as fp32; last: zeros
  const float* zeros = buf.data() + kGroup * kChunk;
  for (int64_t c = col_begin; c < col_end; c += kChunk) {
    const int64_t w = std::min(kChunk, col_end - c);
    for (int64_t r = row_begin; r < row_end; ++r) std::copy(j.y + r * N + c, j.y + r * N + c + w, j.out + r * N + c);
    for (int64_t b = 0; b < kb; b += kGroup) {
      const float* m[kGroup];
      for (int64_t g = 0; g < kGroup; ++g)
        m[g] = b + g < kb ? mins_row(mins, N, b + g, c, w, buf.data() + g * kChunk) : zeros;
      for (int64_t r = 0; r < R; ++r) axpy4(w, sums.data() + r * kbp + b, m, j.out + (row_begin + r) * N + c);
    }
  }
}

}  // namespace

EDGECPM_CLONES void add_block_mins_part(const BlockMinsJob& j, int64_t row_begin, int64_t row_end, int64_t col_begin,
                                        int64_t col_end) {
  if (j.mins_f16)
    block_rows(j, static_cast<const Half*>(j.mins), row_begin, row_end, col_begin, col_end);
  else
    block_rows(j, static_cast<const float*>(j.mins), row_begin, row_end, col_begin, col_end);
}

void add_block_mins(const BlockMinsJob& j) { add_block_mins_part(j, 0, j.rows, 0, j.N); }

}  // namespace edgecpm_ops
