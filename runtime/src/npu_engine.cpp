#include "npu_engine.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "common.h"

namespace edgecpm {

namespace {
int64_t npu_context(const Manifest& m, int context) {
  return std::min<int64_t>(context > 0 ? context : m.context_length, m.context_length);
}

bool wants_qnn(const std::vector<std::string>& providers) {
  for (std::string p : providers) {
    std::transform(p.begin(), p.end(), p.begin(), ::tolower);
    if (p == "qnn" || p == "qnnexecutionprovider") return true;
  }
  return false;
}

// Sum of N over "<word> for N nodes" lines of the captured log.
long count_nodes(const std::string& captured, const std::string& word) {
  long n = 0;
  const std::string key = word + " for ";
  for (size_t at = captured.find(key); at != std::string::npos; at = captured.find(key, at + 1))
    n += std::strtol(captured.c_str() + at + key.size(), nullptr, 10);
  return n;
}

// "QNNExecutionProvider 1, QNN graph nodes 790" (Python's placed_nodes): QNN runs its part as one fused
// node; the graph-node counts are the ONNX nodes it took or refused (absent when a cache is read).
std::string placement_summary(const std::string& captured) {
  std::string out, lines = placement_lines(captured);
  for (size_t at = 0, eol; (eol = lines.find('\n', at)) != std::string::npos; at = eol + 1)
    out += (out.empty() ? "" : ", ") + lines.substr(at, eol - at);
  if (long n = count_nodes(captured, "Validation PASSED")) out += ", QNN graph nodes " + std::to_string(n);
  if (long n = count_nodes(captured, "Validation FAILED")) out += ", QNN refused " + std::to_string(n);
  return out;
}

void check_npu_manifest(const Manifest& m) {
  auto d = m.graphs.find("decode");
  if (d == m.graphs.end() || d->second.tokens != 1)
    throw Error(EDGECPM_ERR_ARTIFACT, "NPU artifact without a decode graph of 1 token; re-export it with --target npu");
  for (const auto& s : m.state) {
    if (s.dtype != "float32")
      throw Error(EDGECPM_ERR_ARTIFACT, "state " + s.input + " of an NPU artifact has dtype " + s.dtype +
                  "; NPU graphs take float32 states: re-export it with --target npu");
    if (s.kind == "kv" && s.shape.size() != 4)
      throw Error(EDGECPM_ERR_ARTIFACT, "KV state " + s.input + " is not [1, kv_heads, ctx, head_dim]; re-export it");
  }
}
}  // namespace

NpuEngine::NpuEngine(const std::string& folder_, const Manifest& m, const EngineOptions& o)
    : Engine(folder_, m, npu_context(m, o.context), m.context_length), rows_(m.context_length) {
  check_npu_manifest(manifest);
  mem_ = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  run_options_.SetRunLogSeverityLevel(3);
  logits_.assign(static_cast<size_t>(manifest.vocab_size), 0.f);
  int64_t shape[3] = {1, 1, manifest.vocab_size};
  logits_value_ = Ort::Value::CreateTensor<float>(mem_, logits_.data(), logits_.size(), shape, 3);
  for (size_t i = 0; i < state.kv_count(); ++i)
    kv_heads_.push_back(state.kv_spec(i).shape[0] * state.kv_spec(i).shape[1]);  // [1, kv_heads, ctx, head_dim]
  QnnProvider qnn;
  std::string why;
  const bool have = wants_qnn(o.providers) && find_qnn(o, &qnn, &why);
  if (!why.empty() && o.strict) throw Error(EDGECPM_ERR_RUNTIME, why + " (strict: no CPU fallback)");
  if (!why.empty()) notice(o, "note: " + why + "; running the NPU graphs on the CPU");
  const std::string notes = placement;
  try {
    decode_ = open_graph("decode", o, have ? &qnn : nullptr);
    if (manifest.graphs.count("prefill")) prefill_ = open_graph("prefill", o, have ? &qnn : nullptr);
  } catch (const Error& e) {
    if (!have || o.strict) throw;
    placement = notes;  // no QNN placement line for a graph that will run on the CPU
    notice(o, std::string("note: ") + first_line(e.what()) + "; running the NPU graphs on the CPU");
    decode_ = open_graph("decode", o, nullptr);
    if (manifest.graphs.count("prefill")) prefill_ = open_graph("prefill", o, nullptr);
  }
}

Ort::SessionOptions NpuEngine::options(const EngineOptions& o, const QnnProvider* qnn, const std::string& compile_to,
                                       bool verbose) const {
  Ort::SessionOptions so;
  if (o.threads > 0) so.SetIntraOpNumThreads(o.threads);
  so.SetLogSeverityLevel(verbose ? 0 : 3);
  if (verbose) so.AddConfigEntry("session.log_verbosity_level", "1");
  if (!qnn) return so;  // the CPU session itself: no fallback to forbid
  if (o.strict) so.AddConfigEntry("session.disable_cpu_ep_fallback", "1");
  if (!compile_to.empty()) {  // write the compiled context there (the cache a later open reads)
    so.AddConfigEntry("ep.context_enable", "1");
    so.AddConfigEntry("ep.context_file_path", compile_to.c_str());
    so.AddConfigEntry("ep.context_embed_mode", "1");
  }
  append_qnn(so, *qnn);
  return so;
}

std::unique_ptr<NpuEngine::Graph> NpuEngine::open_graph(const std::string& name, const EngineOptions& o,
                                                        const QnnProvider* qnn) {
  const GraphSpec& spec = manifest.graphs.at(name);
  const std::string path = folder + "/" + spec.file;
  auto g = std::make_unique<Graph>();
  g->T = spec.tokens;
  if (qnn) {
    g->session = qnn_session(name, spec.file, o, *qnn);
  } else {
    try {
      g->session = Ort::Session(ort_env(), path.c_str(), options(o, nullptr, "", false));
    } catch (const Ort::Exception& e) {
      throw Error(EDGECPM_ERR_RUNTIME, "onnxruntime cannot load " + path + ": " + first_line(e.what()));
    }
  }
  bind(*g);
  return g;
}

// From the cached context binary when there is one, else compiled (and cached when the folder is
// writable). With report_placement a first, verbose session reads the placement; the one kept is made
// quietly afterwards (from the cache it just wrote), as the Python runtime does.
Ort::Session NpuEngine::qnn_session(const std::string& name, const std::string& file, const EngineOptions& o,
                                    const QnnProvider& qnn) {
  const std::string path = folder + "/" + file;
  auto listed = manifest.files.find(file);
  const std::string sha = listed != manifest.files.end() ? listed->second.sha256 : sha256_file(path);
  const std::string cache = qnn_cache_path(folder, file, sha, qnn.version);
  const bool hit = is_file(cache);
  std::string compile_to = hit || access(folder.c_str(), W_OK) != 0 ? "" : cache;
  std::string source = hit ? cache : path, placed;
  try {
    if (o.report_placement) {
      std::string captured;
      capture_log(&captured);
      try {
        Ort::Session verbose(ort_env(), source.c_str(), options(o, &qnn, compile_to, true));
      } catch (...) {
        capture_log(nullptr);
        throw;
      }
      capture_log(nullptr);
      placed = placement_summary(captured) + "; ";
      source = is_file(cache) ? cache : path;
      compile_to.clear();
    }
    Ort::Session s(ort_env(), source.c_str(), options(o, &qnn, compile_to, false));
    const bool cached = is_file(cache);
    placement += name + ": " + placed + "context " + (hit ? "read from " + cache
                                                          : cached ? "cached in " + cache : "not cached (folder not writable)");
    placement += "\n";
    return s;
  } catch (const Ort::Exception& e) {
    throw Error(EDGECPM_ERR_RUNTIME, "QNN cannot load " + path + (o.strict ? " with every node on QNN (strict)" : "") +
                ": " + first_line(e.what()));
  }
}

void NpuEngine::bind(Graph& g) {
  const int64_t T = g.T, cols = rows_ + T;
  g.ids.assign(T, 0);
  g.positions.assign(T, 0);
  g.mask.assign(static_cast<size_t>(T * cols), kMaskValue);  // [1, 1, T, rows + T]: nothing attended yet
  for (int64_t t = 0; t < T; ++t)
    std::fill_n(g.mask.data() + t * cols + rows_, t + 1, 0.f);  // causal within the step
  g.mask_pos = 0;
  g.io = Ort::IoBinding(g.session);
  g.values.reserve(3 + state.kv_count());
  g.new_rows.reserve(state.kv_count());
  int64_t tok_shape[2] = {1, T}, mask_shape[4] = {1, 1, T, cols};
  g.values.push_back(Ort::Value::CreateTensor<int64_t>(mem_, g.ids.data(), T, tok_shape, 2));
  g.io.BindInput(kInputIds, g.values.back());
  g.values.push_back(Ort::Value::CreateTensor<int64_t>(mem_, g.positions.data(), T, tok_shape, 2));
  g.io.BindInput(kPositionIds, g.values.back());
  g.values.push_back(Ort::Value::CreateTensor<float>(mem_, g.mask.data(), g.mask.size(), mask_shape, 4));
  g.io.BindInput(kAttentionMask, g.values.back());
  g.io.BindOutput(kLogits, logits_value_);
  for (size_t i = 0; i < state.kv_count(); ++i) {
    const StateSpec& s = state.kv_spec(i);
    std::vector<int64_t> rows = s.dims(rows_);
    rows[2] = T;  // [1, kv_heads, T, head_dim]: the step's new rows
    g.new_rows.emplace_back(s.elements(rows_) / rows_ * T, 0.f);
    g.values.push_back(Ort::Value::CreateTensor<float>(mem_, g.new_rows.back().data(), g.new_rows.back().size(),
                                                       rows.data(), rows.size()));
    g.io.BindInput(s.input.c_str(), state.kv_buffer(i).value);  // the whole buffer; the mask hides the rest
    g.io.BindOutput(s.output.c_str(), g.values.back());
  }
}

// Columns [0, pos) of the buffer part attended, [pos, rows) not: only the columns between the mask's
// last position and this one change.
void NpuEngine::set_mask(Graph& g, int64_t pos) const {
  const int64_t cols = rows_ + g.T, lo = std::min(pos, g.mask_pos), hi = std::max(pos, g.mask_pos);
  const float v = pos > g.mask_pos ? 0.f : kMaskValue;
  for (int64_t t = 0; t < g.T; ++t) std::fill(g.mask.data() + t * cols + lo, g.mask.data() + t * cols + hi, v);
  g.mask_pos = pos;
}

const float* NpuEngine::run(Graph& g, const int64_t* ids) {
  const int64_t pos = static_cast<int64_t>(state.pos()), T = g.T;
  for (int64_t t = 0; t < T; ++t) {
    g.ids[t] = ids[t];
    g.positions[t] = pos + t;
  }
  set_mask(g, pos);
  try {
    state.bind_fixed(g.io);
    g.session.Run(run_options_, g.io);
  } catch (const Ort::Exception& e) {
    throw Error(EDGECPM_ERR_RUNTIME, std::string("onnxruntime failed a step: ") + first_line(e.what()));
  }
  for (size_t i = 0; i < state.kv_count(); ++i) {  // new rows [1, H, T, hd] -> buffer [1, H, rows, hd] at pos
    const int64_t heads = kv_heads_[i], hd = static_cast<int64_t>(g.new_rows[i].size()) / (heads * T);
    float* buf = state.kv_buffer(i).data.get();
    const float* rows = g.new_rows[i].data();
    for (int64_t h = 0; h < heads; ++h)
      std::memcpy(buf + (h * rows_ + pos) * hd, rows + h * T * hd, sizeof(float) * T * hd);
  }
  state.advance(ids, T);
  return logits_.data();
}

// Whole prefill chunks through the prefill graph, everything else one token at a time through decode.
const float* NpuEngine::step(const int64_t* ids, size_t n) {
  check_tokens(ids, n);
  const float* logits = nullptr;
  for (size_t i = 0; i < n;) {
    Graph& g = prefill_ && static_cast<int64_t>(n - i) >= prefill_->T ? *prefill_ : *decode_;
    logits = run(g, ids + i);
    i += g.T;
  }
  return logits;
}

const float* NpuEngine::prefill(const std::vector<int32_t>& tokens, int) {
  check_prompt(tokens.size());
  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  return step(ids.data(), ids.size());
}

}  // namespace edgecpm
