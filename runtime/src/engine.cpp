#include "engine.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common.h"
#include "memory.h"
#include "npu_engine.h"

namespace edgecpm {

namespace {
std::once_flag g_once;
std::string g_init_error;
Ort::Env* g_env = nullptr;

// onnxruntime's log, routed here: only node-placement lines are kept (while a session that reports is made).
std::mutex g_log_mu;
std::string* g_capture = nullptr;
void ORT_API_CALL log_sink(void*, OrtLoggingLevel severity, const char*, const char*, const char*, const char* message) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  if (g_capture && (std::strstr(message, "placed on [") || std::strstr(message, "Validation PASSED for") ||
                    std::strstr(message, "Validation FAILED for"))) {
    *g_capture += message;
    *g_capture += '\n';
  }
}
}  // namespace

void init_ort() {
  std::call_once(g_once, [] {
    const OrtApiBase* base = OrtGetApiBase();
    const OrtApi* api = base ? base->GetApi(ORT_API_VERSION) : nullptr;
    if (!api) {
      g_init_error = std::string("onnxruntime ") + (base ? base->GetVersionString() : "?") +
                     " is too old: edgecpm is built against API version " + std::to_string(ORT_API_VERSION) +
                     " (onnxruntime >= 1." + std::to_string(ORT_API_VERSION) + "); install a newer onnxruntime";
      return;
    }
    Ort::InitApi(api);
    try {
      g_env = new Ort::Env(ORT_LOGGING_LEVEL_WARNING, "edgecpm", log_sink, nullptr);
    } catch (const std::exception& e) {
      g_init_error = std::string("onnxruntime could not start: ") + e.what();
    }
  });
  if (!g_init_error.empty()) throw Error(EDGECPM_ERR_RUNTIME, g_init_error);
}

Ort::Env& ort_env() {
  init_ort();
  return *g_env;
}

namespace {
std::string provider_name(const std::string& s) {
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(), ::tolower);
  if (l == "cpu") return "CPUExecutionProvider";
  if (l == "xnnpack") return "XNNPACK";
  if (l == "nnapi") return "NNAPI";
  if (l == "coreml") return "CoreML";
  if (l == "qnn") return "QNN";
  return s;
}

std::string library_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&library_dir), &info) && info.dli_fname) {
    std::string p = info.dli_fname;
    auto slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
  }
  return ".";
}

int64_t cpu_context(const Manifest& m, int context) {
  const int64_t want = context > 0 ? context : std::min<int64_t>(m.context_length, kDefaultContext);
  return std::min<int64_t>(want, m.context_length);
}
}  // namespace

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

void capture_log(std::string* into) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_capture = into;
}

// "... placed on [CPUExecutionProvider]. Number of nodes: 612" -> "CPUExecutionProvider 612"
std::string placement_lines(const std::string& captured) {
  std::string out;
  for (size_t at = captured.find("placed on ["); at != std::string::npos; at = captured.find("placed on [", at + 1)) {
    size_t name = at + 11, close = captured.find(']', name);
    size_t num = captured.find("Number of nodes: ", close);
    size_t eol = captured.find('\n', name);
    if (close == std::string::npos || num == std::string::npos || num > eol) continue;
    num += 17;
    size_t end = num;
    while (end < captured.size() && isdigit(static_cast<unsigned char>(captured[end]))) ++end;
    out += captured.substr(name, close - name) + " " + captured.substr(num, end - num) + "\n";
  }
  return out;
}

std::unique_ptr<Engine> open_engine(const std::string& folder, const EngineOptions& o) {
  init_ort();
  Manifest m = load_manifest(folder, o.verify_hashes);
  if (m.target == "npu") return std::make_unique<NpuEngine>(folder, m, o);
  return std::make_unique<CpuEngine>(folder, m, o);
}

Engine::Engine(const std::string& folder_, const Manifest& m, int64_t ctx_, int64_t rows)
    : folder(folder_), manifest(m), ctx(ctx_), state(manifest.state, rows) {}

void Engine::check_tokens(const int64_t* ids, size_t n) const {
  const size_t total = state.pos() + n;
  if (n == 0) throw Error(EDGECPM_ERR_INVALID_ARGUMENT, "a step needs at least one token");
  if (static_cast<int64_t>(total) > ctx)
    throw Error(EDGECPM_ERR_CONTEXT_OVERFLOW, std::to_string(total) + " tokens exceed the context of " +
                std::to_string(ctx) + "; start a new chat (reset) or open with a larger context");
  for (size_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= manifest.vocab_size)
      throw Error(EDGECPM_ERR_INVALID_ARGUMENT, "token id " + std::to_string(ids[i]) + " is outside the vocabulary");
}

void Engine::check_prompt(size_t n) const {
  if (n == 0) throw Error(EDGECPM_ERR_INVALID_ARGUMENT, "prefill needs at least one token");
  if (static_cast<int64_t>(state.pos() + n) > ctx)
    throw Error(EDGECPM_ERR_CONTEXT_OVERFLOW, "the prompt (" + std::to_string(state.pos() + n) +
                " tokens) exceeds the context of " + std::to_string(ctx) + "; shorten it or open with a larger context");
}

void Engine::notice(const EngineOptions& o, const std::string& line) {
  placement += line + "\n";
  if (o.log) o.log(line);
}

CpuEngine::CpuEngine(const std::string& folder_, const Manifest& m, const EngineOptions& o)
    : Engine(folder_, m, cpu_context(m, o.context), cpu_context(m, o.context)) {
  mem_ = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  const std::string weights = folder + "/" + kWeightsFile;
  if (takes_buffers_in_place(Ort::GetVersionString())) weights_ = WeightsMap(weights);
  if (!weights_.empty()) {  // our mapping, used in place: its pages go back while the load runs
    ReleasingPages releasing(weights_);
    session_ = open(o);
  } else {
    const FileRanges before = file_ranges(weights);  // other sessions': never advised
    session_ = open(o);
    release_file_pages(weights, before);  // repacked at load: the file's pages go back
  }
  io_ = Ort::IoBinding(session_);
  logits_.assign(static_cast<size_t>(manifest.vocab_size), 0.f);
  int64_t shape[3] = {1, 1, manifest.vocab_size};
  logits_value_ = Ort::Value::CreateTensor<float>(mem_, logits_.data(), logits_.size(), shape, 3);
  io_.BindOutput(kLogits, logits_value_);
  state.bind_kv(io_);
}

Ort::Session CpuEngine::open(const EngineOptions& o) {
  const std::string path = folder + "/" + kModelFile;
  auto make_options = [&](bool cpu_only, std::string* notes) {
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (o.threads > 0) so.SetIntraOpNumThreads(o.threads);
    so.SetInterOpNumThreads(1);
    so.SetLogSeverityLevel(o.report_placement ? 0 : 3);
    if (o.report_placement) so.AddConfigEntry("session.log_verbosity_level", "1");
#if !defined(_WIN32)
    if (!weights_.empty()) {
      so.AddExternalInitializersFromFilesInMemory({kWeightsFile}, {weights_.data()}, {weights_.size()});
      so.AddConfigEntry("session.use_external_initializer_file_buffers_directly", "1");
    }
#endif
    if (!manifest.operators.empty()) {
      std::string lib = o.ops_library;
      const char* env = std::getenv("EDGECPM_NATIVE_OPS");
      if (lib.empty() && env) lib = env;
      if (lib.empty() && o.recurrent_kernel != "function") {
        std::string beside = library_dir() + "/libedgecpm_ops.so";
        if (is_file(beside)) lib = beside;
      }
      if (o.recurrent_kernel == "native" || (o.recurrent_kernel == "auto" && !lib.empty())) {
        if (lib.empty() || !is_file(lib))
          throw Error(EDGECPM_ERR_INVALID_ARGUMENT, "recurrent kernel native needs EDGECPM_NATIVE_OPS (or the ops_library "
                                                    "option) set to libedgecpm_ops.so; build runtime/ or use auto");
        so.RegisterCustomOpsLibrary(lib.c_str());
        kernel = "native";
      } else if (o.recurrent_kernel == "function" || o.recurrent_kernel == "auto") {
        kernel = "function";
      } else {
        throw Error(EDGECPM_ERR_INVALID_ARGUMENT, "recurrent kernel '" + o.recurrent_kernel +
                    "' is not available in the native runtime; use auto, native or function");
      }
    }
    if (!cpu_only) {
      for (const auto& p : o.providers) {
        std::string name = provider_name(p);
        if (name == "CPUExecutionProvider") continue;
        try {
          so.AppendExecutionProvider(name, {});
        } catch (const std::exception& e) {
          if (o.strict)
            throw Error(EDGECPM_ERR_RUNTIME, "execution provider " + p + " is not available in this onnxruntime (" +
                        first_line(e.what()) + "; strict: no CPU fallback)");
          *notes += "execution provider " + p + " is not available in this onnxruntime (" + first_line(e.what()) +
                    "); falling back to CPU\n";
        }
      }
    }
    return so;
  };
  std::string notes, captured;
  bool only_cpu = true;
  for (const auto& p : o.providers) only_cpu &= provider_name(p) == "CPUExecutionProvider";
  auto create = [&](bool cpu_only) {
    Ort::SessionOptions so = make_options(cpu_only, &notes);
    if (o.strict && !cpu_only) so.AddConfigEntry("session.disable_cpu_ep_fallback", "1");
    if (o.report_placement) capture_log(&captured);
    try {
      Ort::Session s(ort_env(), path.c_str(), so);
      capture_log(nullptr);
      return s;
    } catch (...) {
      capture_log(nullptr);
      throw;
    }
  };
  Ort::Session s{nullptr};
  try {
    try {
      s = create(only_cpu);
    } catch (const Ort::Exception& e) {
      if (only_cpu || o.strict) throw;
      notes += "the requested providers refused the model (" + first_line(e.what()) + "); falling back to CPU\n";
      s = create(true);
    }
  } catch (const Ort::Exception& e) {
    throw Error(EDGECPM_ERR_RUNTIME, "onnxruntime cannot load " + path + ": " + first_line(e.what()));
  }
  placement += placement_lines(captured);
  for (size_t at = 0, eol; (eol = notes.find('\n', at)) != std::string::npos; at = eol + 1)
    notice(o, notes.substr(at, eol - at));
  return s;
}

const float* CpuEngine::step(const int64_t* ids, size_t n) {
  check_tokens(ids, n);
  const size_t total = state.pos() + n;
  ids_.assign(ids, ids + n);
  seqlens_ = static_cast<int32_t>(total - 1);
  total_ = static_cast<int32_t>(total);
  last_index_ = static_cast<int64_t>(n - 1);
  int64_t ids_shape[2] = {1, static_cast<int64_t>(n)};
  int64_t one = 1;
  Ort::Value v_ids = Ort::Value::CreateTensor<int64_t>(mem_, ids_.data(), n, ids_shape, 2);
  Ort::Value v_seq = Ort::Value::CreateTensor<int32_t>(mem_, &seqlens_, 1, &one, 1);
  Ort::Value v_tot = Ort::Value::CreateTensor<int32_t>(mem_, &total_, 1, nullptr, 0);
  Ort::Value v_idx = Ort::Value::CreateTensor<int64_t>(mem_, &last_index_, 1, &one, 1);
  try {
    io_.BindInput(kInputIds, v_ids);
    io_.BindInput(kSeqlensK, v_seq);
    io_.BindInput(kTotalSeqLen, v_tot);
    io_.BindInput(kLogitsIndices, v_idx);
    state.bind_fixed(io_);
    if (n >= WeightsMap::kReleaseEvery) {
      ReleasingPages releasing(weights_);
      session_.Run(Ort::RunOptions{nullptr}, io_);
    } else {
      session_.Run(Ort::RunOptions{nullptr}, io_);
    }
  } catch (const Ort::Exception& e) {
    throw Error(EDGECPM_ERR_RUNTIME, std::string("onnxruntime failed a step: ") + first_line(e.what()));
  }
  weights_.fed(n);
  state.advance(ids, n);
  return logits_.data();
}

const float* CpuEngine::prefill(const std::vector<int32_t>& tokens, int chunk) {
  check_prompt(tokens.size());
  if (chunk <= 0) chunk = 512;
  const float* logits = nullptr;
  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  for (size_t i = 0; i < ids.size(); i += chunk) logits = step(ids.data() + i, std::min<size_t>(chunk, ids.size() - i));
  return logits;
}

}  // namespace edgecpm
