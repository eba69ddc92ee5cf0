#include "core/milter_protocol.h"

namespace postern {
namespace milter {
namespace {

void putU32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

uint32_t getU32(std::string_view in) {
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

// Printable ASCII and tabs: what an SMTP reply line may hold.
bool printable(std::string_view s) {
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\t') || c >= 0x7f) return false;
  }
  return true;
}

}  // namespace

std::string encode(char code, std::string_view data) {
  std::string out;
  out.reserve(5 + data.size());
  putU32(out, static_cast<uint32_t>(data.size() + 1));
  out.push_back(code);
  out.append(data);
  return out;
}

std::string encodeOptions(uint32_t version, uint32_t actions, uint32_t protocol) {
  std::string data;
  putU32(data, version);
  putU32(data, actions);
  putU32(data, protocol);
  return encode(kOptionNegotiation, data);
}

std::string encodeMacros(char for_command,
                         const std::vector<std::pair<std::string, std::string>>& macros) {
  std::string data(1, for_command);
  for (const auto& [name, value] : macros) {
    data.append(name).push_back('\0');
    data.append(value).push_back('\0');
  }
  return encode(kMacro, data);
}

std::string encodeConnect(std::string_view hostname, char family, uint16_t port,
                          std::string_view address) {
  std::string data(hostname);
  data.push_back('\0');
  data.push_back(family);
  if (family != 'U') {
    data.push_back(static_cast<char>(port >> 8));
    data.push_back(static_cast<char>(port));
    data.append(address).push_back('\0');
  }
  return encode(kConnect, data);
}

std::string encodeStrings(char code, const std::vector<std::string_view>& strings) {
  std::string data;
  for (std::string_view s : strings) data.append(s).push_back('\0');
  return encode(code, data);
}

MilterReader::Status MilterReader::next(Packet& out) {
  const std::string_view rest = std::string_view(buffer_).substr(start_);
  if (rest.size() < 4) return Status::kNeedMore;
  const uint32_t length = getU32(rest);
  if (length == 0 || length > kMaxPacket) return Status::kBad;
  if (rest.size() < 4 + static_cast<size_t>(length)) return Status::kNeedMore;
  out.code = rest[4];
  out.data.assign(rest.substr(5, length - 1));
  start_ += 4 + length;
  if (start_ == buffer_.size()) {
    buffer_.clear();
    start_ = 0;
  } else if (start_ > 65536) {  // let go of what was read, now and then
    buffer_.erase(0, start_);
    start_ = 0;
  }
  return Status::kPacket;
}

std::optional<Options> parseOptions(std::string_view data) {
  if (data.size() < 12) return std::nullopt;
  Options o{getU32(data), getU32(data.substr(4)), getU32(data.substr(8)), {}};
  data.remove_prefix(12);
  // v6: then pairs of a u32 step and a NUL-terminated list of macro names.
  while (!data.empty()) {
    if (data.size() < 5) return std::nullopt;
    const uint32_t step = getU32(data);
    data.remove_prefix(4);
    const size_t nul = data.find('\0');
    if (nul == std::string_view::npos) return std::nullopt;
    o.macros.emplace_back(step, std::string(data.substr(0, nul)));
    data.remove_prefix(nul + 1);
  }
  return o;
}

std::optional<ReplyCode> parseReplyCode(std::string_view data) {
  if (!data.empty() && data.back() == '\0') data.remove_suffix(1);
  if (data.find('\0') != std::string_view::npos) return std::nullopt;
  ReplyCode r;
  while (true) {
    const size_t crlf = data.find("\r\n");
    const std::string_view line = data.substr(0, crlf);
    const bool last = crlf == std::string_view::npos;
    if (line.size() < 3 || !printable(line)) return std::nullopt;
    const char c0 = line[0], c1 = line[1], c2 = line[2];
    if ((c0 != '4' && c0 != '5') || c1 < '0' || c1 > '9' || c2 < '0' || c2 > '9') {
      return std::nullopt;
    }
    const int code = (c0 - '0') * 100 + (c1 - '0') * 10 + (c2 - '0');
    if (r.code != 0 && code != r.code) return std::nullopt;  // one code for every line
    r.code = code;
    // "NNN text" ends the reply; "NNN-text" continues it on the next line.
    const char sep = line.size() > 3 ? line[3] : ' ';
    if (sep != (last ? ' ' : '-')) return std::nullopt;
    r.lines.emplace_back(line.size() > 4 ? line.substr(4) : std::string_view{});
    if (last) return r;
    data.remove_prefix(crlf + 2);
  }
}

std::optional<std::vector<std::string>> parseStrings(std::string_view data) {
  std::vector<std::string> out;
  if (data.empty()) return out;
  if (data.back() != '\0') return std::nullopt;
  while (!data.empty()) {
    const size_t nul = data.find('\0');
    out.emplace_back(data.substr(0, nul));
    data.remove_prefix(nul + 1);
  }
  return out;
}

std::optional<HeaderChange> parseHeaderChange(std::string_view data) {
  if (data.size() < 4) return std::nullopt;
  HeaderChange h;
  h.index = getU32(data);
  std::optional<std::vector<std::string>> parts = parseStrings(data.substr(4));
  if (!parts || parts->size() != 2 || (*parts)[0].empty()) return std::nullopt;
  h.name = std::move((*parts)[0]);
  h.value = std::move((*parts)[1]);
  for (unsigned char c : h.name) {
    if (c <= ' ' || c == ':' || c >= 0x7f) return std::nullopt;  // RFC 5322 field name
  }
  return h;
}

}  // namespace milter
}  // namespace postern
