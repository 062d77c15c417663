#include "tokenizer.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common.h"
#include "json.h"

#ifndef EDGECPM_DEFAULT_ORTX
#define EDGECPM_DEFAULT_ORTX ""
#endif
#ifndef EDGECPM_DEFAULT_LIBPYTHON
#define EDGECPM_DEFAULT_LIBPYTHON ""
#endif

namespace edgecpm {

namespace {
struct Ortx {
  std::string error, path;
  OrtxCreateTokenizerWithOptions_t create = nullptr;
  OrtxTokenize_t tokenize = nullptr;
  OrtxTokenId2DArrayGetItem_t get_ids = nullptr;
  OrtxDetokenize1D_t detokenize = nullptr;
  OrtxStringArrayGetItem_t get_string = nullptr;
  OrtxApplyChatTemplate_t chat = nullptr;
  OrtxTensorResultGetAt_t result_at = nullptr;
  OrtxGetTensorData_t tensor_data = nullptr;
  OrtxDispose_t dispose = nullptr;
  OrtxGetLastErrorMessage_t last_error = nullptr;
};

void* open_ortx(const std::string& path, std::string* why) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h) return h;
  std::string err = dlerror();
  if (err.find("undefined symbol: Py") != std::string::npos) {
    // The PyPI wheel's library is a Python extension: its Py* symbols come from libpython (no interpreter is started).
    const char* env = std::getenv("EDGECPM_LIBPYTHON");
    std::string py = env && *env ? env : EDGECPM_DEFAULT_LIBPYTHON;
    if (!py.empty() && dlopen(py.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h) return h;
      err = dlerror();
    } else {
      err += " (and libpython '" + py + "' could not be loaded; set EDGECPM_LIBPYTHON)";
    }
  }
  *why += "\n  " + path + ": " + err;
  return nullptr;
}

const Ortx& ortx() {
  static Ortx o;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    const char* env = std::getenv("EDGECPM_ORTX_LIBRARY");
    if (env && *env) candidates.push_back(env);
    if (*EDGECPM_DEFAULT_ORTX) candidates.push_back(EDGECPM_DEFAULT_ORTX);
    candidates.push_back("libortextensions.so");
    std::string why;
    void* h = nullptr;
    for (const auto& c : candidates) {
      if ((h = open_ortx(c, &why))) { o.path = c; break; }
    }
    if (!h) {
      o.error = "the tokenizer library (onnxruntime-extensions) could not be loaded; install it "
                "(pip install onnxruntime-extensions) or set EDGECPM_ORTX_LIBRARY:" + why;
      return;
    }
#define EDGECPM_SYM(field, name)                                                  \
  o.field = reinterpret_cast<decltype(o.field)>(dlsym(h, name));                  \
  if (!o.field) { o.error = std::string(o.path) + " has no " name; return; }
    EDGECPM_SYM(create, "OrtxCreateTokenizerWithOptions")
    EDGECPM_SYM(tokenize, "OrtxTokenize")
    EDGECPM_SYM(get_ids, "OrtxTokenId2DArrayGetItem")
    EDGECPM_SYM(detokenize, "OrtxDetokenize1D")
    EDGECPM_SYM(get_string, "OrtxStringArrayGetItem")
    EDGECPM_SYM(chat, "OrtxApplyChatTemplate")
    EDGECPM_SYM(result_at, "OrtxTensorResultGetAt")
    EDGECPM_SYM(tensor_data, "OrtxGetTensorData")
    EDGECPM_SYM(dispose, "OrtxDispose")
    EDGECPM_SYM(last_error, "OrtxGetLastErrorMessage")
#undef EDGECPM_SYM
  });
  if (!o.error.empty()) throw Error(EDGECPM_ERR_TOKENIZER, o.error);
  return o;
}

template <typename T>
struct Owned {  // disposes an ortx object
  T* p = nullptr;
  ~Owned() { if (p) { OrtxObject* o = reinterpret_cast<OrtxObject*>(p); ortx().dispose(&o); } }
};

void check(extError_t e, const char* what) {
  if (e != 0) {
    const char* m = ortx().last_error();
    throw Error(EDGECPM_ERR_TOKENIZER, std::string(what) + " failed: " + (m ? m : "unknown error"));
  }
}
}  // namespace

Tokenizer::Tokenizer(const std::string& folder, const Manifest& m) : manifest(m) {
  const Ortx& x = ortx();
  if (!is_file(folder + "/tokenizer.json") && !is_file(folder + "/tokenizer.model"))
    throw Error(EDGECPM_ERR_ARTIFACT, folder + " has no tokenizer.json or tokenizer.model; re-export the artifact");
  // Special tokens: none added by the tokenizer (BOS follows the manifest), none skipped when decoding.
  const char* keys[] = {"add_special_tokens", "skip_special_tokens"};
  const char* values[] = {"false", "false"};
  check(x.create(&tok_, folder.c_str(), keys, values, 2), "loading the tokenizer");
}

Tokenizer::~Tokenizer() {
  if (tok_) {
    OrtxObject* o = tok_;
    ortx().dispose(&o);
  }
}

bool Tokenizer::is_eos(int32_t id) const {
  for (auto e : manifest.eos_token_ids) if (e == id) return true;
  return false;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, int add_bos) const {
  if (!valid_utf8(text)) throw Error(EDGECPM_ERR_INVALID_UTF8, "the text is not valid UTF-8");
  const Ortx& x = ortx();
  std::vector<int32_t> ids;
  bool bos = add_bos < 0 ? manifest.add_bos_token : add_bos > 0;
  if (bos && manifest.bos_token_id >= 0) ids.push_back(static_cast<int32_t>(manifest.bos_token_id));
  if (text.empty()) return ids;
  const char* inputs[] = {text.c_str()};
  Owned<OrtxTokenId2DArray> out;
  check(x.tokenize(tok_, inputs, 1, &out.p), "tokenizing");
  const extTokenId_t* items = nullptr;
  size_t n = 0;
  check(x.get_ids(out.p, 0, &items, &n), "reading token ids");
  for (size_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>(items[i]));
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, size_t begin, size_t end) const {
  if (end > ids.size()) end = ids.size();
  if (begin >= end) return "";
  const Ortx& x = ortx();
  std::vector<extTokenId_t> in(ids.begin() + begin, ids.begin() + end);
  Owned<OrtxStringArray> out;
  check(x.detokenize(tok_, in.data(), in.size(), &out.p), "detokenizing");
  const char* s = nullptr;
  check(x.get_string(out.p, 0, &s), "reading detokenized text");
  return s ? s : "";
}

std::string Tokenizer::apply_chat_template(const std::vector<std::pair<std::string, std::string>>& messages,
                                           bool add_generation_prompt) const {
  if (!manifest.has_chat_template)
    throw Error(EDGECPM_ERR_NO_CHAT_TEMPLATE, "this artifact has no chat template; use generate for raw text");
  std::string json = "[";
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!valid_utf8(messages[i].first) || !valid_utf8(messages[i].second))
      throw Error(EDGECPM_ERR_INVALID_UTF8, "a chat message is not valid UTF-8");
    json += (i ? "," : "") + std::string("{\"role\":") + json_quote(messages[i].first) +
            ",\"content\":" + json_quote(messages[i].second) + "}";
  }
  json += "]";
  const Ortx& x = ortx();
  Owned<OrtxTensorResult> result;
  check(x.chat(tok_, manifest.chat_template.c_str(), json.c_str(), "", &result.p, add_generation_prompt, false),
        "applying the chat template");
  Owned<OrtxTensor> t;  // a view object of the result's tensor, disposed on its own
  check(x.result_at(result.p, 0, &t.p), "reading the chat text");
  const void* data = nullptr;
  check(x.tensor_data(t.p, &data, nullptr, nullptr), "reading the chat text");
  return data ? static_cast<const char*>(data) : "";
}

std::vector<int32_t> Tokenizer::encode_chat(const std::vector<std::pair<std::string, std::string>>& messages) const {
  return encode(apply_chat_template(messages, true), 0);  // BOS comes from the template
}

// Same algorithm as the Python StreamingDetokenizer: decode only the tokens since the last emitted
// boundary; emit when the text grew and does not end in a partial character.
std::string StreamingDetokenizer::add(int32_t token) {
  tokens_.push_back(token);
  std::string prev = tok_.decode(tokens_, prefix_, read_);
  std::string cur = tok_.decode(tokens_, prefix_);
  bool partial = incomplete_utf8_tail(cur) > 0 ||
                 (cur.size() >= 3 && cur.compare(cur.size() - 3, 3, "\xEF\xBF\xBD") == 0);
  if (utf8_length(cur) > utf8_length(prev) && !partial) {
    std::string delta = cur.substr(utf8_offset(cur, utf8_length(prev)));
    prefix_ = read_;
    read_ = tokens_.size();
    return sanitize_utf8(delta);
  }
  return "";
}

std::string StreamingDetokenizer::flush() {
  std::string cur = tok_.decode(tokens_, prefix_);
  std::string prev = tok_.decode(tokens_, prefix_, read_);
  prefix_ = read_ = tokens_.size();
  return sanitize_utf8(cur.substr(utf8_offset(cur, utf8_length(prev))));
}

}  // namespace edgecpm
