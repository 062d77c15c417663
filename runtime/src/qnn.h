// The QNN execution provider for NPU artifacts (mirrors qnn_provider / cache_path in
// edgecpm/runtime/npu.py). Two ways in:
//   plugin   a QNN plugin EP library (onnxruntime-qnn's libonnxruntime_providers_qnn.so on desktop):
//            RegisterExecutionProviderLibrary once, its devices from GetEpDevices, appended with
//            SessionOptionsAppendExecutionProvider_V2 {backend_path}.
//   built-in no plugin library: onnxruntime's own "QNN" EP where this onnxruntime has it (the
//            onnxruntime-android-qnn AAR), appended by name {backend_path}.
#pragma once
#include <string>
#include <vector>

#include "engine.h"
#include "onnxruntime_cxx_api.h"

namespace edgecpm {

constexpr const char* kQnnEp = "QNNExecutionProvider";

struct QnnProvider {
  std::string library;                 // plugin library; "" = the built-in EP
  std::string backend_path;            // the QNN backend (libQnnHtp.so)
  std::string version;                 // names the cache (Python: onnxruntime_qnn.__version__)
  std::vector<Ort::ConstEpDevice> devices;  // the plugin's QNN devices (empty for the built-in EP)
};

// The QNN provider the options ask for: true and *out filled, or false and *why (one line, the fix in it).
bool find_qnn(const EngineOptions& o, QnnProvider* out, std::string* why);

// Appends the QNN EP to session options.
void append_qnn(Ort::SessionOptions& so, const QnnProvider& q);

// Where a graph's compiled QNN context is cached: folder/STEM.qnn-VERSION-SHA12_ctx.onnx, the Python
// runtime's name, so either runtime reads the other's cache.
std::string qnn_cache_path(const std::string& folder, const std::string& graph_file, const std::string& sha256,
                           const std::string& version);

}  // namespace edgecpm
