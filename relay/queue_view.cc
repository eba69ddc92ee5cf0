#include "relay/queue_view.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include "core/ascii.h"
#include "relay/routing/router.h"

namespace postern {
namespace {

std::string age(int64_t ms) {
  int64_t s = std::max<int64_t>(ms, 0) / 1000;
  char buf[32];
  if (s < 120) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  } else if (s < 7200) {
    std::snprintf(buf, sizeof buf, "%lldm", static_cast<long long>(s / 60));
  } else if (s < 172800) {
    std::snprintf(buf, sizeof buf, "%lldh", static_cast<long long>(s / 3600));
  } else {
    std::snprintf(buf, sizeof buf, "%lldd", static_cast<long long>(s / 86400));
  }
  return buf;
}

// Unix ms as "YYYY-MM-DD HH:MM:SS" in UTC.
std::string utcTime(int64_t ms) {
  const time_t t = static_cast<time_t>(ms / 1000);
  tm parts{};
  char buf[32];
  if (gmtime_r(&t, &parts) == nullptr ||
      std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &parts) == 0) {
    return "?";
  }
  return buf;
}

}  // namespace

std::string queueJson(const std::vector<QueueEntry>& entries) {
  std::string out = "[";
  for (size_t i = 0; i < entries.size(); ++i) {
    const QueueEntry& e = entries[i];
    out += i ? ",\n " : "\n ";
    out += "{\"id\":\"" + e.id + "\",\"sender\":\"" + jsonEscape(e.sender) + "\",\"recipients\":[";
    for (size_t r = 0; r < e.recipients.size(); ++r) {
      out += (r ? ",\"" : "\"") + jsonEscape(e.recipients[r]) + "\"";
    }
    out += "],\"received_ms\":" + std::to_string(e.received_ms) +
           ",\"size\":" + std::to_string(e.size) + ",\"state\":\"" + e.state + "\"" +
           ",\"attempts\":" + std::to_string(e.attempts);
    if (e.next_attempt_ms) out += ",\"next_attempt_ms\":" + std::to_string(e.next_attempt_ms);
    if (!e.next_hop.empty()) out += ",\"next_hop\":\"" + jsonEscape(e.next_hop) + "\"";
    if (!e.last_reply.empty()) out += ",\"last_reply\":\"" + jsonEscape(e.last_reply) + "\"";
    out += "}";
  }
  out += entries.empty() ? "]\n" : "\n]\n";
  return out;
}

std::string queueEntryText(const QueueEntry& e, int64_t now_ms) {
  std::string out;
  out += "id:         " + e.id + "\n";
  out += "sender:     <" + e.sender + ">\n";
  for (const auto& r : e.recipients) out += "recipient:  <" + r + ">\n";
  out += "age:        " + age(now_ms - e.received_ms) + "\n";
  out += "size:       " + std::to_string(e.size) + "\n";
  out += "state:      " + e.state + "\n";
  out += "attempts:   " + std::to_string(e.attempts) + "\n";
  if (e.next_attempt_ms) out += "next try:   in " + age(e.next_attempt_ms - now_ms) + "\n";
  if (!e.next_hop.empty()) out += "next hop:   " + e.next_hop + "\n";
  if (!e.last_reply.empty()) out += "last reply: " + e.last_reply + "\n";
  return out;
}

std::string queueText(const std::vector<QueueEntry>& entries, int64_t now_ms) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-16s %6s %9s %-8s %s\n", "ID", "AGE", "SIZE", "STATE",
                "SENDER -> RECIPIENTS");
  out += line;
  for (const auto& e : entries) {
    std::snprintf(line, sizeof line, "%-16s %6s %9llu %-8s ", e.id.c_str(),
                  age(now_ms - e.received_ms).c_str(), static_cast<unsigned long long>(e.size),
                  e.state.c_str());
    out += line;
    out += "<" + e.sender + "> ->";
    for (const auto& r : e.recipients) out += " <" + r + ">";
    out += "\n";
    if (!e.last_reply.empty()) out += "    (" + e.last_reply + ")\n";
  }
  out += std::to_string(entries.size()) + " message(s)\n";
  return out;
}

std::string queueSummary(const std::vector<QueueEntry>& entries, int64_t now_ms) {
  static constexpr int kBuckets[] = {5, 10, 20, 40, 80, 160, 320, 640, 1280};
  constexpr size_t kColumns = std::size(kBuckets) + 1;
  std::map<std::string, std::array<uint64_t, kColumns + 1>> rows;  // [0] is the total
  std::array<uint64_t, kColumns + 1> total{};
  for (const auto& e : entries) {
    int64_t minutes = std::max<int64_t>(now_ms - e.received_ms, 0) / 60000;
    size_t col = 0;
    while (col < std::size(kBuckets) && minutes >= kBuckets[col]) ++col;
    std::set<std::string> domains;
    for (const auto& r : e.recipients) domains.insert(recipientDomain(r));
    for (const auto& d : domains) {
      auto& row = rows[d.empty() ? "(none)" : d];
      ++row[0];
      ++row[col + 1];
      ++total[0];
      ++total[col + 1];
    }
  }
  std::string out;
  char cell[64];
  std::snprintf(cell, sizeof cell, "%-30s %6s", "", "T");
  out += cell;
  for (int b : kBuckets) {
    std::snprintf(cell, sizeof cell, " %6s", (std::to_string(b) + "m").c_str());
    out += cell;
  }
  out += "  1280m+\n";
  auto row = [&](const std::string& name, const std::array<uint64_t, kColumns + 1>& v) {
    std::snprintf(cell, sizeof cell, "%-30s", name.c_str());
    out += cell;
    for (uint64_t n : v) {
      std::snprintf(cell, sizeof cell, " %6llu", static_cast<unsigned long long>(n));
      out += cell;
    }
    out += "\n";
  };
  row("TOTAL", total);
  for (const auto& [d, v] : rows) row(d, v);
  return out;
}

std::string quarantineJson(const QuarantineListing& q) {
  std::string out = "{\"ranges\":[";
  for (size_t i = 0; i < q.ranges.size(); ++i) {
    const QuarantinedRange& r = q.ranges[i];
    out += i ? ",\n " : "\n ";
    out += "{\"worker\":" + std::to_string(r.worker) + ",\"segment\":\"" +
           segmentFileName(r.range.segment) + "\",\"offset\":" + std::to_string(r.range.offset) +
           ",\"length\":" + std::to_string(r.range.length) + ",\"size\":" + std::to_string(r.size) +
           ",\"path\":\"" + jsonEscape(printableName(r.path)) +
           "\",\"quarantined_ms\":" + std::to_string(r.mtime_ms) + "}";
  }
  out += q.ranges.empty() ? "],\n" : "\n],\n";
  out += "\"count\":" + std::to_string(q.ranges.size()) +
         ",\"bytes\":" + std::to_string(q.bytes()) +
         ",\"truncated\":" + (q.truncated ? "true" : "false");
  auto strings = [&out](const char* name, const std::vector<std::string>& v) {
    out += ",\n\"" + std::string(name) + "\":[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ",\"" : "\"") + jsonEscape(v[i]) + "\"";
    out += "]";
  };
  strings("ignored", q.ignored);
  strings("errors", q.errors);
  out += "}\n";
  return out;
}

std::string quarantineText(const QuarantineListing& q) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-6s %-16s %12s %10s  %-19s  %s\n", "WORKER", "SEGMENT",
                "OFFSET", "LENGTH", "QUARANTINED (UTC)", "FILE");
  out += line;
  for (const QuarantinedRange& r : q.ranges) {
    std::snprintf(line, sizeof line, "%-6s %-16s %12llu %10llu  %-19s  ",
                  ("w" + std::to_string(r.worker)).c_str(),
                  segmentFileName(r.range.segment).c_str(),
                  static_cast<unsigned long long>(r.range.offset),
                  static_cast<unsigned long long>(r.range.length), utcTime(r.mtime_ms).c_str());
    out += line + printableName(r.path);
    if (r.size != r.range.length) out += " (the file holds " + std::to_string(r.size) + " octets)";
    out += "\n";
  }
  for (const auto& path : q.ignored) out += "ignored, not a quarantined range: " + path + "\n";
  for (const auto& err : q.errors) out += "unreadable: " + err + "\n";
  if (q.truncated) {
    out += "listing stopped after " + std::to_string(q.examined) + " entries: there are more\n";
  }
  out += std::to_string(q.ranges.size()) + " quarantined range(s), " + std::to_string(q.bytes()) +
         " octets\n";
  return out;
}

std::string quarantineSummary(const QuarantineListing& q) {
  std::string out = "quarantined: " + std::string(q.truncated ? "at least " : "") +
                    std::to_string(q.ranges.size()) + " range(s), " + std::to_string(q.bytes()) +
                    " octets";
  if (!q.ranges.empty() || !q.ignored.empty() || !q.errors.empty() || q.truncated) {
    out += " (postern queue quarantine lists them)";
  }
  return out + "\n";
}

}  // namespace postern
