#include "generate.h"

#include <algorithm>
#include <chrono>

#include "common.h"

namespace edgecpm {

namespace {
constexpr int kRepetitionContext = 64;

// Holds back text that may be the start of a stop string (counted in characters, like Python's str).
class StopFilter {
 public:
  explicit StopFilter(const std::vector<std::string>& stops) {
    size_t longest = 1;
    for (const auto& s : stops)
      if (!s.empty()) { stops_.push_back(s); longest = std::max(longest, utf8_length(s)); }
    hold_ = longest - 1;
  }
  std::string push(const std::string& text, bool* stopped) {
    buf_ += text;
    for (const auto& s : stops_) {
      size_t i = buf_.find(s);
      if (i != std::string::npos) {
        std::string out = buf_.substr(0, i);
        buf_.clear();
        *stopped = true;
        return out;
      }
    }
    size_t len = utf8_length(buf_);
    size_t cut = utf8_offset(buf_, len > hold_ ? len - hold_ : 0);
    std::string out = buf_.substr(0, cut);
    buf_ = buf_.substr(cut);
    *stopped = false;
    return out;
  }
  std::string flush() {
    std::string out;
    out.swap(buf_);
    return out;
  }

 private:
  std::vector<std::string> stops_;
  size_t hold_ = 0;
  std::string buf_;
};

double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

GenResult stream_tokens(Engine& engine, const Tokenizer& tok, const std::vector<int32_t>& new_tokens, const GenParams& p,
                        const PieceFn& on_piece, const std::function<void()>& on_prefill) {
  for (const auto& s : p.stop)
    if (!valid_utf8(s)) throw Error(EDGECPM_ERR_INVALID_UTF8, "a stop string is not valid UTF-8");
  GenResult r;
  r.prompt_tokens = static_cast<int>(new_tokens.size());
  if (p.max_tokens <= 0) { r.finish = EDGECPM_FINISH_LENGTH; return r; }
  Sampler sampler(p.sampler);
  StreamingDetokenizer detok(tok);
  StopFilter stops(p.stop);
  const double t0 = now();
  double t_first = t0;
  const size_t vocab = static_cast<size_t>(engine.vocab());
  std::vector<float> logits(vocab);
  const float* out = engine.prefill(new_tokens, p.prefill_chunk);
  int n = 0;
  auto emit = [&](const std::string& text, int32_t token, int finish) {
    r.text += text;
    if (n > 1) r.generation_tps = (n - 1) / (now() - t_first);
    r.finish = finish;
    bool stop = on_piece ? on_piece(text, token) : false;
    return stop;
  };
  for (int step = 0; step < p.max_tokens; ++step) {
    std::copy(out, out + vocab, logits.begin());
    if (p.repetition_penalty != 1.0) {
      const auto& seen = engine.state.tokens;
      std::vector<int32_t> last(seen.end() - std::min<size_t>(seen.size(), kRepetitionContext), seen.end());
      apply_repetition_penalty(logits, last, p.repetition_penalty);
    }
    int32_t token = sampler.sample(logits.data(), vocab);
    if (n == 0) {
      t_first = now();
      r.prompt_tps = new_tokens.size() / std::max(t_first - t0, 1e-9);
      if (on_prefill) on_prefill();
    }
    ++n;
    r.tokens.push_back(token);
    r.generated_tokens = n;
    bool stopped = false;
    if (tok.is_eos(token)) {
      std::string text = stops.push(detok.flush(), &stopped);
      emit(text + stops.flush(), token, EDGECPM_FINISH_STOP);
      return r;
    }
    std::string text = stops.push(detok.add(token), &stopped);
    if (stopped) {
      emit(text, token, EDGECPM_FINISH_STOP);
      return r;
    }
    if (n == p.max_tokens) {
      bool ignored = false;
      std::string rest = stops.push(detok.flush(), &ignored);
      emit(text + rest + stops.flush(), token, EDGECPM_FINISH_LENGTH);
      return r;
    }
    if (emit(text, token, EDGECPM_FINISH_NONE)) {
      r.finish = EDGECPM_FINISH_CALLBACK;
      return r;
    }
    int64_t id = token;
    out = engine.step(&id, 1);
  }
  return r;
}

}  // namespace edgecpm
