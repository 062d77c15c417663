// Model state: buffers allocated once from the manifest's state specs (mirrors edgecpm/runtime/state.py).
//   kv        one buffer [1, kv_heads, ctx, hd] bound as both past and present: GroupQueryAttention
//             writes the new rows in place, so a decode step copies no cache.
//   conv /    two fixed-size buffers per tensor, swapped after each step (input <- last output).
//   recurrent
// A snapshot is a copy of the fixed-size tensors plus the tokens: KV rows past the position are
// overwritten later, so restoring never touches the KV cache.
#pragma once
#include <cstdlib>
#include <memory>
#include <vector>

#include "manifest.h"
#include "onnxruntime_cxx_api.h"

namespace edgecpm {

struct Buffer {  // zeroed lazily (calloc): untouched KV pages cost no memory
  std::unique_ptr<float, void (*)(void*)> data{nullptr, std::free};  // float32; a float16 KV buffer: raw bits
  size_t n = 0;  // elements
  Ort::Value value{nullptr};
  Buffer(const std::vector<int64_t>& dims, const Ort::MemoryInfo& mem, bool half = false);
};

struct Snapshot {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> fixed;  // one per fixed spec, in spec order
  size_t nbytes() const;
};

class State {
 public:
  State(const std::vector<StateSpec>& specs, int64_t ctx);
  size_t pos() const { return tokens.size(); }
  bool recurrent() const { return !fixed_.empty(); }
  void bind_kv(Ort::IoBinding& io);
  void bind_fixed(Ort::IoBinding& io);
  void advance(const int64_t* ids, size_t n);
  void reset();
  bool truncate(size_t n);  // roll back to n tokens; possible without a snapshot only for pure-KV models
  Snapshot snapshot() const;
  void restore(const Snapshot& s);
  // The KV buffers [1, kv_heads, rows, head_dim], for engines whose graphs return only the new rows (NPU).
  size_t kv_count() const { return kv_.size(); }
  const StateSpec& kv_spec(size_t i) const { return *kv_[i].spec; }
  Buffer& kv_buffer(size_t i) { return *kv_[i].buf; }
  std::vector<int32_t> tokens;

 private:
  struct Fixed { const StateSpec* spec; std::unique_ptr<Buffer> buf[2]; };
  struct Kv { const StateSpec* spec; std::unique_ptr<Buffer> buf; };
  std::vector<Kv> kv_;
  std::vector<Fixed> fixed_;
  int flip_ = 0;  // which buffer holds the current fixed state
};

}  // namespace edgecpm
