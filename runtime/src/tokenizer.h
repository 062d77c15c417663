// Tokenizer, chat template and streaming detokenizer over onnxruntime-extensions' C API
// (mirrors edgecpm/runtime/tokenizer.py). The library is found at run time:
//   $EDGECPM_ORTX_LIBRARY, else the build's default (Linux: the onnxruntime-extensions wheel's library,
//   which needs libpython: it is dlopen'ed first, $EDGECPM_LIBPYTHON or the build's), else libortextensions.so
//   (Android: the onnxruntime-extensions-android AAR).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "manifest.h"
#include "ortx_api.h"

namespace edgecpm {

class Tokenizer {
 public:
  Tokenizer(const std::string& folder, const Manifest& m);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  std::vector<int32_t> encode(const std::string& text, int add_bos = -1) const;  // -1: the artifact's rule
  std::string decode(const std::vector<int32_t>& ids, size_t begin = 0, size_t end = size_t(-1)) const;
  std::string apply_chat_template(const std::vector<std::pair<std::string, std::string>>& messages,
                                  bool add_generation_prompt) const;
  std::vector<int32_t> encode_chat(const std::vector<std::pair<std::string, std::string>>& messages) const;
  bool is_eos(int32_t id) const;
  const Manifest& manifest;

 private:
  OrtxTokenizer* tok_ = nullptr;
};

// Turns tokens into text deltas; never emits a split UTF-8 character (held until complete).
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& t) : tok_(t) {}
  std::string add(int32_t token);
  std::string flush();
 private:
  const Tokenizer& tok_;
  std::vector<int32_t> tokens_;
  size_t prefix_ = 0, read_ = 0;
};

}  // namespace edgecpm
