// The engine: one onnxruntime session over an artifact, its state buffers, and step()
// (mirrors edgecpm/runtime/engine.py). It never looks at the model type: everything comes from the manifest.
#pragma once
#include <string>
#include <vector>

#include "manifest.h"
#include "onnxruntime_cxx_api.h"
#include "state.h"

namespace edgecpm {

struct EngineOptions {
  int threads = 0;
  int context = 0;                      // 0 = min(4096, model)
  std::vector<std::string> providers;   // short names in order; CPU always last
  std::string recurrent_kernel = "auto";
  std::string ops_library;              // "" = $EDGECPM_NATIVE_OPS, else libedgecpm_ops.so beside libedgecpm
  bool verify_hashes = false;
  bool report_placement = false;
};

constexpr int kDefaultContext = 4096;

class Engine {
 public:
  Engine(const std::string& folder, const EngineOptions& o);
  // Feed tokens after the current state; returns the logits [vocab] of the last one (valid until the next step).
  const float* step(const int64_t* ids, size_t n);
  // Feed tokens in chunks; the logits after the last one.
  const float* prefill(const std::vector<int32_t>& tokens, int chunk);
  void reset() { state.reset(); }
  int64_t vocab() const { return manifest.vocab_size; }

  std::string folder;
  Manifest manifest;
  int64_t ctx = 0;
  std::string kernel;     // the kernel chosen for ai.edgecpm ops ("" for dense models)
  std::string placement;  // "provider nodes" lines, and any fallback notes
  State state;

 private:
  Ort::Session open(const EngineOptions& o);
  Ort::Session session_{nullptr};
  Ort::IoBinding io_{nullptr};
  Ort::MemoryInfo mem_{nullptr};
  std::vector<float> logits_;
  Ort::Value logits_value_{nullptr};
  std::vector<int64_t> ids_;
  int32_t seqlens_ = 0, total_ = 0;
  int64_t last_index_ = 0;
};

// Initializes the onnxruntime API once; throws Error(EDGECPM_ERR_RUNTIME) for a library older than the headers.
void init_ort();
Ort::Env& ort_env();

}  // namespace edgecpm
