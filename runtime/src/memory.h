// The weights file's pages: given back once onnxruntime has repacked the weights, or while it does.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace edgecpm {

using FileRanges = std::vector<std::pair<uintptr_t, uintptr_t>>;  // [start, end) of mappings

// This process's mappings of the file `path` now (empty off Linux or without /proc). Never throws.
FileRanges file_ranges(const std::string& path);

// Drops this process's resident clean pages of the file `path` (MADV_DONTNEED on each of its
// mappings that holds no private pages and is not in `before`); returns the bytes of mappings
// advised. Linux/Android only; elsewhere, or when /proc is not readable, it does nothing and
// returns 0. Never throws. `before` = file_ranges() taken before the session that owns the new
// mappings was made: mappings of older sessions may be unmapped by another thread at any moment and
// their range reused by the heap, which MADV_DONTNEED would zero.
size_t release_file_pages(const std::string& path, const FileRanges& before);

// The weights file mapped read-only by the runtime, for onnxruntime to use in place (onnxruntime >=
// 1.32 with session.use_external_initializer_file_buffers_directly; older ones copy in-memory data,
// so the engine maps nothing there). The mapping is ours and outlives the session, so its pages can
// go back while the session loads. Never throws; empty when the file cannot be mapped.
class WeightsMap {
 public:
  WeightsMap() = default;
  explicit WeightsMap(const std::string& path);
  ~WeightsMap();
  WeightsMap(WeightsMap&& o) noexcept;
  WeightsMap& operator=(WeightsMap&& o) noexcept;
  WeightsMap(const WeightsMap&) = delete;
  WeightsMap& operator=(const WeightsMap&) = delete;

  bool empty() const { return data_ == nullptr; }
  char* data() const { return data_; }
  size_t size() const { return size_; }
  // MADV_DONTNEED on the whole mapping (reads fault the bytes back from the file). Linux only.
  void release() const;
  // Counts tokens a step fed and releases every kReleaseEvery: an embedding lookup maps a whole
  // page-cache folio (up to 2 MB), so a chat's resident set would grow towards the whole table.
  void fed(size_t tokens);
  static constexpr size_t kReleaseEvery = 32;  // as edgecpm/runtime/memory.py RELEASE_EVERY

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
  size_t fed_ = 0;
};

// While alive, a thread gives the map's pages back every `every_ms` (a session loading from it, or a
// step of kReleaseEvery rows or more: each row's embedding lookup maps a folio); the destructor stops
// it and releases once more.
class ReleasingPages {
 public:
  explicit ReleasingPages(const WeightsMap& map, int every_ms = 10);
  ~ReleasingPages();
  ReleasingPages(const ReleasingPages&) = delete;
  ReleasingPages& operator=(const ReleasingPages&) = delete;

 private:
  const WeightsMap& map_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// True for an onnxruntime version ("1.32.0") that uses in-memory external data in place.
bool takes_buffers_in_place(const std::string& version);

}  // namespace edgecpm
