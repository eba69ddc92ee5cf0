// Structured event logging through spdlog: one line per event, as key=value pairs or as a
// JSON object (server.log_format). Values are escaped so that peer-controlled text
// (HELO names, addresses) can never forge a second log line or field.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

namespace postern {

struct LogField {
  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(std::string_view k, const char* v) : key(k), value(v) {}
  LogField(std::string_view k, uint64_t v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, int v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, double v);

  std::string_view key;
  std::string value;
  bool quoted = true;
};

// Sets up the process logger (stderr). format: "keyvalue" or "json".
void initLogging(std::string_view format, std::string_view level);

void logEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<LogField> fields);
// The same with fields made at run time (a session's id and client before the event's own).
void logEvent(spdlog::level::level_enum level, std::string_view event,
              std::span<const LogField> fields);

// The line logEvent writes after the logger's own prefix ("TIME level=L " for key=value;
// for JSON the object's opening brace and "ts" member, so this returns the members after
// them and the closing brace).
std::string formatEvent(bool json, spdlog::level::level_enum level, std::string_view event,
                        std::span<const LogField> fields);
inline std::string formatEvent(bool json, spdlog::level::level_enum level, std::string_view event,
                               std::initializer_list<LogField> fields) {
  return formatEvent(json, level, event, std::span<const LogField>(fields.begin(), fields.size()));
}

}  // namespace postern
