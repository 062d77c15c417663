#include "chat.h"

#include "common.h"

namespace edgecpm {

namespace {
constexpr size_t kMaxSnapshots = 8;
}

ChatSession::ChatSession(Engine& e, const Tokenizer& t, std::string system) : engine_(e), tok_(t), system_(std::move(system)) {
  reset();
}

void ChatSession::reset() {
  messages.clear();
  if (!system_.empty()) messages.emplace_back("system", system_);
  snapshots_.clear();
  engine_.reset();
}

size_t ChatSession::reuse(const std::vector<int32_t>& ids) {
  State& st = engine_.state;
  size_t common = 0;
  while (common < st.tokens.size() && common < ids.size() && st.tokens[common] == ids[common]) ++common;
  size_t keep = std::min(common, ids.size() - 1);  // at least one token to feed
  if (st.truncate(keep)) return keep;
  for (auto it = snapshots_.rbegin(); it != snapshots_.rend(); ++it) {
    size_t pos = it->tokens.size();
    if (pos <= keep && std::equal(it->tokens.begin(), it->tokens.end(), ids.begin())) {
      st.restore(*it);
      return pos;
    }
  }
  engine_.reset();
  return 0;
}

GenResult ChatSession::send(const std::string& content, const GenParams& p, const PieceFn& on_piece, const std::string& role) {
  auto msgs = messages;
  msgs.emplace_back(role, content);
  std::vector<int32_t> ids = tok_.encode_chat(msgs);
  if (static_cast<int64_t>(ids.size()) > engine_.ctx)
    throw Error(EDGECPM_ERR_CONTEXT_OVERFLOW, "the conversation (" + std::to_string(ids.size()) +
                " tokens) exceeds the local context of " + std::to_string(engine_.ctx) +
                "; start a new chat (reset) or open with a larger context");
  messages = msgs;
  size_t start = reuse(ids);
  last_prefill = static_cast<int>(ids.size() - start);
  std::vector<int32_t> fresh(ids.begin() + start, ids.end());
  auto remember = [this] {
    if (engine_.state.recurrent()) {
      snapshots_.push_back(engine_.state.snapshot());
      if (snapshots_.size() > kMaxSnapshots) snapshots_.erase(snapshots_.begin());
    }
  };
  GenResult r = stream_tokens(engine_, tok_, fresh, p, on_piece, remember);
  messages.emplace_back("assistant", r.text);
  return r;
}

}  // namespace edgecpm
