// Whether a line of a message can begin a header field (RFC 5322 §2.2: a name of printable
// ASCII but ':', then, in the obsolete syntax, blanks, then a colon). Shared by the reader
// that counts Received: fields as a message arrives (core/data_reader.h) and the notices
// that return a message's header section (queue/bounce.h), so both end the header section
// at the same line.
#pragma once

#include <string_view>

namespace postern {

// head: the line without its line end, or only its first octets when truncated (then a
// name that runs to the end of head may still be one).
inline bool canStartHeaderField(std::string_view head, bool truncated = false) {
  size_t i = 0;
  while (i < head.size() && head[i] > ' ' && head[i] < 0x7f && head[i] != ':') ++i;
  const size_t name = i;
  while (i < head.size() && (head[i] == ' ' || head[i] == '\t')) ++i;
  if (i == head.size()) return truncated;
  return head[i] == ':' && name > 0;
}

}  // namespace postern
