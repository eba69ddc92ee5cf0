#include "core/dot_stuffer.h"

namespace postern {

void DotStuffer::stuff(std::string_view piece, std::vector<std::string_view>& out) {
  if (piece.empty()) return;
  size_t start = 0;  // first octet of piece not yet in a view
  size_t pos = 0;
  while (pos < piece.size()) {
    if (at_line_start_ && piece[pos] == '.') {
      if (pos > start) out.push_back(piece.substr(start, pos - start));
      out.push_back(".");  // the extra dot; the line's own follows in the next view
      start = pos;
    }
    const size_t lf = piece.find('\n', pos);
    if (lf == std::string_view::npos) {
      at_line_start_ = false;
      break;
    }
    pos = lf + 1;
    at_line_start_ = true;
  }
  if (start < piece.size()) out.push_back(piece.substr(start));
}

void DotStuffer::finish(std::vector<std::string_view>& out) {
  if (!at_line_start_) out.push_back("\r\n");
  out.push_back(".\r\n");
}

}  // namespace postern
