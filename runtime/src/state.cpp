#include "state.h"

#include <cstring>

#include "common.h"

namespace edgecpm {

Buffer::Buffer(const std::vector<int64_t>& dims, const Ort::MemoryInfo& mem, bool half) {
  n = 1;
  for (auto d : dims) n *= static_cast<size_t>(d);
  const size_t elem = half ? 2 : sizeof(float);
  data.reset(static_cast<float*>(std::calloc(n ? n : 1, elem)));
  if (!data) throw Error(EDGECPM_ERR_INTERNAL, "out of memory allocating a state buffer of " + std::to_string(n * elem) + " bytes");
  auto type = half ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  value = Ort::Value::CreateTensor(mem, data.get(), n * elem, dims.data(), dims.size(), type);
}

size_t Snapshot::nbytes() const {
  size_t b = 0;
  for (auto& f : fixed) b += f.size() * sizeof(float);
  return b;
}

State::State(const std::vector<StateSpec>& specs, int64_t ctx) {
  auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  for (const auto& s : specs) {
    if (s.kind == "kv") {
      kv_.push_back({&s, std::make_unique<Buffer>(s.dims(ctx), mem, s.dtype == "float16")});
    } else {
      Fixed f{&s, {std::make_unique<Buffer>(s.dims(ctx), mem), std::make_unique<Buffer>(s.dims(ctx), mem)}};
      fixed_.push_back(std::move(f));
    }
  }
}

void State::bind_kv(Ort::IoBinding& io) {
  for (auto& k : kv_) {
    io.BindInput(k.spec->input.c_str(), k.buf->value);
    io.BindOutput(k.spec->output.c_str(), k.buf->value);
  }
}

void State::bind_fixed(Ort::IoBinding& io) {
  for (auto& f : fixed_) {
    io.BindInput(f.spec->input.c_str(), f.buf[flip_]->value);
    io.BindOutput(f.spec->output.c_str(), f.buf[1 - flip_]->value);
  }
}

void State::advance(const int64_t* ids, size_t n) {
  for (size_t i = 0; i < n; ++i) tokens.push_back(static_cast<int32_t>(ids[i]));
  if (!fixed_.empty()) flip_ = 1 - flip_;
}

void State::reset() {
  tokens.clear();
  for (auto& f : fixed_) std::memset(f.buf[flip_]->data.get(), 0, f.buf[flip_]->n * sizeof(float));
}

bool State::truncate(size_t n) {
  if (n == pos()) return true;
  if (n == 0) { reset(); return true; }
  if (!fixed_.empty()) return false;
  tokens.resize(n);
  return true;
}

Snapshot State::snapshot() const {
  Snapshot s;
  s.tokens = tokens;
  for (auto& f : fixed_) {
    const float* p = f.buf[flip_]->data.get();
    s.fixed.emplace_back(p, p + f.buf[flip_]->n);
  }
  return s;
}

void State::restore(const Snapshot& s) {
  if (s.fixed.size() != fixed_.size()) throw Error(EDGECPM_ERR_INVALID_ARGUMENT, "the snapshot is of another model");
  for (size_t i = 0; i < fixed_.size(); ++i) {
    auto& b = fixed_[i].buf[flip_];
    if (s.fixed[i].size() != b->n) throw Error(EDGECPM_ERR_INVALID_ARGUMENT, "the snapshot is of another model");
    std::memcpy(b->data.get(), s.fixed[i].data(), b->n * sizeof(float));
  }
  tokens = s.tokens;
}

}  // namespace edgecpm
