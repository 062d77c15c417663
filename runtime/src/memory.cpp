// onnxruntime maps external initializers from the weights file (private mappings). MatMulNBits
// repacks its weights into its own buffers at load, reading every page of the file, and those clean
// pages then stay resident although only the embedding lookup still reads the mapping. MADV_DONTNEED
// on a mapping without private (copy-on-write) pages drops them exactly: a later read faults the same
// bytes back in from the file. The Python runtime does the same (edgecpm/runtime/memory.py).
#include "memory.h"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#if defined(__linux__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
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

WeightsMap::WeightsMap(const std::string& path) {
#if defined(__linux__) || defined(__APPLE__)
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  struct stat st {};
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
      data_ = static_cast<char*>(p);
      size_ = static_cast<size_t>(st.st_size);
    }
  }
  ::close(fd);
#else
  (void)path;
#endif
}

WeightsMap::~WeightsMap() {
#if defined(__linux__) || defined(__APPLE__)
  if (data_) munmap(data_, size_);
#endif
}

WeightsMap::WeightsMap(WeightsMap&& o) noexcept : data_(o.data_), size_(o.size_), fed_(o.fed_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

WeightsMap& WeightsMap::operator=(WeightsMap&& o) noexcept {
  if (this != &o) {
    this->~WeightsMap();
    data_ = o.data_;
    size_ = o.size_;
    fed_ = o.fed_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void WeightsMap::release() const {
#if defined(__linux__)
  if (data_) madvise(data_, size_, MADV_DONTNEED);
#endif
}

void WeightsMap::fed(size_t tokens) {
  fed_ += tokens;
  if (fed_ < kReleaseEvery) return;
  fed_ = 0;
  release();
}

ReleasingPages::ReleasingPages(const WeightsMap& map, int every_ms) : map_(map) {
#if defined(__linux__)
  if (map_.empty()) return;
  try {
    thread_ = std::thread([this, every_ms] {
      while (!done_.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(every_ms));
        map_.release();
      }
    });
  } catch (...) {  // no thread: the pages go back once, after the load
  }
#else
  (void)every_ms;
#endif
}

ReleasingPages::~ReleasingPages() {
  done_.store(true);
  if (thread_.joinable()) thread_.join();
  map_.release();
}

bool takes_buffers_in_place(const std::string& version) {
  int major = 0, minor = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &major, &minor) != 2) return false;
  return major > 1 || (major == 1 && minor >= 32);
}

}  // namespace edgecpm
