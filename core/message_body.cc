#include "core/message_body.h"

#include "core/input_buffer.h"

namespace postern {

void MessageBody::add(std::string_view piece, const char* storage) {
  size_ += piece.size();
  if (storage != nullptr && storage == last_storage_ &&
      pieces_.back().data() + pieces_.back().size() == piece.data()) {
    pieces_.back() = std::string_view(pieces_.back().data(), pieces_.back().size() + piece.size());
    return;
  }
  pieces_.push_back(piece);
  last_storage_ = storage;
}

void MessageBody::append(std::string_view text) {
  if (text.empty()) return;
  if (source_ != nullptr && source_->holds(text)) {
    const char* storage = source_->storage().get();
    if (held_.empty() || held_.back().storage.get() != storage) {
      held_.push_back(Held{source_->storage(), pieces_.size()});
    }
    add(text, storage);
    return;
  }
  adopt(std::string(text));
}

void MessageBody::appendStatic(std::string_view text) {
  if (!text.empty()) add(text, nullptr);
}

void MessageBody::adopt(std::string text) {
  if (text.empty()) return;
  owned_.push_front(std::move(text));
  add(owned_.front(), nullptr);
}

void MessageBody::prepend(std::string text) {
  if (text.empty()) return;
  owned_.push_front(std::move(text));
  pieces_.insert(pieces_.begin(), owned_.front());
  for (Held& h : held_) ++h.first_piece;
  if (pieces_.size() == 1) last_storage_ = nullptr;
  size_ += owned_.front().size();
}

void MessageBody::truncate(size_t n) {
  if (n >= size_) return;
  size_t kept = 0;
  size_t i = 0;
  while (i < pieces_.size() && kept + pieces_[i].size() <= n) kept += pieces_[i++].size();
  if (kept < n) {
    pieces_[i].remove_suffix(pieces_[i].size() - (n - kept));
    ++i;
  }
  pieces_.resize(i);
  while (!held_.empty() && held_.back().first_piece >= pieces_.size()) held_.pop_back();
  size_ = n;
  last_storage_ = nullptr;  // the next piece starts anew
}

void MessageBody::clear() {
  pieces_.clear();
  held_.clear();
  owned_.clear();
  last_storage_ = nullptr;
  size_ = 0;
}

std::string MessageBody::str() const {
  std::string out;
  out.reserve(size_);
  for (std::string_view p : pieces_) out.append(p);
  return out;
}

}  // namespace postern
