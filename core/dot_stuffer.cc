#include "core/dot_stuffer.h"

namespace postern {

void DotStuffer::stuff(std::string_view piece, std::vector<std::string_view>& out) {
  if (piece.empty()) return;
  // From dot to dot rather than line to line: most large bodies are base64, which has no
  // dot at all, and text has fewer dots than line ends; a dot is stuffed when it starts
  // a line (the octet before it is LF, or the previous piece ended one).
  size_t start = 0;  // first octet of piece not yet in a view
  for (size_t dot = piece.find('.'); dot != std::string_view::npos; dot = piece.find('.', dot + 1)) {
    if (dot == 0 ? !at_line_start_ : piece[dot - 1] != '\n') continue;
    if (dot > start) out.push_back(piece.substr(start, dot - start));
    out.push_back(".");  // the extra dot; the line's own follows in the next view
    start = dot;
  }
  if (start < piece.size()) out.push_back(piece.substr(start));
  at_line_start_ = piece.back() == '\n';
}

void DotStuffer::finish(std::vector<std::string_view>& out) {
  if (!at_line_start_) out.push_back("\r\n");
  out.push_back(".\r\n");
}

}  // namespace postern
