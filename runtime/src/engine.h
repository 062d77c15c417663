// The engine: onnxruntime sessions over an artifact, its state buffers, and step()
// (mirrors edgecpm/runtime/engine.py). It never looks at the model type: everything comes from the manifest.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "manifest.h"
#include "memory.h"
#include "onnxruntime_cxx_api.h"
#include "state.h"

namespace edgecpm {

using LogFn = std::function<void(const std::string& line)>;

struct EngineOptions {
  int threads = 0;
  int context = 0;                      // 0 = min(4096, model); an NPU artifact: its context_length
  std::vector<std::string> providers;   // short names in order; CPU always last
  std::string recurrent_kernel = "auto";
  std::string ops_library;              // "" = $EDGECPM_NATIVE_OPS, else libedgecpm_ops.so beside libedgecpm
  bool verify_hashes = false;
  bool report_placement = false;
  std::string qnn_library;              // QNN plugin EP library; "" = $EDGECPM_QNN_LIBRARY, else a built-in "QNN" EP
  std::string qnn_backend_path;         // QNN backend; "" = $EDGECPM_QNN_BACKEND, else libQnnHtp.so beside qnn_library
  bool strict = false;                  // every node on the requested provider or the open fails (no CPU fallback)
  LogFn log;                            // one-line notices (provider fallback); may be empty
};

constexpr int kDefaultContext = 4096;

// What the generator, the chat and the C API drive; open_engine() picks the implementation by the
// manifest's target (CpuEngine for "cpu", NpuEngine for "npu").
class Engine {
 public:
  virtual ~Engine() = default;
  // Feed tokens after the current state; returns the logits [vocab] of the last one (valid until the next step).
  virtual const float* step(const int64_t* ids, size_t n) = 0;
  // Feed the prompt (in chunks); the logits after its last token.
  virtual const float* prefill(const std::vector<int32_t>& tokens, int chunk) = 0;
  void reset() { state.reset(); }
  int64_t vocab() const { return manifest.vocab_size; }

  std::string folder;
  Manifest manifest;
  int64_t ctx = 0;        // tokens a conversation may hold
  std::string kernel;     // the kernel chosen for ai.edgecpm ops ("" for dense models)
  std::string placement;  // "provider nodes" lines, and any fallback notes
  State state;

 protected:
  Engine(const std::string& folder, const Manifest& m, int64_t ctx, int64_t rows);  // rows: KV buffer rows
  void check_tokens(const int64_t* ids, size_t n) const;  // context and vocabulary; throws Error
  void check_prompt(size_t n) const;                      // the prompt fits the context; throws Error
  void notice(const EngineOptions& o, const std::string& line);  // into placement and the log
};

// The CPU artifact's engine (mirrors edgecpm/runtime/engine.py): one session over model.onnx.
class CpuEngine final : public Engine {
 public:
  CpuEngine(const std::string& folder, const Manifest& m, const EngineOptions& o);
  const float* step(const int64_t* ids, size_t n) override;
  const float* prefill(const std::vector<int32_t>& tokens, int chunk) override;

 private:
  Ort::Session open(const EngineOptions& o);
  WeightsMap weights_;  // before session_: destroyed after it
  Ort::Session session_{nullptr};
  Ort::IoBinding io_{nullptr};
  Ort::MemoryInfo mem_{nullptr};
  std::vector<float> logits_;
  Ort::Value logits_value_{nullptr};
  std::vector<int64_t> ids_;
  int32_t seqlens_ = 0, total_ = 0;
  int64_t last_index_ = 0;
};

// Reads the manifest once and opens the engine its target names. Throws Error.
std::unique_ptr<Engine> open_engine(const std::string& folder, const EngineOptions& o);

// Initializes the onnxruntime API once; throws Error(EDGECPM_ERR_RUNTIME) for a library older than the headers.
void init_ort();
Ort::Env& ort_env();
// Starts (or stops, with nullptr) keeping onnxruntime's placement lines in *into while a session is made.
void capture_log(std::string* into);
// "provider nodes" lines from the captured log ("CPUExecutionProvider 612").
std::string placement_lines(const std::string& captured);
std::string first_line(const std::string& s);

}  // namespace edgecpm
