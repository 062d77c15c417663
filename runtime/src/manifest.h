// The artifact contract (docs/artifact.md, edgecpm/contract.py), read without Python.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace edgecpm {

constexpr int kFormatVersion = 1;
constexpr const char* kManifest = "edgecpm.json";
constexpr const char* kModelFile = "model.onnx";
constexpr const char* kWeightsFile = "model.onnx.data";
// Graph I/O names
constexpr const char* kInputIds = "input_ids";                // [1, S] int64
constexpr const char* kSeqlensK = "seqlens_k";                // [1] int32: tokens after this step - 1
constexpr const char* kTotalSeqLen = "total_sequence_length";  // [] int32: tokens after this step
constexpr const char* kLogitsIndices = "logits_indices";      // [n] int64
constexpr const char* kLogits = "logits";                     // [1, n, vocab] float32
// NPU graphs (target "npu"): static T tokens per step
constexpr const char* kPositionIds = "position_ids";          // [1, T] int64: pos .. pos + T - 1
constexpr const char* kAttentionMask = "attention_mask";      // [1, 1, T, ctx + T] float32, additive
constexpr float kMaskValue = -100.f;                          // "not attended" in attention_mask

struct StateSpec {
  std::string input, output, kind;  // kind: kv | conv | recurrent
  int layer = 0;
  std::vector<int64_t> shape;       // -1 where the manifest says "ctx"
  std::string dtype = "float32";
  bool per_token() const;
  std::vector<int64_t> dims(int64_t ctx) const;
  size_t elements(int64_t ctx) const;
};

struct GraphSpec {  // one static graph of an NPU artifact
  std::string file;
  int64_t tokens = 0;  // T: tokens per step
};

struct FileEntry {
  long long bytes = 0;
  std::string sha256;
};

struct Manifest {
  std::string architecture;
  int64_t context_length = 0, vocab_size = 0, hidden_size = 0;
  std::vector<StateSpec> state;
  int64_t bos_token_id = -1;            // -1 = none
  std::vector<int64_t> eos_token_ids;
  bool add_bos_token = false;
  std::string chat_template;            // empty = none
  bool has_chat_template = false;
  std::vector<std::string> operators;   // ai.edgecpm ops the graph uses
  std::string target = "cpu";           // "cpu": model.onnx; "npu": the static graphs below
  std::map<std::string, GraphSpec> graphs;  // "decode" (T = 1), "prefill" (T = chunk)
  std::map<std::string, FileEntry> files;   // every file the manifest lists
};

// Reads and checks folder/edgecpm.json and the files it lists (size; sha256 when verify_hashes).
// Throws Error(EDGECPM_ERR_ARTIFACT, one-line reason with the fix).
Manifest load_manifest(const std::string& folder, bool verify_hashes);

std::string sha256_file(const std::string& path);
bool is_dir(const std::string& p);
bool is_file(const std::string& p, long long* size = nullptr);

}  // namespace edgecpm
