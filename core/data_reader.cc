#include "core/data_reader.h"

#include <algorithm>
#include <cstring>

#include "core/header_field.h"

namespace postern {
namespace {

constexpr std::string_view kCrlf = "\r\n";

// A field named lower_name (any ASCII case) then optional blanks then ':' (RFC 5322 field
// name, §4.5.3 obs-optional).
bool isField(std::string_view head, std::string_view lower_name) {
  if (head.size() <= lower_name.size()) return false;
  for (size_t i = 0; i < lower_name.size(); ++i) {
    char c = head[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower_name[i]) return false;
  }
  size_t i = lower_name.size();
  while (i < head.size() && (head[i] == ' ' || head[i] == '\t')) ++i;
  return i < head.size() && head[i] == ':';
}

}  // namespace

void DataReader::reset(const MessageBody& out) {
  prev_crlf_ = true;
  error_ = DataError::kNone;
  size_ = 0;
  line_ = 0;
  pending_cr_ = false;
  start_ = out.size();
  in_header_ = true;
  received_ = 0;
  head_len_ = 0;
  line_whole_ = {};
  message_id_.clear();
}

void DataReader::headerText(std::string_view text) {
  line_whole_ = head_len_ == 0 ? text : std::string_view{};  // a second piece: not whole
  if (!in_header_ || head_len_ >= kHeadPrefix) {
    head_len_ += text.size();
    return;
  }
  const size_t n = std::min(text.size(), kHeadPrefix - head_len_);
  std::memcpy(head_ + head_len_, text.data(), n);
  head_len_ += text.size();
}

void DataReader::headerLineEnd() {
  if (!in_header_) return;
  headerLine(std::string_view(head_, std::min(head_len_, kHeadPrefix)), head_len_, line_whole_);
  head_len_ = 0;
  line_whole_ = {};
}

// head: the line's first octets (up to kHeadPrefix), length: the whole line's.
void DataReader::headerLine(std::string_view head, size_t length, std::string_view whole) {
  if (head.empty()) {
    in_header_ = false;  // the empty line that ends the header section
    return;
  }
  if (head[0] == ' ' || head[0] == '\t') return;  // a field's continuation
  // A line that cannot begin a field ends the header section, so body lines are not
  // looked at (a name longer than the prefix is given the benefit of the doubt).
  const bool field = canStartHeaderField(head, length > kHeadPrefix);
  if (!field) {
    in_header_ = false;
  } else if (isField(head, "received")) {
    ++received_;
  } else if (message_id_.empty() && whole.size() == length && isField(whole, "message-id")) {
    std::string_view v = whole.substr(whole.find(':') + 1);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    message_id_.assign(v.substr(0, kMessageIdMax));
  }
}

void DataReader::fail(DataError e, MessageBody& out) {
  error_ = e;
  out.truncate(start_);
}

// eol: the line's own terminator, used when it is a CRLF right after text (one view of
// both, one append per line); any other is replaced by a literal CRLF.
void DataReader::append(std::string_view text, std::string_view eol, MessageBody& out) {
  if (error_ != DataError::kNone) return;
  if (text.size() + 2 > max_line_) return fail(DataError::kLineTooLong, out);
  size_ += text.size() + 2;
  if (size_ > max_size_) return fail(DataError::kTooBig, out);
  if (in_header_) {
    headerLine(text.substr(0, std::min(text.size(), kHeadPrefix)), text.size(), text);
  }
  if (eol == kCrlf && eol.data() == text.data() + text.size()) {
    out.append({text.data(), text.size() + 2});  // the line and its CRLF where they lie
  } else {
    out.append(text);
    out.appendStatic(kCrlf);
  }
}

bool DataReader::feed(const Line& line, MessageBody& out) {
  const bool was_crlf = prev_crlf_;
  prev_crlf_ = line.crlf;
  if (line.crlf && was_crlf && !line.too_long && line.text == ".") return true;
  if (error_ != DataError::kNone) return false;
  if (line.too_long) {
    fail(DataError::kLineTooLong, out);
    return false;
  }

  std::string_view text = line.text;
  const bool has_cr = !text.empty() && std::memchr(text.data(), '\r', text.size()) != nullptr;
  if (mode_ == BareLineEnding::kReject) {
    if (!line.crlf) {
      fail(DataError::kBareLf, out);
    } else if (has_cr) {
      fail(DataError::kBareCr, out);
    } else {
      if (!text.empty() && text.front() == '.') text.remove_prefix(1);
      append(text, line.eol, out);
    }
    return false;
  }

  // Normalise: the line is a line whatever ended it; a bare CR inside it ends a line too.
  // Only the client's own line start (after CRLF or LF) carries a transparency dot.
  if (!text.empty() && text.front() == '.') text.remove_prefix(1);
  while (has_cr) {
    size_t cr = text.find('\r');
    if (cr == std::string_view::npos) break;
    append(text.substr(0, cr), {}, out);
    text.remove_prefix(cr + 1);
  }
  append(text, line.crlf ? line.eol : std::string_view{}, out);
  return false;
}

}  // namespace postern

namespace postern {

void DataReader::appendPartial(std::string_view text, MessageBody& out) {
  line_ += text.size();
  size_ += text.size();
  if (line_ + 2 > max_line_) return fail(DataError::kLineTooLong, out);
  if (size_ > max_size_) return fail(DataError::kTooBig, out);
  if (in_header_) headerText(text);
  out.append(text);
}

// crlf: the CR LF where they lie in the chunk, or a literal one (a bare CR or LF
// normalised, or a CR at the end of the previous chunk).
void DataReader::endLine(std::string_view crlf, MessageBody& out) {
  line_ = 0;
  size_ += 2;
  if (size_ > max_size_) return fail(DataError::kTooBig, out);
  headerLineEnd();
  if (crlf.data() == kCrlf.data()) {
    out.appendStatic(kCrlf);
  } else {
    out.append(crlf);
  }
}

void DataReader::feedChunk(std::string_view chunk, MessageBody& out) {
  size_t i = 0;
  while (i < chunk.size() && error_ == DataError::kNone) {
    char c = chunk[i];
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') {
        endLine(i > 0 ? chunk.substr(i - 1, 2) : kCrlf, out);
        ++i;
        continue;
      }
      if (mode_ == BareLineEnding::kReject) return fail(DataError::kBareCr, out);
      endLine(kCrlf, out);  // normalise: the CR alone ended a line; c is looked at again
      continue;
    }
    if (c == '\r') {
      pending_cr_ = true;
      ++i;
    } else if (c == '\n') {
      if (mode_ == BareLineEnding::kReject) return fail(DataError::kBareLf, out);
      endLine(kCrlf, out);
      ++i;
    } else {
      size_t j = i;
      while (j < chunk.size() && chunk[j] != '\r' && chunk[j] != '\n') ++j;
      appendPartial(chunk.substr(i, j - i), out);
      i = j;
    }
  }
}

void DataReader::finishChunks(MessageBody& out) {
  if (error_ != DataError::kNone || !pending_cr_) return;
  pending_cr_ = false;
  if (mode_ == BareLineEnding::kReject) return fail(DataError::kBareCr, out);
  endLine(kCrlf, out);
}

}  // namespace postern
