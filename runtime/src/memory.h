// Giving back the weights file's pages once onnxruntime has repacked the weights (see memory.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
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

}  // namespace edgecpm
