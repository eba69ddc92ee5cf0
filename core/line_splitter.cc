#include "core/line_splitter.h"

#include <algorithm>
#include <cstring>

#include "core/assert.h"

namespace postern {

bool LineSplitter::next(InputBuffer& buf, Line& out) {
  // A buffer smaller than the bound could fill up without a complete or discardable line.
  POSTERN_ASSERT(buf.capacity() >= max_line_);
  for (;;) {
    std::string_view data = buf.readable();
    if (data.empty()) return false;

    if (discarding_) {
      const char* lf = static_cast<const char*>(std::memchr(data.data(), '\n', data.size()));
      if (lf == nullptr) {
        discarded_cr_ = data.back() == '\r';
        buf.consume(data.size());
        return false;
      }
      size_t len = static_cast<size_t>(lf - data.data());
      bool crlf = len > 0 ? data[len - 1] == '\r' : discarded_cr_;
      buf.consume(len + 1);
      discarding_ = false;
      out = Line{{}, crlf, true, {}};
      return true;
    }

    size_t window = std::min(data.size(), max_line_);
    const char* lf = static_cast<const char*>(std::memchr(data.data(), '\n', window));
    if (lf != nullptr) {
      size_t len = static_cast<size_t>(lf - data.data());
      bool crlf = len > 0 && data[len - 1] == '\r';
      const size_t text_len = crlf ? len - 1 : len;
      out = Line{data.substr(0, text_len), crlf, false, data.substr(text_len, len + 1 - text_len)};
      buf.consume(len + 1);
      return true;
    }
    if (data.size() < max_line_) return false;

    // No LF within the bound: drop what we have and the rest of the line.
    discarded_cr_ = data[max_line_ - 1] == '\r';
    buf.consume(max_line_);
    discarding_ = true;
  }
}

}  // namespace postern
