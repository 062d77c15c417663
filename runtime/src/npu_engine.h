// The NPU engine (mirrors edgecpm/runtime/npu.py): runs an NPU artifact's static graphs (manifest
// target "npu", docs/artifact.md) on the QNN execution provider, or on the CPU when there is none.
//   prefill  T = the chunk: whole chunks of the prompt; decode  T = 1: everything else.
//   KV       graph input = the whole buffer [1, kv_heads, ctx, head_dim] (rows from pos on are
//            masked); graph output = the step's new rows [1, kv_heads, T, head_dim], copied into the
//            buffer at pos after the run.
//   mask     attention_mask [1, 1, T, ctx + T], additive (contract.npu_mask), kept per graph and
//            updated in place as the position moves.
//   fixed    conv / recurrent states ping-pong as in the CPU engine.
// Every buffer is allocated at open; a step fills them in place.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine.h"
#include "qnn.h"

namespace edgecpm {

class NpuEngine final : public Engine {
 public:
  NpuEngine(const std::string& folder, const Manifest& m, const EngineOptions& o);
  const float* step(const int64_t* ids, size_t n) override;
  const float* prefill(const std::vector<int32_t>& tokens, int chunk) override;

 private:
  struct Graph {  // one static graph: its session, binding, and the buffers bound to it
    int64_t T = 0;
    Ort::Session session{nullptr};
    Ort::IoBinding io{nullptr};
    std::vector<int64_t> ids, positions;       // [1, T]
    std::vector<float> mask;                   // [1, 1, T, rows + T]
    int64_t mask_pos = 0;                      // the position `mask` is set for
    std::vector<std::vector<float>> new_rows;  // per KV state: [1, kv_heads, T, head_dim]
    std::vector<Ort::Value> values;            // tensors over the buffers above
  };
  std::unique_ptr<Graph> open_graph(const std::string& name, const EngineOptions& o, const QnnProvider* qnn);
  Ort::Session qnn_session(const std::string& name, const std::string& file, const EngineOptions& o,
                           const QnnProvider& qnn);
  Ort::SessionOptions options(const EngineOptions& o, const QnnProvider* qnn, const std::string& compile_to,
                              bool verbose) const;
  void bind(Graph& g);
  void set_mask(Graph& g, int64_t pos) const;
  const float* run(Graph& g, const int64_t* ids);

  int64_t rows_ = 0;               // the graphs' static KV rows: the artifact's context_length
  std::vector<int64_t> kv_heads_;  // per KV state: batch x kv_heads
  Ort::MemoryInfo mem_{nullptr};
  Ort::RunOptions run_options_;
  std::vector<float> logits_;  // [1, 1, vocab]
  Ort::Value logits_value_{nullptr};
  std::unique_ptr<Graph> decode_, prefill_;  // prefill_ may be null (then every token goes through decode)
};

}  // namespace edgecpm
