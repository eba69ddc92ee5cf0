// The message as milters see it and the edits they send back, as pure functions: the
// header section split into fields, and a milter's header and body modifications applied
// to it (relay/inbound/milter_chain.h collects them, the session stores the result).
//
// Everything a milter sends is checked before it touches a message: a header name must be
// printable ASCII without ':' or space, and a value's line breaks become CRLF followed by
// a tab when the milter did not fold the line itself, so that no edit can start a header
// (or the body) of its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/milter_protocol.h"

namespace postern {

struct MilterHeader {
  std::string name;
  std::string value;  // after the colon and its leading blanks, folds as "\n" (as Sendmail)
  std::string raw;    // the field as it was, CRLF included
};

struct HeaderSection {
  std::vector<MilterHeader> fields;
  size_t body_begin = 0;    // offset of the body (after the empty line), or of the first
                            // line that is not a header field
  bool complete = false;    // ended by an empty line or a non-field line within the text
  bool blank_line = false;  // ended by the empty line
};

// Splits the start of a message (at least its whole header section when complete).
HeaderSection parseHeaderSection(std::string_view text);

// A header value as it is stored: "\n" folds become CRLF, and a line that does not start
// with a blank is folded with a tab (it would otherwise start a field).
std::string foldValue(std::string_view value);
bool validHeaderName(std::string_view name);

// Applies one milter's header edits (ADDHEADER, INSHEADER, CHGHEADER) in order; false when
// one of them is malformed (nothing of it is applied then).
bool applyHeaderEdit(std::vector<MilterHeader>& fields, const milter::Packet& p);

// The header section again, as stored (each field's raw text, then the empty line).
std::string serializeHeaders(const std::vector<MilterHeader>& fields, bool had_blank_line);

// A body from REPLBODY packets, with every line ending made CRLF (a bare CR or LF from a
// milter must never reach the spool as such) and a final CRLF.
std::string normalizeBody(std::string_view body);

}  // namespace postern
