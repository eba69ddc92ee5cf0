// DataReader: the body of a DATA command, line by line (RFC 5321 §4.1.4, §4.5.2).
//
// Takes the lines a LineSplitter yields (bound: data_line + 1, the extra octet being the
// transparency dot), removes dot-stuffing, appends the content with CRLF line ends to the
// caller's MessageBody, and recognises the end of data. What it appends are views of the
// lines where they lie (the body pins them, no copy); only a CRLF that the input lacked
// is added, as a literal. The end is CRLF "." CRLF only: the dot
// line must end in CRLF and so must the line before it, so that no bare LF or bare CR
// combination (\n.\n, \n.\r\n, \r.\r\n, \r\n.\r, ...) can end a message early and let
// the rest be read as commands (SMTP smuggling).
//
// Lines with a bare LF or a bare CR are either rejected (the message is refused at the
// end, 550 5.5.2) or normalised to CRLF, per configuration; either way they never end
// the data. After the first error the reader stores nothing more but still looks for
// the end, so the session stays in step with the client.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/line_splitter.h"
#include "core/message_body.h"

namespace postern {

enum class BareLineEnding { kReject, kNormalise };

enum class DataError { kNone, kTooBig, kLineTooLong, kBareLf, kBareCr };

class DataReader {
 public:
  DataReader(size_t max_line, size_t max_size, BareLineEnding mode)
      : max_line_(max_line), max_size_(max_size), mode_(mode) {}

  // The LineSplitter bound to use while reading data.
  size_t splitterBound() const { return max_line_ + 1; }

  // Starts a message whose content will be appended to out after what it holds now.
  void reset(const MessageBody& out);

  // Handles one line; returns true when it was the end-of-data line.
  bool feed(const Line& line, MessageBody& out);

  // BDAT (RFC 3030): raw chunk content, no dot-stuffing and no end marker. The same line
  // rules apply, with a CR at the end of one chunk paired with an LF at the start of the
  // next. finishChunks() after the LAST chunk settles a trailing CR.
  void feedChunk(std::string_view chunk, MessageBody& out);
  void finishChunks(MessageBody& out);

  // The caller moved what out held elsewhere (a spill file) and cleared it: a later error
  // now clears out entirely (the caller discards the moved part itself).
  void outMoved() { start_ = 0; }

  DataError error() const { return error_; }
  size_t size() const { return size_; }  // octets stored (after unstuffing)
  // "Received:" fields in the message's header section (up to its first empty line, or
  // its first line that cannot be a header field), for loop detection (RFC 5321 §6.3): a
  // message that has passed too many hops is refused.
  size_t receivedCount() const { return received_; }
  // The first Message-ID field's value in the header section, trimmed, at most
  // kMessageIdMax octets (for the accepted log line); "" if none, or if it was folded or
  // came split across BDAT chunks.
  const std::string& messageId() const { return message_id_; }
  static constexpr size_t kMessageIdMax = 256;

 private:
  void fail(DataError e, MessageBody& out);
  void append(std::string_view text, std::string_view eol, MessageBody& out);
  void appendPartial(std::string_view text, MessageBody& out);
  void endLine(std::string_view crlf, MessageBody& out);
  // Header section scan: a piece of the current line's content, then the line's end.
  void headerText(std::string_view text);
  void headerLineEnd();
  // whole: the entire line when it is at hand in one view (else empty).
  void headerLine(std::string_view head, size_t length, std::string_view whole = {});

  size_t max_line_;  // octets including CRLF, after unstuffing
  size_t max_size_;
  BareLineEnding mode_;
  bool prev_crlf_ = true;
  DataError error_ = DataError::kNone;
  size_t size_ = 0;
  size_t line_ = 0;          // BDAT: octets of the current line so far
  bool pending_cr_ = false;  // BDAT: the previous chunk ended in CR
  size_t start_ = 0;         // out.size() at reset(): a failed message is cut back to it
  // Header section scan: only the first octets of each line are kept, enough to tell a
  // "Received:" field name, so the scan costs nothing per octet past them.
  static constexpr size_t kHeadPrefix = 16;
  bool in_header_ = true;
  size_t received_ = 0;
  size_t head_len_ = 0;  // octets of the current line seen (the prefix holds up to 16)
  char head_[kHeadPrefix] = {};
  std::string_view line_whole_;  // BDAT: the current line, while it came in one piece
  std::string message_id_;
};

}  // namespace postern
