#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdio>

namespace postern {
namespace {

bool g_json = false;

void appendEscaped(std::string& out, std::string_view v) {
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out.append(buf);
    } else {
      out.push_back(c);
    }
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
  auto logger = spdlog::stderr_logger_mt("postern");
  logger->set_pattern(g_json ? "%v" : "%Y-%m-%dT%H:%M:%S.%e level=%l %v");
  logger->set_level(spdlog::level::from_str(std::string(level)));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void logEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<LogField> fields) {
  if (!spdlog::should_log(level)) return;
  std::string line;
  line.reserve(128);
  if (g_json) {
    line.append("{\"level\":\"");
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
  spdlog::log(level, "{}", line);
}

}  // namespace postern
