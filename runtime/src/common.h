// Internal: the error type thrown inside the library (caught at the C boundary) and UTF-8 helpers.
#pragma once
#include <stdexcept>
#include <string>

#include "edgecpm.h"

namespace edgecpm {

struct Error : std::runtime_error {
  edgecpm_status status;
  Error(edgecpm_status s, const std::string& msg) : std::runtime_error(msg), status(s) {}
};

// True when s is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool valid_utf8(const std::string& s);
// Bytes at the end of s that start an incomplete UTF-8 sequence (0 when s ends on a boundary).
size_t incomplete_utf8_tail(const std::string& s);
// Number of code points (s assumed valid).
size_t utf8_length(const std::string& s);
// Byte offset of code point n (n <= utf8_length(s)).
size_t utf8_offset(const std::string& s, size_t n);
// Invalid sequences replaced by U+FFFD.
std::string sanitize_utf8(const std::string& s);

}  // namespace edgecpm
