#include "qnn.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <mutex>

#include "manifest.h"

namespace edgecpm {

namespace {
std::mutex g_qnn_mu;
std::string g_registered;  // the plugin library registered with the environment ("" = none yet)

std::string env_or(const std::string& value, const char* name) {
  const char* e = std::getenv(name);
  return !value.empty() ? value : (e ? e : "");
}

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// The onnxruntime-qnn wheel's version from build_and_package_info.py beside its library ("" if none).
std::string wheel_version(const std::string& library) {
  std::ifstream in(dir_of(library) + "/build_and_package_info.py");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("__version__", 0) != 0) continue;
    auto a = line.find_first_of("'\""), b = line.find_last_of("'\"");
    if (a != std::string::npos && b > a) return line.substr(a + 1, b - a - 1);
  }
  return "";
}

// Registers the plugin once per process; "" on success, else why not.
std::string register_plugin(const std::string& library) {
  std::lock_guard<std::mutex> lock(g_qnn_mu);
  if (g_registered == library) return "";
  if (!g_registered.empty()) return "another QNN plugin (" + g_registered + ") is already registered";
  try {
    ort_env().RegisterExecutionProviderLibrary(kQnnEp, library);
  } catch (const Ort::Exception& e) {
    return "the QNN plugin " + library + " could not be registered (" + first_line(e.what()) + ")";
  }
  g_registered = library;
  return "";
}

bool find_plugin(const std::string& library, QnnProvider* out, std::string* why) {
  if (!is_file(library)) {
    *why = "the QNN plugin library " + library + " does not exist";
    return false;
  }
  if (!(*why = register_plugin(library)).empty()) return false;
  for (const auto& d : ort_env().GetEpDevices())
    if (std::string(d.EpName()) == kQnnEp) out->devices.push_back(d);
  if (out->devices.empty()) {
    *why = "the QNN plugin found no QNN device";
    return false;
  }
  out->library = library;
  out->version = wheel_version(library);
  if (out->version.empty()) {
    const char* v = out->devices[0].EpMetadata().GetValue("version");
    out->version = v ? v : "unknown";
  }
  return true;
}
}  // namespace

bool find_qnn(const EngineOptions& o, QnnProvider* out, std::string* why) {
  const std::string library = env_or(o.qnn_library, "EDGECPM_QNN_LIBRARY");
  out->backend_path = env_or(o.qnn_backend_path, "EDGECPM_QNN_BACKEND");
  if (!library.empty()) {
    if (out->backend_path.empty()) out->backend_path = dir_of(library) + "/libQnnHtp.so";
    return find_plugin(library, out, why);
  }
  auto built_in = Ort::GetAvailableProviders();
  if (std::find(built_in.begin(), built_in.end(), kQnnEp) == built_in.end()) {
    *why = "this onnxruntime has no QNN execution provider (give the onnxruntime-qnn plugin library: "
           "--qnn-library / qnn_library / $EDGECPM_QNN_LIBRARY)";
    return false;
  }
  if (out->backend_path.empty()) out->backend_path = "libQnnHtp.so";
  out->version = Ort::GetVersionString();
  return true;
}

void append_qnn(Ort::SessionOptions& so, const QnnProvider& q) {
  if (q.devices.empty())
    so.AppendExecutionProvider("QNN", {{"backend_path", q.backend_path}});
  else
    so.AppendExecutionProvider_V2(ort_env(), q.devices, {{"backend_path", q.backend_path}});
}

std::string qnn_cache_path(const std::string& folder, const std::string& graph_file, const std::string& sha256,
                           const std::string& version) {
  std::string stem = graph_file.substr(graph_file.rfind('/') + 1);
  stem = stem.substr(0, stem.rfind('.'));
  return folder + "/" + stem + ".qnn-" + version + "-" + sha256.substr(0, 12) + "_ctx.onnx";
}

}  // namespace edgecpm
