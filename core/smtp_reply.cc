#include "core/smtp_reply.h"

#include <charconv>

namespace postern {
namespace {

void appendCode(std::string& out, int code, char sep) {
  char buf[4];
  auto res = std::to_chars(buf, buf + 3, code);
  out.append(buf, res.ptr);
  out.push_back(sep);
}

void appendText(std::string& out, std::string_view text) {
  for (char c : text) out.push_back((c == '\r' || c == '\n') ? ' ' : c);
}

void appendLine(std::string& out, int code, char sep, std::string_view enhanced,
                std::string_view text) {
  appendCode(out, code, sep);
  if (!enhanced.empty()) {
    out.append(enhanced);
    out.push_back(' ');
  }
  appendText(out, text);
  out.append("\r\n");
}

}  // namespace

void appendReply(std::string& out, int code, std::string_view enhanced, std::string_view text) {
  appendLine(out, code, ' ', enhanced, text);
}

void appendMultiline(std::string& out, int code, std::span<const std::string_view> lines) {
  appendMultiline(out, code, {}, lines);
}

void appendMultiline(std::string& out, int code, std::string_view enhanced,
                     std::span<const std::string_view> lines) {
  for (size_t i = 0; i < lines.size(); ++i) {
    appendLine(out, code, i + 1 == lines.size() ? ' ' : '-', enhanced, lines[i]);
  }
}

}  // namespace postern

namespace postern {

ReplyClass classifyReply(int code) {
  switch (code / 100) {
    case 2:
      return code < 200 ? ReplyClass::kInvalid : ReplyClass::kSuccess;
    case 3:
      return ReplyClass::kIntermediate;
    case 4:
      return ReplyClass::kTransient;
    case 5:
      return ReplyClass::kPermanent;
    default:
      return ReplyClass::kInvalid;
  }
}

}  // namespace postern
