// LineSplitter: yields LF-terminated lines from an InputBuffer as views into it (no copy).
//
// A line is bounded: max_line counts every octet including the terminator. A line that
// grows past the bound is discarded up to its LF and reported once with too_long set, so
// a peer can never make us buffer more than the bound. Whether the line ended in CRLF or
// a bare LF is reported, never guessed: the DATA reader needs it to stop smuggling.
#pragma once

#include <cstddef>
#include <string_view>

#include "core/input_buffer.h"

namespace postern {

struct Line {
  std::string_view text;  // without the LF, and without the CR when crlf is set
  bool crlf = false;      // ended in CR LF (false: bare LF)
  bool too_long = false;  // exceeded the bound; text is empty, the bytes were dropped
  std::string_view eol;   // the terminator where it lies, right after text; empty if too_long
};

class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line) : max_line_(max_line) {}

  void setMaxLine(size_t max_line) { max_line_ = max_line; }
  size_t maxLine() const { return max_line_; }

  // Takes the next complete line out of buf. Returns false when buf holds no complete
  // line yet (the partial line stays in buf, or is being discarded if over the bound).
  bool next(InputBuffer& buf, Line& out);

  // Forget a partially discarded line (used when the connection changes mode).
  void reset() { discarding_ = false; }

 private:
  size_t max_line_;
  bool discarding_ = false;
  bool discarded_cr_ = false;  // last discarded octet was CR
};

}  // namespace postern
