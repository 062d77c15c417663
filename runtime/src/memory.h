// Giving back the weights file's pages once onnxruntime has repacked the weights (see memory.cpp).
#pragma once
#include <cstddef>
#include <string>

namespace edgecpm {

// Drops this process's resident clean pages of the file `path` (MADV_DONTNEED on each of its
// mappings that holds no private pages); returns the bytes of mappings advised. Linux/Android only;
// elsewhere, or when /proc is not readable, it does nothing and returns 0. Never throws. Call it
// only while no other thread maps or unmaps that file (e.g. right after a session is made):
// onnxruntime unmaps an initializer's mapping once it is repacked, and an address range read from
// smaps could by then belong to the heap.
size_t release_file_pages(const std::string& path);

}  // namespace edgecpm
