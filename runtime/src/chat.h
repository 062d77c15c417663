// A chat that keeps the model state across turns and prefills only what is new (mirrors
// edgecpm/runtime/chat.py): each turn renders the whole conversation, finds the longest prefix the
// state already holds, rolls back to it (KV: by position; recurrent state: from a snapshot), and
// prefills the rest, so outputs equal a fresh run over the whole conversation.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "generate.h"

namespace edgecpm {

class ChatSession {
 public:
  ChatSession(Engine& e, const Tokenizer& t, std::string system);
  void reset();
  GenResult send(const std::string& content, const GenParams& p, const PieceFn& on_piece, const std::string& role = "user");
  int last_prefill = 0;
  std::vector<std::pair<std::string, std::string>> messages;

 private:
  size_t reuse(const std::vector<int32_t>& ids);
  Engine& engine_;
  const Tokenizer& tok_;
  std::string system_;
  std::vector<Snapshot> snapshots_;
};

}  // namespace edgecpm
