#include "queue/spool_check.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "queue/quarantine_list.h"
#include "queue/record.h"
#include "queue/segment_replay.h"
#include "queue/spool_dirs.h"

namespace postern {
namespace {

namespace fs = std::filesystem;

// One worker's directory; returns whether anything was damaged or quarantined.
bool checkWorkerDir(const std::string& dir, std::string& out) {
  const std::vector<uint32_t> ids = segmentIds(dir).value_or({});
  const auto salt = readSpoolSalt(dir, ids);
  out += dir + ": " + std::to_string(ids.size()) + " segments" +
         (salt ? "" : ", no salt found (format 1 segments only)") + "\n";
  bool bad = false;
  std::unordered_map<uint64_t, SpooledRef> messages;
  std::vector<uint64_t> order;
  for (uint32_t id : ids) {
    std::ifstream in(dir + "/" + segmentFileName(id), std::ios::binary);
    if (!in) continue;  // deleted by a running relay meanwhile
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string data = ss.str();
    SegmentReplay r = replaySegment(data, id, salt.value_or(0), messages, order);
    out += "  " + segmentFileName(id) + ": " + std::to_string(data.size()) + " octets, format " +
           (isFormat2Segment(data) ? "2" : "1") + ", " + std::to_string(r.records) +
           " intact records\n";
    for (const DamagedRange& d : r.damaged) {
      bad = true;
      out += "    damaged: octets " + std::to_string(d.offset) + " to " +
             std::to_string(d.offset + d.length) + (d.tail ? " (to the end: a torn write?)" : "") +
             "\n";
    }
  }
  size_t queued = 0;
  for (uint64_t mid : order) queued += messages[mid].finished() ? 0 : 1;
  out += "  messages with recipients still to deliver: " + std::to_string(queued) + "\n";
  QuarantineListing q;
  listWorkerQuarantine(dir, 0, q);
  for (const QuarantinedRange& r : q.ranges) {
    out += "  quarantined: " + printableName(r.path) + " (octets " +
           std::to_string(r.range.offset) + " to " +
           std::to_string(r.range.offset + r.range.length) + " of " +
           segmentFileName(r.range.segment) + ", " + std::to_string(r.size) + " octets)\n";
  }
  for (const std::string& path : q.ignored) {
    out += "  in the quarantine, not a range: " + path + "\n";
  }
  for (const std::string& err : q.errors) out += "  unreadable: " + err + "\n";
  if (q.truncated) {
    out += "  quarantine listing stopped after " + std::to_string(q.examined) + " entries\n";
  }
  return bad || !q.ranges.empty() || !q.ignored.empty() || !q.errors.empty() || q.truncated;
}

}  // namespace

int checkSpool(const std::string& dir, std::string& out) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    out += dir + ": not a directory\n";
    return 2;
  }
  std::vector<std::string> workers;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.size() > 1 && name[0] == 'w' &&
        name.find_first_not_of("0123456789", 1) == std::string::npos) {
      workers.push_back(e.path().string());
    }
  }
  std::sort(workers.begin(), workers.end());
  if (workers.empty()) workers.push_back(dir);  // one worker's directory itself
  bool bad = false;
  for (const auto& w : workers) bad |= checkWorkerDir(w, out);
  out += bad ? "damage found\n" : "no damage\n";
  return bad ? 1 : 0;
}

}  // namespace postern
