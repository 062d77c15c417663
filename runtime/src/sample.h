// Samplers: the Python runtime's definitions (edgecpm/runtime/sample.py), and numpy's default_rng
// (SeedSequence + PCG64 + Generator.choice), so a seed gives the same draws in both runtimes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace edgecpm {

// numpy.random.default_rng(seed): PCG64 seeded through SeedSequence.
class NumpyRng {
 public:
  explicit NumpyRng(int64_t seed);  // seed < 0: from the OS
  uint64_t next64();
  double random();                  // Generator.random(): 53-bit double in [0, 1)
 private:
  unsigned __int128 state_ = 0, inc_ = 0;
};

struct SamplerParams {
  double temp = 0.0, top_p = 1.0, min_p = 0.0;
  int top_k = 0;
  int64_t seed = -1;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p) : p_(p), rng_(p.temp > 0 ? p.seed : 0) {}
  int sample(const float* logits, size_t n);  // greedy when temp <= 0
 private:
  SamplerParams p_;
  NumpyRng rng_;
  std::vector<double> x_, probs_;
  std::vector<int> order_;
};

// CTRL-style repetition penalty over `previous` (in place on a float32 copy of the logits).
void apply_repetition_penalty(std::vector<float>& logits, const std::vector<int32_t>& previous, double penalty);

// numpy's pairwise summation (np.sum of a float64 vector), so normalisations round the same way.
double pairwise_sum(const double* a, size_t n);

}  // namespace edgecpm
