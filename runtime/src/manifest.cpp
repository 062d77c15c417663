#include "manifest.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "common.h"
#include "json.h"
#include "utf8.inc"

namespace edgecpm {

bool StateSpec::per_token() const {
  for (auto d : shape) if (d < 0) return true;
  return false;
}

std::vector<int64_t> StateSpec::dims(int64_t ctx) const {
  std::vector<int64_t> out(shape);
  for (auto& d : out) if (d < 0) d = ctx;
  return out;
}

size_t StateSpec::elements(int64_t ctx) const {
  size_t n = 1;
  for (auto d : dims(ctx)) n *= static_cast<size_t>(d);
  return n;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p, long long* size) {
  struct stat st;
  if (stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (size) *size = st.st_size;
  return true;
}

namespace {
[[noreturn]] void bad(const std::string& msg) { throw Error(EDGECPM_ERR_ARTIFACT, msg); }

// SHA-256 (FIPS 180-4), for the manifest's file hashes.
struct Sha256 {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char buf[64];
  size_t fill = 0;
  uint64_t bits = 0;
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const unsigned char* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  void update(const unsigned char* p, size_t n) {
    bits += uint64_t(n) * 8;
    while (n) {
      size_t take = std::min(n, 64 - fill);
      std::copy(p, p + take, buf + fill);
      fill += take; p += take; n -= take;
      if (fill == 64) { block(buf); fill = 0; }
    }
  }
  std::string hex() {
    uint64_t total = bits;
    unsigned char pad = 0x80;
    update(&pad, 1);
    unsigned char zero = 0;
    while (fill != 56) update(&zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(total >> (56 - 8 * i));
    update(len, 8);
    char out[65];
    for (int i = 0; i < 8; ++i) snprintf(out + 8 * i, 9, "%08x", h[i]);
    return std::string(out, 64);
  }
};

// `target` ("cpu" | "npu") and `graphs` {name: {file, tokens}}: an NPU artifact has graphs, a CPU one none.
void read_target(const Json& raw, const std::string& path, Manifest* m) {
  if (raw.has("target")) m->target = raw["target"].as_str();
  if (raw.has("graphs")) {
    if (raw["graphs"].kind != Json::Object) throw std::runtime_error("'graphs' must be a JSON object");
    for (const auto& g : raw["graphs"].obj) {
      GraphSpec spec{g.second["file"].as_str(), g.second["tokens"].as_int()};
      if (spec.tokens < 1) throw std::runtime_error("graph " + g.first + " has tokens < 1");
      m->graphs[g.first] = spec;
    }
  }
  if ((m->target != "cpu" && m->target != "npu") || (m->target == "npu") == m->graphs.empty()) {
    std::string names;
    for (const auto& g : m->graphs) names += (names.empty() ? "'" : ", '") + g.first + "'";
    bad(path + " has target '" + m->target + "' with graphs [" + names + "]; re-export the artifact");
  }
}
}  // namespace

std::string sha256_file(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) bad("cannot read " + path);
  Sha256 s;
  std::vector<unsigned char> buf(1 << 20);
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) s.update(buf.data(), n);
  fclose(f);
  return s.hex();
}

Manifest load_manifest(const std::string& folder, bool verify_hashes) {
  const std::string path = folder + "/" + kManifest;
  if (!is_dir(folder)) bad("artifact folder " + folder + " does not exist; export one with `edgecpm export SOURCE -o " + folder + "`");
  if (!is_file(path)) bad(folder + " is not an edgecpm artifact (no " + kManifest + "); re-export it with `edgecpm export`");
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  Json raw;
  try {
    raw = parse_json(ss.str());
  } catch (const std::exception& e) {
    bad(path + " is not valid JSON (" + e.what() + "); re-export the artifact");
  }
  if (!raw.has("format") || raw["format"].kind != Json::String || raw["format"].str != "edgecpm")
    bad(path + " is not an edgecpm manifest; re-export the artifact");
  std::string version = raw.has("format_version") && raw["format_version"].kind == Json::Number
                            ? std::to_string(static_cast<long long>(raw["format_version"].num)) : "None";
  if (version != std::to_string(kFormatVersion))
    bad("artifact format version " + version + " is not supported by this edgecpm (it reads version " +
        std::to_string(kFormatVersion) + "); re-export it with this edgecpm's `edgecpm export`");
  Manifest m;
  try {
    m.architecture = raw["architecture"].as_str();
    m.context_length = raw["context_length"].as_int();
    m.vocab_size = raw["vocab_size"].as_int();
    m.hidden_size = raw["hidden_size"].as_int();
    for (const Json& s : raw["state"].arr) {
      StateSpec sp;
      sp.input = s["input"].as_str();
      sp.output = s["output"].as_str();
      sp.kind = s["kind"].as_str();
      sp.layer = static_cast<int>(s["layer"].as_int());
      for (const Json& d : s["shape"].arr) sp.shape.push_back(d.kind == Json::String && d.str == "ctx" ? -1 : d.as_int());
      if (s.has("dtype")) sp.dtype = s["dtype"].as_str();
      if (sp.kind != "kv" && sp.kind != "conv" && sp.kind != "recurrent")
        bad("state " + sp.input + " has kind '" + sp.kind + "'; this edgecpm runs ('kv', 'conv', 'recurrent')");
      if (sp.dtype != "float32" && !(sp.kind == "kv" && sp.dtype == "float16"))
        bad("state " + sp.input + " has dtype " + sp.dtype + "; this edgecpm runs float32 states (float16 for kv)");
      m.state.push_back(sp);
    }
    const Json& t = raw["tokenizer"];
    if (t.has("bos_token_id") && !t["bos_token_id"].is_null()) m.bos_token_id = t["bos_token_id"].as_int();
    if (t.has("eos_token_ids")) for (const Json& e : t["eos_token_ids"].arr) m.eos_token_ids.push_back(e.as_int());
    if (t.has("add_bos_token")) m.add_bos_token = t["add_bos_token"].kind == Json::Bool && t["add_bos_token"].b;
    if (raw.has("chat_template") && raw["chat_template"].kind == Json::String && !raw["chat_template"].str.empty()) {
      m.chat_template = raw["chat_template"].str;
      m.has_chat_template = true;
    }
    if (raw.has("operators")) for (const Json& o : raw["operators"].arr) m.operators.push_back(o.as_str());
    read_target(raw, path, &m);
    if (raw.has("files"))
      for (const auto& kv : raw["files"].obj) m.files[kv.first] = {kv.second["bytes"].as_int(), kv.second["sha256"].as_str()};
    for (const auto& f : m.files) {
      std::string p = folder + "/" + f.first;
      long long size = 0;
      if (!is_file(p, &size)) bad("artifact file " + p + " is missing; re-export the artifact");
      if (size != f.second.bytes)
        bad("artifact file " + p + " has the wrong size (corrupted or truncated); re-export the artifact");
      if (verify_hashes && sha256_file(p) != f.second.sha256)
        bad("artifact file " + p + " fails its sha256 check (corrupted); re-export the artifact");
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    bad(path + " does not follow format version 1 (" + e.what() + "); re-export the artifact");
  }
  return m;
}

}  // namespace edgecpm
