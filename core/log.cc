#include "core/log.h"

#include <unistd.h>

#include "core/log_sink.h"

#include <cstdio>

namespace postern {
namespace {

bool g_json = false;

// Length of the well-formed UTF-8 sequence at the start of v (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or 0.
size_t utf8Length(std::string_view v) {
  auto b = [&](size_t i) { return static_cast<unsigned char>(v[i]); };
  auto cont = [&](size_t i) { return i < v.size() && (b(i) & 0xc0) == 0x80; };
  const unsigned char c = b(0);
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    if ((c == 0xe0 && b(1) < 0xa0) || (c == 0xed && b(1) > 0x9f)) return 0;
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if ((c == 0xf0 && b(1) < 0x90) || (c == 0xf4 && b(1) > 0x8f)) return 0;
    return 4;
  }
  return 0;
}

// Escaped for a quoted string: quotes, backslashes and control characters (so a peer's
// text cannot end the line or the field); UTF-8 passes, any other byte (peer text may be
// any octets) becomes U+FFFD, so a JSON line is always valid UTF-8.
void appendEscaped(std::string& out, std::string_view v) {
  for (size_t i = 0; i < v.size();) {
    const char c = v[i];
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out.append(buf);
    } else if (u >= 0x80) {
      const size_t n = utf8Length(v.substr(i));
      if (n == 0) {
        out.append("\\ufffd");
        ++i;
      } else {
        out.append(v.substr(i, n));
        i += n;
      }
      continue;
    } else {
      out.push_back(c);
    }
    ++i;
  }
}

bool needsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || u < 0x21 || u == 0x7f) return true;
  }
  return false;
}

}  // namespace

LogField::LogField(std::string_view k, double v) : key(k), quoted(false) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  value = buf;
}

void initLogging(std::string_view format, std::string_view level) {
  g_json = format == "json";
  auto logger = std::make_shared<spdlog::logger>("postern", std::make_shared<LogSink>(STDERR_FILENO));
  // Both formats start with a UTC ISO-8601 timestamp, its zone said (Z): lines from hosts
  // in other zones, or from before a DST change, sort and join as they are.
  // JSON: as the first member; formatEvent() writes the rest.
  if (g_json) {
    logger->set_pattern("{\"ts\":\"%Y-%m-%dT%H:%M:%S.%eZ\",%v", spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ level=%l %v", spdlog::pattern_time_type::utc);
  }
  logger->set_level(spdlog::level::from_str(std::string(level)));
  spdlog::set_default_logger(logger);
}

void logEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<LogField> fields) {
  logEvent(level, event, std::span<const LogField>(fields.begin(), fields.size()));
}

void logEvent(spdlog::level::level_enum level, std::string_view event,
              std::span<const LogField> fields) {
  if (!spdlog::should_log(level)) return;
  spdlog::log(level, "{}", formatEvent(g_json, level, event, fields));
}

std::string formatEvent(bool json, spdlog::level::level_enum level, std::string_view event,
                        std::span<const LogField> fields) {
  std::string line;
  line.reserve(128);
  if (json) {
    line.append("\"level\":\"");
    line.append(spdlog::level::to_string_view(level).data());
    line.append("\",\"event\":\"");
    appendEscaped(line, event);
    line.push_back('"');
    for (const auto& f : fields) {
      line.append(",\"");
      line.append(f.key);
      line.append("\":");
      if (f.quoted) line.push_back('"');
      appendEscaped(line, f.value);
      if (f.quoted) line.push_back('"');
    }
    line.push_back('}');
  } else {
    line.append("event=");
    line.append(event);
    for (const auto& f : fields) {
      line.push_back(' ');
      line.append(f.key);
      line.push_back('=');
      if (needsQuotes(f.value)) {
        line.push_back('"');
        appendEscaped(line, f.value);
        line.push_back('"');
      } else {
        line.append(f.value);
      }
    }
  }
  return line;
}

}  // namespace postern
