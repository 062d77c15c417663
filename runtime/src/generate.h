// Generation in layers (mirrors edgecpm/runtime/generate.py): a token generator over the engine, a text
// stream that holds back partial characters and possible stop strings, and the whole text.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "edgecpm.h"
#include "engine.h"
#include "sample.h"
#include "tokenizer.h"

namespace edgecpm {

struct GenParams {
  int max_tokens = 256;
  SamplerParams sampler;
  double repetition_penalty = 1.0;
  int prefill_chunk = 512;
  std::vector<std::string> stop;
};

struct GenResult {
  std::string text;
  std::vector<int32_t> tokens;
  int finish = EDGECPM_FINISH_NONE;
  int prompt_tokens = 0, generated_tokens = 0;
  double prompt_tps = 0, generation_tps = 0;
};

// Called with each piece (complete UTF-8) and its token; returns true to stop.
using PieceFn = std::function<bool(const std::string& piece, int32_t token)>;

// Stream text for `new_tokens` fed after the engine's current state (a chat reuses that state).
// A token is fed back only when the next one is needed, so the state never holds a token it stopped on.
GenResult stream_tokens(Engine& engine, const Tokenizer& tok, const std::vector<int32_t>& new_tokens, const GenParams& p,
                        const PieceFn& on_piece, const std::function<void()>& on_prefill = {});

}  // namespace edgecpm
