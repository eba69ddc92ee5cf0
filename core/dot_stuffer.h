// DotStuffer: the outbound half of RFC 5321 §4.5.2, done by splitting views instead of
// copying. A body of CRLF-terminated lines goes out as the pieces it is read in; a line
// that starts with "." gets one more "." in front, as a view of its own, and the end of
// the body gets ".\r\n" (after a CRLF if the body did not end with one). The inbound
// DataReader unstuffs the same way, so a message never costs a copy for its dots.
//
// Pieces may split a line anywhere: whether the next octet starts a line is carried from
// one piece to the next. The views point into the piece and into static strings; they
// are valid while the piece is.
#pragma once

#include <string_view>
#include <vector>

namespace postern {

class DotStuffer {
 public:
  // Appends to out the views that send piece, the next octets of the body.
  void stuff(std::string_view piece, std::vector<std::string_view>& out);
  // Appends the end of data: CRLF if the body so far did not end with LF, then ".\r\n".
  // An empty body is ".\r\n" alone.
  void finish(std::vector<std::string_view>& out);

 private:
  bool at_line_start_ = true;  // the next octet starts a line (so also: nothing stuffed yet)
};

}  // namespace postern
