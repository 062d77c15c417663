// edgecpm-run: the native command line over the C API (edgecpm.h).
//   edgecpm-run ARTIFACT -p PROMPT [-m N] [--temp T] [--top-p P] [--top-k K] [--min-p P]
//               [--repetition-penalty R] [--seed S] [--stop S]... [--chat] [--system S] [--context N]
//               [--threads N] [--provider NAME]... [--recurrent-kernel K] [--prefill-chunk N] [--verify] [--json] [--bench]
//               [--qnn-library PATH] [--qnn-backend PATH] [--strict] [--placement]
// Prints the generated text as it streams (--json: one JSON object with text, tokens and stats instead).
// Notices from the open (a provider fallback) go to stderr, one line each; --placement also prints where
// the nodes went (and an NPU artifact's context cache) there. --json adds load_ms and load_peak_rss_mb
// (the open's time, and the process's peak RSS when it returned).
// --bench: prefill (128, 512 tokens) and decode (64 tokens) tok/s, medians of 3, and peak RSS.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edgecpm.h"

namespace {
int usage(const char* msg) {
  std::fprintf(stderr, "edgecpm-run: %s\nusage: edgecpm-run ARTIFACT -p PROMPT [-m N] [--temp T] [--top-p P] [--top-k K] "
               "[--min-p P] [--repetition-penalty R] [--seed S] [--stop S] [--chat] [--system S] [--context N] "
               "[--threads N] [--provider NAME] [--recurrent-kernel K] [--prefill-chunk N] [--verify] [--json] [--bench] "
               "[--qnn-library PATH] [--qnn-backend PATH] [--strict] [--placement]\n", msg);
  return 2;
}

int fail(edgecpm_status st) {
  std::fprintf(stderr, "error: %s\n", edgecpm_last_error());
  return st == EDGECPM_ERR_INTERNAL || st == EDGECPM_ERR_RUNTIME ? 1 : 2;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out += b; }
    else out += char(c);
  }
  return out + "\"";
}

int print_piece(const char* piece, size_t len, int32_t, void*) {
  std::fwrite(piece, 1, len, stdout);
  std::fflush(stdout);
  return 0;
}

void print_notice(const char* line, void* logged) {
  std::fprintf(stderr, "%s\n", line);
  static_cast<std::string*>(logged)->append(line).append("\n");
}

// The placement lines the notices did not already print.
void print_placement(edgecpm_model* m, const std::string& logged) {
  char* lines = nullptr;
  if (edgecpm_model_info(m, &lines, nullptr, nullptr) != EDGECPM_OK) return;
  for (const char* line = lines; *line;) {
    const char* end = std::strchr(line, '\n');
    std::string l(line, end ? end - line : std::strlen(line));
    if (logged.find(l + "\n") == std::string::npos) std::fprintf(stderr, "%s\n", l.c_str());
    line = end ? end + 1 : line + l.size();
  }
  edgecpm_free(lines);
}

double seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int bench(edgecpm_model* m, int chunk, bool json) {
  int32_t vocab = 0, ctx = 0;
  char* placement = nullptr;
  edgecpm_status st = edgecpm_model_info(m, &placement, &ctx, &vocab);
  if (st) return fail(st);
  std::mt19937 rng(0);
  auto tokens = [&](int n) {
    std::vector<int32_t> t(n);
    for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
    return t;
  };
  const int runs = 3, decode = 64;
  const int lengths[] = {128, 512};
  edgecpm_reset(m);
  auto warm = tokens(16);
  if ((st = edgecpm_feed(m, warm.data(), warm.size(), chunk, nullptr))) return fail(st);
  double tps[2] = {0, 0}, ttft = 0;
  for (int li = 0; li < 2; ++li) {
    if (lengths[li] > ctx) continue;  // a model with a shorter context: that length is not measured
    std::vector<double> times;
    for (int r = 0; r < runs; ++r) {
      edgecpm_reset(m);
      auto t = tokens(lengths[li]);
      double t0 = seconds();
      if ((st = edgecpm_feed(m, t.data(), t.size(), chunk, nullptr))) return fail(st);
      times.push_back(seconds() - t0);
    }
    tps[li] = lengths[li] / median(times);
    if (li == 0) ttft = median(times) * 1e3;
  }
  std::vector<double> rates;
  for (int r = 0; r < runs; ++r) {
    edgecpm_reset(m);
    auto t = tokens(1);
    if ((st = edgecpm_feed(m, t.data(), 1, chunk, nullptr))) return fail(st);
    int32_t tok = static_cast<int32_t>(rng() % vocab);
    double t0 = seconds();
    for (int i = 0; i < decode; ++i)
      if ((st = edgecpm_feed(m, &tok, 1, chunk, nullptr))) return fail(st);
    rates.push_back(decode / (seconds() - t0));
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double rss_mb = ru.ru_maxrss / 1024.0;
  if (json) {
    std::printf("{\"prefill_128_tps\": %.2f, \"prefill_512_tps\": %.2f, \"decode_64_tps\": %.2f, \"ttft_ms\": %.1f, "
                "\"decode_tps_spread\": [%.2f, %.2f], \"peak_rss_mb\": %.1f, \"context\": %d}\n",
                tps[0], tps[1], median(rates), ttft, *std::min_element(rates.begin(), rates.end()),
                *std::max_element(rates.begin(), rates.end()), rss_mb, ctx);
  } else {
    std::printf("edgecpm-run bench (median of %d, context %d)\n", runs, ctx);
    for (int li = 0; li < 2; ++li)
      if (tps[li] > 0) std::printf("  prefill %d tok/s   %.1f\n", lengths[li], tps[li]);
      else std::printf("  prefill %d tok/s   - (longer than the context)\n", lengths[li]);
    std::printf("  decode 64 tok/s     %.1f\n  time to first token %.0f ms\n  peak RSS            %.0f MB\n%s",
                median(rates), ttft, rss_mb, placement ? placement : "");
  }
  edgecpm_free(placement);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  const char* artifact = nullptr;
  std::string prompt, system, providers, kernel = "auto";
  bool have_prompt = false, chat = false, json = false, do_bench = false, have_system = false, placement = false;
  std::vector<std::string> stops;
  edgecpm_gen_params gp;
  edgecpm_gen_params_default(&gp);
  edgecpm_open_options oo;
  edgecpm_open_options_default(&oo);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    auto num = [&](double* out) {
      const char* v = next();
      if (!v) return false;
      char* end = nullptr;
      *out = std::strtod(v, &end);
      return end && *end == 0;
    };
    double d = 0;
    if (a == "-p" || a == "--prompt") { const char* v = next(); if (!v) return usage("-p needs a value"); prompt = v; have_prompt = true; }
    else if (a == "-m" || a == "--max-tokens") { if (!num(&d)) return usage("-m needs a number"); gp.max_tokens = static_cast<int32_t>(d); }
    else if (a == "--temp") { if (!num(&gp.temp)) return usage("--temp needs a number"); }
    else if (a == "--top-p") { if (!num(&gp.top_p)) return usage("--top-p needs a number"); }
    else if (a == "--top-k") { if (!num(&d)) return usage("--top-k needs a number"); gp.top_k = static_cast<int32_t>(d); }
    else if (a == "--min-p") { if (!num(&gp.min_p)) return usage("--min-p needs a number"); }
    else if (a == "--repetition-penalty") { if (!num(&gp.repetition_penalty)) return usage("--repetition-penalty needs a number"); }
    else if (a == "--seed") { if (!num(&d)) return usage("--seed needs a number"); gp.seed = static_cast<int64_t>(d); }
    else if (a == "--prefill-chunk") { if (!num(&d)) return usage("--prefill-chunk needs a number"); gp.prefill_chunk = static_cast<int32_t>(d); }
    else if (a == "--context") { if (!num(&d)) return usage("--context needs a number"); oo.context = static_cast<int32_t>(d); }
    else if (a == "--threads") { if (!num(&d)) return usage("--threads needs a number"); oo.threads = static_cast<int32_t>(d); }
    else if (a == "--provider") { const char* v = next(); if (!v) return usage("--provider needs a name"); providers += std::string(providers.empty() ? "" : ",") + v; }
    else if (a == "--recurrent-kernel") { const char* v = next(); if (!v) return usage("--recurrent-kernel needs a name"); kernel = v; }
    else if (a == "--qnn-library") { const char* v = next(); if (!v) return usage("--qnn-library needs a path"); oo.qnn_library = v; }
    else if (a == "--qnn-backend") { const char* v = next(); if (!v) return usage("--qnn-backend needs a path"); oo.qnn_backend_path = v; }
    else if (a == "--strict") oo.strict = 1;
    else if (a == "--placement") placement = true;
    else if (a == "--stop") { const char* v = next(); if (!v) return usage("--stop needs a string"); stops.push_back(v); }
    else if (a == "--system") { const char* v = next(); if (!v) return usage("--system needs a string"); system = v; have_system = true; }
    else if (a == "--chat") chat = true;
    else if (a == "--verify") oo.verify_hashes = 1;
    else if (a == "--json") json = true;
    else if (a == "--bench") do_bench = true;
    else if (a == "--version") { std::printf("edgecpm-run %s (API %d)\n", edgecpm_version(), edgecpm_api_version()); return 0; }
    else if (a == "-h" || a == "--help") { usage("help"); return 0; }
    else if (!a.empty() && a[0] == '-') return usage(("unknown option " + a).c_str());
    else if (!artifact) artifact = argv[i];
    else return usage("one artifact only");
  }
  if (!artifact) return usage("ARTIFACT is required");
  if (!have_prompt && !do_bench) return usage("-p PROMPT is required");
  std::vector<const char*> stop_ptrs;
  for (auto& s : stops) stop_ptrs.push_back(s.c_str());
  gp.stop = stop_ptrs.data();
  gp.n_stop = stop_ptrs.size();
  oo.providers = providers.empty() ? nullptr : providers.c_str();
  oo.recurrent_kernel = kernel.c_str();
  oo.report_placement = do_bench || placement ? 1 : 0;
  std::string logged;
  oo.log = print_notice;  // say when a requested execution provider was not used (the Python CLI does too)
  oo.log_user = &logged;
  edgecpm_model* m = nullptr;
  const double t_open = seconds();
  edgecpm_status st = edgecpm_open(artifact, &oo, &m);
  if (st) return fail(st);
  const double load_ms = (seconds() - t_open) * 1e3;
  struct rusage ru_load;
  getrusage(RUSAGE_SELF, &ru_load);
  if (placement) print_placement(m, logged);
  int rc = 0;
  if (do_bench) {
    rc = bench(m, gp.prefill_chunk, json);
  } else {
    char* text = nullptr;
    if (chat) {
      edgecpm_chat* c = nullptr;
      st = edgecpm_chat_create(m, have_system ? system.c_str() : nullptr, &c);
      if (!st) st = edgecpm_chat_send(c, prompt.c_str(), &gp, json ? nullptr : print_piece, nullptr, &text);
      edgecpm_chat_destroy(c);
    } else {
      st = edgecpm_generate(m, prompt.c_str(), &gp, json ? nullptr : print_piece, nullptr, &text);
    }
    if (st) {
      rc = fail(st);
    } else if (json) {
      int32_t* ids = nullptr;
      size_t n = 0;
      edgecpm_last_tokens(m, &ids, &n);
      edgecpm_stats s;
      s.struct_size = sizeof s;
      edgecpm_get_stats(m, &s);
      static const char* reasons[] = {"none", "stop", "length", "callback"};
      std::string toks;
      for (size_t i = 0; i < n; ++i) toks += (i ? ", " : "") + std::to_string(ids[i]);
      std::printf("{\"text\": %s, \"tokens\": [%s], \"finish_reason\": \"%s\", \"prompt_tokens\": %d, "
                  "\"generated_tokens\": %d, \"prefill_tps\": %.2f, \"decode_tps\": %.2f, \"load_ms\": %.1f, "
                  "\"load_peak_rss_mb\": %.1f}\n",
                  quote(text).c_str(), toks.c_str(), reasons[s.finish_reason & 3], s.prompt_tokens, s.generated_tokens,
                  s.prefill_tps, s.decode_tps, load_ms, ru_load.ru_maxrss / 1024.0);
      edgecpm_free(ids);
    } else {
      std::printf("\n");
    }
    edgecpm_free(text);
  }
  edgecpm_close(m);
  return rc;
}
