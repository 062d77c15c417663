#include "sample.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>

namespace edgecpm {

namespace {
// numpy SeedSequence (pool size 4) -> generate_state(4, uint64)
constexpr uint32_t INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
constexpr uint32_t MIX_MULT_L = 0xca01f9dd, MIX_MULT_R = 0x4973f715;

uint32_t hashmix(uint32_t value, uint32_t& hash_const) {
  value ^= hash_const;
  hash_const *= MULT_A;
  value *= hash_const;
  value ^= value >> 16;
  return value;
}

uint32_t mix(uint32_t x, uint32_t y) {
  uint32_t r = MIX_MULT_L * x - MIX_MULT_R * y;
  r ^= r >> 16;
  return r;
}

void seed_sequence_state(const std::vector<uint32_t>& entropy, uint64_t out[4]) {
  uint32_t pool[4];
  uint32_t hc = INIT_A;
  for (size_t i = 0; i < 4; ++i) pool[i] = hashmix(i < entropy.size() ? entropy[i] : 0, hc);
  for (size_t s = 0; s < 4; ++s)
    for (size_t d = 0; d < 4; ++d)
      if (s != d) pool[d] = mix(pool[d], hashmix(pool[s], hc));
  for (size_t s = 4; s < entropy.size(); ++s)
    for (size_t d = 0; d < 4; ++d) pool[d] = mix(pool[d], hashmix(entropy[s], hc));
  uint32_t words[8];
  uint32_t hb = INIT_B;
  for (size_t i = 0; i < 8; ++i) {
    uint32_t v = pool[i % 4];
    v ^= hb;
    hb *= MULT_B;
    v *= hb;
    v ^= v >> 16;
    words[i] = v;
  }
  for (int i = 0; i < 4; ++i) out[i] = uint64_t(words[2 * i]) | (uint64_t(words[2 * i + 1]) << 32);
}

constexpr unsigned __int128 kMult = (static_cast<unsigned __int128>(2549297995355413924ULL) << 64) | 4865540595714422341ULL;
}  // namespace

NumpyRng::NumpyRng(int64_t seed) {
  std::vector<uint32_t> entropy;
  if (seed < 0) {
    std::random_device rd;
    for (int i = 0; i < 4; ++i) entropy.push_back(rd());
  } else {
    uint64_t s = static_cast<uint64_t>(seed);
    if (s == 0) entropy.push_back(0);
    while (s) { entropy.push_back(static_cast<uint32_t>(s & 0xffffffffu)); s >>= 32; }
  }
  uint64_t st[4];
  seed_sequence_state(entropy, st);
  unsigned __int128 initstate = (static_cast<unsigned __int128>(st[0]) << 64) | st[1];
  unsigned __int128 initseq = (static_cast<unsigned __int128>(st[2]) << 64) | st[3];
  state_ = 0;
  inc_ = (initseq << 1) | 1;
  state_ = state_ * kMult + inc_;
  state_ += initstate;
  state_ = state_ * kMult + inc_;
}

uint64_t NumpyRng::next64() {
  state_ = state_ * kMult + inc_;
  uint64_t x = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
  unsigned rot = static_cast<unsigned>(state_ >> 122);
  return (x >> rot) | (x << ((64 - rot) & 63));
}

double NumpyRng::random() { return static_cast<double>(next64() >> 11) * (1.0 / 9007199254740992.0); }

double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double r = 0.0;
    for (size_t i = 0; i < n; ++i) r += a[i];
    return r;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

namespace {
constexpr double NEG_INF = -std::numeric_limits<double>::infinity();

void softmax(const std::vector<double>& x, std::vector<double>& p) {
  double m = *std::max_element(x.begin(), x.end());
  p.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) p[i] = std::exp(x[i] - m);
  double s = pairwise_sum(p.data(), p.size());
  for (auto& v : p) v /= s;
}
}  // namespace

int Sampler::sample(const float* logits, size_t n) {
  if (p_.temp <= 0) return static_cast<int>(std::max_element(logits, logits + n) - logits);  // first maximum, like argmax
  x_.resize(n);
  for (size_t i = 0; i < n; ++i) x_[i] = static_cast<double>(logits[i]) / p_.temp;
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {  // keep the k largest (ties at the k-th kept)
    std::vector<double> tmp(x_);
    std::nth_element(tmp.begin(), tmp.begin() + (n - p_.top_k), tmp.end());
    double kth = tmp[n - p_.top_k];
    for (auto& v : x_) if (!(v >= kth)) v = NEG_INF;
  }
  if (p_.top_p < 1.0) {  // smallest set of most likely tokens whose mass reaches p
    softmax(x_, probs_);
    order_.resize(n);
    for (size_t i = 0; i < n; ++i) order_[i] = static_cast<int>(i);
    std::stable_sort(order_.begin(), order_.end(), [&](int a, int b) { return -x_[a] < -x_[b]; });
    double cum = 0;
    std::vector<char> keep(n, 0);
    for (size_t j = 0; j < n; ++j) {
      double pj = probs_[order_[j]];
      cum += pj;
      keep[order_[j]] = (cum - pj) < p_.top_p;
    }
    for (size_t i = 0; i < n; ++i) if (!keep[i]) x_[i] = NEG_INF;
  }
  if (p_.min_p > 0.0) {
    softmax(x_, probs_);
    double mx = *std::max_element(probs_.begin(), probs_.end());
    for (size_t i = 0; i < n; ++i) if (!(probs_[i] >= p_.min_p * mx)) x_[i] = NEG_INF;
  }
  softmax(x_, probs_);
  // Generator.choice(n, p=probs): cdf = cumsum(p); cdf /= cdf[-1]; searchsorted(cdf, random(), 'right')
  std::vector<double>& cdf = probs_;
  for (size_t i = 1; i < n; ++i) cdf[i] += cdf[i - 1];
  double last = cdf[n - 1];
  for (auto& v : cdf) v /= last;
  double u = rng_.random();
  return static_cast<int>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
}

void apply_repetition_penalty(std::vector<float>& logits, const std::vector<int32_t>& previous, double penalty) {
  if (penalty == 1.0 || previous.empty()) return;
  std::set<int32_t> ids(previous.begin(), previous.end());
  const float pen = static_cast<float>(penalty);  // numpy: float32 array op Python float -> float32
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
    float v = logits[id];
    logits[id] = v > 0 ? v / pen : v * pen;
  }
}

}  // namespace edgecpm
