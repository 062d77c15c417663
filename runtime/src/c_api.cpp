// The C boundary: every entry point catches everything and turns it into a status + last error.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "chat.h"
#include "common.h"
#include "edgecpm.h"
#include "engine.h"
#include "generate.h"
#include "tokenizer.h"

struct edgecpm_model {
  std::unique_ptr<edgecpm::Engine> engine;  // CpuEngine or NpuEngine, by the manifest's target
  std::unique_ptr<edgecpm::Tokenizer> tokenizer;
  edgecpm::GenResult last;
};

struct edgecpm_chat {
  edgecpm_model* model;
  std::unique_ptr<edgecpm::ChatSession> session;
};

struct edgecpm_snapshot {
  edgecpm::Snapshot snap;
};

namespace {
thread_local std::string g_error;

template <typename F>
edgecpm_status guard(F&& f) {
  try {
    f();
    return EDGECPM_OK;
  } catch (const edgecpm::Error& e) {
    g_error = e.what();
    return e.status;
  } catch (const Ort::Exception& e) {
    g_error = std::string("onnxruntime: ") + e.what();
    return EDGECPM_ERR_RUNTIME;
  } catch (const std::bad_alloc&) {
    g_error = "out of memory";
    return EDGECPM_ERR_INTERNAL;
  } catch (const std::exception& e) {
    g_error = e.what();
    return EDGECPM_ERR_INTERNAL;
  } catch (...) {
    g_error = "unknown error";
    return EDGECPM_ERR_INTERNAL;
  }
}

void need(bool ok, const char* what) {
  if (!ok) throw edgecpm::Error(EDGECPM_ERR_INVALID_ARGUMENT, what);
}

char* dup_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = 0;
  return p;
}

int32_t* dup_ids(const std::vector<int32_t>& v) {
  int32_t* p = static_cast<int32_t*>(std::malloc((v.size() ? v.size() : 1) * sizeof(int32_t)));
  if (!p) throw std::bad_alloc();
  if (!v.empty()) std::memcpy(p, v.data(), v.size() * sizeof(int32_t));
  return p;
}

// Copy the fields of a caller's struct that it knows (struct_size), over our defaults.
template <typename T>
T read_struct(const T* in, void (*defaults)(T*)) {
  T out;
  defaults(&out);
  if (in) {
    need(in->struct_size >= sizeof(uint32_t) * 2, "struct_size is not set (use the *_default() function)");
    std::memcpy(&out, in, std::min<size_t>(in->struct_size, sizeof(T)));
    out.struct_size = sizeof(T);
  }
  return out;
}

edgecpm::GenParams gen_params(const edgecpm_gen_params* in) {
  edgecpm_gen_params p = read_struct(in, edgecpm_gen_params_default);
  need(p.temp >= 0 && p.top_p > 0 && p.top_p <= 1 && p.top_k >= 0 && p.min_p >= 0 && p.min_p <= 1 &&
       p.repetition_penalty > 0 && p.prefill_chunk >= 0, "a sampling parameter is out of range");
  need(p.n_stop == 0 || p.stop, "stop is NULL but n_stop > 0");
  edgecpm::GenParams g;
  g.max_tokens = p.max_tokens;
  g.sampler.temp = p.temp;
  g.sampler.top_p = p.top_p;
  g.sampler.top_k = p.top_k;
  g.sampler.min_p = p.min_p;
  g.sampler.seed = p.seed;
  g.repetition_penalty = p.repetition_penalty;
  g.prefill_chunk = p.prefill_chunk > 0 ? p.prefill_chunk : 512;
  for (size_t i = 0; i < p.n_stop; ++i) {
    need(p.stop[i] != nullptr, "a stop string is NULL");
    g.stop.emplace_back(p.stop[i]);
  }
  return g;
}

edgecpm::PieceFn piece_fn(edgecpm_stream_fn fn, void* user) {
  if (!fn) return {};
  return [fn, user](const std::string& piece, int32_t token) { return fn(piece.data(), piece.size(), token, user) != 0; };
}

std::vector<std::string> split_providers(const char* s) {
  std::vector<std::string> out;
  if (!s) return out;
  std::string cur;
  for (const char* c = s;; ++c) {
    if (*c == ',' || *c == 0) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
      if (!*c) break;
    } else if (*c != ' ') {
      cur += *c;
    }
  }
  return out;
}
}  // namespace

extern "C" {

const char* edgecpm_version(void) { return EDGECPM_VERSION; }
int edgecpm_api_version(void) { return EDGECPM_API_VERSION; }
const char* edgecpm_last_error(void) { return g_error.c_str(); }
void edgecpm_free(void* p) { std::free(p); }

void edgecpm_open_options_default(edgecpm_open_options* o) {
  if (!o) return;
  std::memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
}

void edgecpm_gen_params_default(edgecpm_gen_params* p) {
  if (!p) return;
  std::memset(p, 0, sizeof *p);
  p->struct_size = sizeof *p;
  p->max_tokens = 256;
  p->temp = 0.0;
  p->top_p = 1.0;
  p->top_k = 0;
  p->min_p = 0.0;
  p->repetition_penalty = 1.0;
  p->seed = -1;
  p->prefill_chunk = 512;
}

edgecpm_status edgecpm_open(const char* artifact_dir, const edgecpm_open_options* options, edgecpm_model** out) {
  if (out) *out = nullptr;
  return guard([&] {
    need(artifact_dir && out, "artifact_dir and out must not be NULL");
    edgecpm_open_options o = read_struct(options, edgecpm_open_options_default);
    need(o.threads >= 0 && o.context >= 0, "threads and context must be >= 0");
    edgecpm::EngineOptions eo;
    eo.threads = o.threads;
    eo.context = o.context;
    eo.providers = split_providers(o.providers);
    eo.recurrent_kernel = o.recurrent_kernel ? o.recurrent_kernel : "auto";
    eo.ops_library = o.ops_library ? o.ops_library : "";
    eo.verify_hashes = o.verify_hashes != 0;
    eo.report_placement = o.report_placement != 0;
    eo.qnn_library = o.qnn_library ? o.qnn_library : "";
    eo.qnn_backend_path = o.qnn_backend_path ? o.qnn_backend_path : "";
    eo.strict = o.strict != 0;
    if (o.log) eo.log = [fn = o.log, user = o.log_user](const std::string& line) { fn(line.c_str(), user); };
    auto m = std::make_unique<edgecpm_model>();
    m->engine = edgecpm::open_engine(artifact_dir, eo);
    m->tokenizer = std::make_unique<edgecpm::Tokenizer>(artifact_dir, m->engine->manifest);
    *out = m.release();
  });
}

void edgecpm_close(edgecpm_model* model) { delete model; }

edgecpm_status edgecpm_model_info(const edgecpm_model* model, char** placement, int32_t* context, int32_t* vocab_size) {
  return guard([&] {
    need(model, "model is NULL");
    if (placement) *placement = dup_string(model->engine->placement + (model->engine->kernel.empty() ? "" :
                                           "recurrent kernel " + model->engine->kernel + "\n"));
    if (context) *context = static_cast<int32_t>(model->engine->ctx);
    if (vocab_size) *vocab_size = static_cast<int32_t>(model->engine->vocab());
  });
}

edgecpm_status edgecpm_tokenize(edgecpm_model* model, const char* text, int add_bos, int32_t** ids, size_t* n_ids) {
  return guard([&] {
    need(model && text && ids && n_ids, "model, text, ids and n_ids must not be NULL");
    auto v = model->tokenizer->encode(text, add_bos);
    *ids = dup_ids(v);
    *n_ids = v.size();
  });
}

edgecpm_status edgecpm_detokenize(edgecpm_model* model, const int32_t* ids, size_t n_ids, char** text) {
  return guard([&] {
    need(model && text && (ids || !n_ids), "model, ids and text must not be NULL");
    std::vector<int32_t> v(ids, ids + n_ids);
    for (auto id : v) need(id >= 0 && id < model->engine->vocab(), "a token id is outside the vocabulary");
    *text = dup_string(model->tokenizer->decode(v));
  });
}

edgecpm_status edgecpm_apply_chat_template(edgecpm_model* model, const char* const* roles, const char* const* contents,
                                           size_t n, int add_generation_prompt, char** text) {
  return guard([&] {
    need(model && text && (n == 0 || (roles && contents)), "model, roles, contents and text must not be NULL");
    std::vector<std::pair<std::string, std::string>> msgs;
    for (size_t i = 0; i < n; ++i) {
      need(roles[i] && contents[i], "a role or content is NULL");
      msgs.emplace_back(roles[i], contents[i]);
    }
    *text = dup_string(model->tokenizer->apply_chat_template(msgs, add_generation_prompt != 0));
  });
}

static void finish(edgecpm_model* model, edgecpm::GenResult&& r, char** text_out) {
  if (text_out) *text_out = dup_string(r.text);
  model->last = std::move(r);
}

edgecpm_status edgecpm_generate(edgecpm_model* model, const char* prompt, const edgecpm_gen_params* params,
                                edgecpm_stream_fn fn, void* user, char** text_out) {
  if (text_out) *text_out = nullptr;
  return guard([&] {
    need(model && prompt, "model and prompt must not be NULL");
    auto g = gen_params(params);
    auto ids = model->tokenizer->encode(prompt);
    need(!ids.empty(), "the prompt is empty");
    model->engine->reset();
    finish(model, edgecpm::stream_tokens(*model->engine, *model->tokenizer, ids, g, piece_fn(fn, user)), text_out);
  });
}

edgecpm_status edgecpm_generate_tokens(edgecpm_model* model, const int32_t* ids, size_t n_ids,
                                       const edgecpm_gen_params* params, edgecpm_stream_fn fn, void* user, char** text_out) {
  if (text_out) *text_out = nullptr;
  return guard([&] {
    need(model && ids && n_ids > 0, "model and at least one token id are needed");
    auto g = gen_params(params);
    std::vector<int32_t> v(ids, ids + n_ids);
    finish(model, edgecpm::stream_tokens(*model->engine, *model->tokenizer, v, g, piece_fn(fn, user)), text_out);
  });
}

edgecpm_status edgecpm_last_tokens(edgecpm_model* model, int32_t** ids, size_t* n_ids) {
  return guard([&] {
    need(model && ids && n_ids, "model, ids and n_ids must not be NULL");
    *ids = dup_ids(model->last.tokens);
    *n_ids = model->last.tokens.size();
  });
}

edgecpm_status edgecpm_get_stats(const edgecpm_model* model, edgecpm_stats* stats) {
  return guard([&] {
    need(model && stats && stats->struct_size >= sizeof(uint32_t) * 2, "model and stats (with struct_size) are needed");
    edgecpm_stats s;
    std::memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    const auto& r = model->last;
    s.prompt_tokens = r.prompt_tokens;
    s.generated_tokens = r.generated_tokens;
    s.prefill_tps = r.prompt_tps;
    s.decode_tps = r.generation_tps;
    s.position = static_cast<int32_t>(model->engine->state.pos());
    s.finish_reason = r.finish;
    uint32_t size = std::min<uint32_t>(stats->struct_size, sizeof s);
    std::memcpy(stats, &s, size);
    stats->struct_size = size;
  });
}

edgecpm_status edgecpm_reset(edgecpm_model* model) {
  return guard([&] {
    need(model, "model is NULL");
    model->engine->reset();
  });
}

edgecpm_status edgecpm_feed(edgecpm_model* model, const int32_t* ids, size_t n_ids, int32_t prefill_chunk, float* logits_out) {
  return guard([&] {
    need(model && ids && n_ids > 0, "model and at least one token id are needed");
    std::vector<int32_t> v(ids, ids + n_ids);
    const float* l = model->engine->prefill(v, prefill_chunk);
    if (logits_out) std::memcpy(logits_out, l, sizeof(float) * model->engine->vocab());
  });
}

edgecpm_status edgecpm_snapshot_take(edgecpm_model* model, edgecpm_snapshot** out) {
  if (out) *out = nullptr;
  return guard([&] {
    need(model && out, "model and out must not be NULL");
    auto s = std::make_unique<edgecpm_snapshot>();
    s->snap = model->engine->state.snapshot();
    *out = s.release();
  });
}

edgecpm_status edgecpm_snapshot_restore(edgecpm_model* model, const edgecpm_snapshot* snap) {
  return guard([&] {
    need(model && snap, "model and snap must not be NULL");
    model->engine->state.restore(snap->snap);
  });
}

void edgecpm_snapshot_free(edgecpm_snapshot* snap) { delete snap; }

edgecpm_status edgecpm_chat_create(edgecpm_model* model, const char* system, edgecpm_chat** out) {
  if (out) *out = nullptr;
  return guard([&] {
    need(model && out, "model and out must not be NULL");
    std::string sys = system ? system : "";
    if (!edgecpm::valid_utf8(sys)) throw edgecpm::Error(EDGECPM_ERR_INVALID_UTF8, "the system message is not valid UTF-8");
    if (!model->engine->manifest.has_chat_template)
      throw edgecpm::Error(EDGECPM_ERR_NO_CHAT_TEMPLATE, "this artifact has no chat template; use generate for raw text");
    auto c = std::make_unique<edgecpm_chat>();
    c->model = model;
    c->session = std::make_unique<edgecpm::ChatSession>(*model->engine, *model->tokenizer, sys);
    *out = c.release();
  });
}

edgecpm_status edgecpm_chat_send(edgecpm_chat* chat, const char* content, const edgecpm_gen_params* params,
                                 edgecpm_stream_fn fn, void* user, char** reply) {
  if (reply) *reply = nullptr;
  return guard([&] {
    need(chat && content, "chat and content must not be NULL");
    auto g = gen_params(params);
    finish(chat->model, chat->session->send(content, g, piece_fn(fn, user)), reply);
  });
}

edgecpm_status edgecpm_chat_add(edgecpm_chat* chat, const char* role, const char* content) {
  return guard([&] {
    need(chat && role && content, "chat, role and content must not be NULL");
    if (!edgecpm::valid_utf8(role) || !edgecpm::valid_utf8(content))
      throw edgecpm::Error(EDGECPM_ERR_INVALID_UTF8, "the message is not valid UTF-8");
    chat->session->messages.emplace_back(role, content);
  });
}

int32_t edgecpm_chat_last_prefill(const edgecpm_chat* chat) { return chat ? chat->session->last_prefill : -1; }

edgecpm_status edgecpm_chat_reset(edgecpm_chat* chat) {
  return guard([&] {
    need(chat, "chat is NULL");
    chat->session->reset();
  });
}

void edgecpm_chat_destroy(edgecpm_chat* chat) { delete chat; }

}  // extern "C"
