// A small JSON reader (the manifest) and string escaper (chat messages for the tokenizer library).
#pragma once
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgecpm {

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::map<std::string, Json> obj;

  bool has(const std::string& k) const { return kind == Object && obj.count(k); }
  const Json& operator[](const std::string& k) const;  // throws std::runtime_error when missing
  const Json& at(size_t i) const { return arr.at(i); }
  bool is_null() const { return kind == Null; }
  long long as_int() const;
  const std::string& as_str() const;
};

Json parse_json(const std::string& text);  // throws std::runtime_error("... at byte N")
std::string json_quote(const std::string& s);  // "..." with escapes

}  // namespace edgecpm
