// onnxruntime maps external initializers from the weights file (private mappings). MatMulNBits
// repacks its weights into its own buffers at load, reading every page of the file, and those clean
// pages then stay resident although only the embedding lookup still reads the mapping. MADV_DONTNEED
// on a mapping without private (copy-on-write) pages drops them exactly: a later read faults the same
// bytes back in from the file. The Python runtime does the same (edgecpm/runtime/memory.py).
#include "memory.h"

#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace edgecpm {

namespace {
struct Mapping {
  uintptr_t lo = 0, hi = 0;
  long private_kib = 0;
};

// Mappings of `real` (a resolved path) in /proc/self/smaps, with their private KiB.
std::vector<Mapping> file_mappings(const std::string& real) {
  std::vector<Mapping> out;
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool cur = false;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::string first;
    ss >> first;
    if (first.empty()) continue;
    if (first.back() != ':') {  // header: "lo-hi perms offset dev inode [path]"
      std::string perms, offset, dev, inode, path;
      ss >> perms >> offset >> dev >> inode >> path;
      cur = path == real;
      if (cur) {
        Mapping m;
        auto dash = first.find('-');
        m.lo = std::strtoull(first.substr(0, dash).c_str(), nullptr, 16);
        m.hi = std::strtoull(first.substr(dash + 1).c_str(), nullptr, 16);
        out.push_back(m);
      }
    } else if (cur && (first == "Anonymous:" || first == "Private_Dirty:")) {
      long kib = 0;
      ss >> kib;
      out.back().private_kib += kib;
    }
  }
  return out;
}
}  // namespace

namespace {
bool resolve(const std::string& path, std::string& real) {
  char buf[PATH_MAX];
  if (!realpath(path.c_str(), buf)) return false;
  real = buf;
  return true;
}
}  // namespace

FileRanges file_ranges(const std::string& path) {
  FileRanges out;
#if defined(__linux__)
  try {
    std::string real;
    if (!resolve(path, real)) return out;
    for (const Mapping& m : file_mappings(real)) out.emplace_back(m.lo, m.hi);
  } catch (...) {
    out.clear();
  }
#else
  (void)path;
#endif
  return out;
}

size_t release_file_pages(const std::string& path, const FileRanges& before) {
#if defined(__linux__)
  try {
    std::string real;
    if (!resolve(path, real)) return 0;
    size_t done = 0;
    for (const Mapping& m : file_mappings(real)) {
      bool old = false;  // a mapping that was there before belongs to another session: never advised
      for (const auto& r : before) old = old || (r.first == m.lo && r.second == m.hi);
      if (old || m.private_kib != 0) continue;
      if (madvise(reinterpret_cast<void*>(m.lo), m.hi - m.lo, MADV_DONTNEED) == 0) done += m.hi - m.lo;
    }
    return done;
  } catch (...) {
    return 0;
  }
#else
  (void)path;
  (void)before;
  return 0;
#endif
}

}  // namespace edgecpm
