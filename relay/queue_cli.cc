#include "relay/queue_cli.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <vector>

#include "core/clock.h"
#include "core/network.h"
#include "core/result.h"
#include "queue/record.h"
#include "queue/spool_dirs.h"
#include "relay/queue_view.h"

namespace postern {
namespace {

struct HttpAnswer {
  int status = 0;
  std::string body;
};

// One HTTP/1.1 request with Connection: close. An answer with any status is a success
// here; a failure is not reaching the endpoint or not understanding it.
Result<HttpAnswer> httpRequest(const std::string& address, const std::string& method,
                               const std::string& target, const std::string& token) {
  const std::optional<sockaddr_storage> parsed = parseHostPort(address);
  if (!parsed) return fail("admin address \"" + address + "\" is not ip:port");
  const sockaddr_storage& addr = *parsed;
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("socket failed");
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  socklen_t len = addr.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    ::close(fd);
    return fail("cannot connect to the admin endpoint at " + address + " (is the relay running?)");
  }
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + address +
                    "\r\nAuthorization: Bearer " + token +
                    "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return fail("send failed");
  }
  std::string resp;
  char buf[16384];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t head_end = resp.find("\r\n\r\n");
  if (resp.compare(0, 9, "HTTP/1.1 ") != 0 || head_end == std::string::npos) {
    return fail("malformed answer from the admin endpoint");
  }
  return HttpAnswer{std::atoi(resp.c_str() + 9), resp.substr(head_end + 4)};
}

// Message id's content as spooled in the spool directory dir (offline).
int printBodyOffline(const std::string& dir, const SpooledMessage& m) {
  std::FILE* f = std::fopen((dir + "/" + segmentFileName(m.ref.segment)).c_str(), "rb");
  if (f == nullptr || std::fseek(f, static_cast<long>(m.ref.body_offset), SEEK_SET) != 0) {
    if (f != nullptr) std::fclose(f);
    std::fprintf(stderr, "postern: the message's segment cannot be read\n");
    return 1;
  }
  char buf[65536];
  uint64_t left = m.ref.body_size;
  while (left > 0) {
    const size_t n = std::fread(buf, 1, std::min<uint64_t>(left, sizeof buf), f);
    if (n == 0) break;
    std::fwrite(buf, 1, n, stdout);
    left -= n;
  }
  std::fclose(f);
  if (left > 0) {
    std::fprintf(stderr, "postern: the message's segment ends before its body does\n");
    return 1;
  }
  return 0;
}

int offline(const QueueCommand& cmd) {
  if (cmd.action != "list" && cmd.action != "summary" && cmd.action != "show" &&
      cmd.action != "quarantine") {
    std::fprintf(stderr, "postern: queue %s needs the running relay (not --spool-dir)\n",
                 cmd.action.c_str());
    return 2;
  }
  // The spool directory holds one wN directory per worker.
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(cmd.spool_dir, ec)) {
    if (e.is_directory() && e.path().filename().string().starts_with("w")) {
      dirs.push_back(e.path().string());
    }
  }
  if (ec) {
    std::fprintf(stderr, "postern: %s: %s\n", cmd.spool_dir.c_str(), ec.message().c_str());
    return 1;
  }
  if (cmd.action == "quarantine") {
    const QuarantineListing q = listQuarantine(cmd.spool_dir);
    std::fputs((cmd.json ? quarantineJson(q) : quarantineText(q)).c_str(), stdout);
    return 0;
  }
  std::sort(dirs.begin(), dirs.end());
  std::vector<QueueEntry> entries;
  const std::optional<uint64_t> wanted = parseQueueId(cmd.id);
  for (const auto& d : dirs) {
    Result<std::vector<SpooledMessage>> pending = readSpoolOffline(d);
    if (!pending) {
      std::fprintf(stderr, "postern: %s\n", pending.error().c_str());
      return 1;
    }
    const std::vector<uint64_t> held = readHoldMarkers(d);
    for (const auto& m : *pending) {
      if (cmd.body && wanted == m.envelope.id) return printBodyOffline(d, m);
      entries.push_back(entryFromSpool(m));
      if (std::binary_search(held.begin(), held.end(), m.envelope.id))
        entries.back().state = "held";
    }
  }
  if (cmd.body) {
    std::fprintf(stderr, "postern: no such queue id: %s\n", cmd.id.c_str());
    return 1;
  }
  std::sort(entries.begin(), entries.end(),
            [](auto& a, auto& b) { return a.received_ms < b.received_ms; });
  const int64_t now = unixMillis();
  if (cmd.action == "summary") {
    std::fputs(queueSummary(entries, now).c_str(), stdout);
    std::fputs(quarantineSummary(listQuarantine(cmd.spool_dir)).c_str(), stdout);
    return 0;
  }
  if (cmd.action == "show") {
    std::vector<QueueEntry> found;
    for (auto& e : entries) {
      if (e.id == cmd.id) found.push_back(e);
    }
    if (found.empty()) {
      std::fprintf(stderr, "postern: no such queue id: %s\n", cmd.id.c_str());
      return 1;
    }
    entries = found;
    if (!cmd.json) {
      std::fputs(queueEntryText(entries[0], now).c_str(), stdout);
      return 0;
    }
  }
  std::fputs((cmd.json ? queueJson(entries) : queueText(entries, now)).c_str(), stdout);
  return 0;
}

// What an action did, for the answer: "flushed", "deleted", ...; nullptr for what is not
// an action on messages (list, show, ...).
const char* pastTense(const std::string& action) {
  static const std::pair<const char*, const char*> kWords[] = {
      {"flush", "flushed"},    {"delete", "deleted"}, {"bounce", "bounced"},
      {"requeue", "requeued"}, {"hold", "held"},      {"release", "released"}};
  for (auto [verb, past] : kWords) {
    if (action == verb) return past;
  }
  return nullptr;
}

bool isAction(const std::string& action) { return pastTense(action) != nullptr; }

// The body of a 200 answer to one request; otherwise the error is printed and nullopt.
std::optional<std::string> answered(const QueueCommand& cmd, const std::string& method,
                                    const std::string& target) {
  Result<HttpAnswer> r = httpRequest(cmd.admin, method, target, cmd.token);
  if (!r) {
    std::fprintf(stderr, "postern: %s\n", r.error().c_str());
    return std::nullopt;
  }
  if (r->status != 200) {
    std::fprintf(stderr, "postern: %s", r->body.c_str());
    return std::nullopt;
  }
  return std::move(r->body);
}

// Actions on a selection that ask first: those that end or stop delivery, and release.
bool asksFirst(const std::string& action) { return action != "flush" && action != "requeue"; }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    if (nl > pos) out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

// An action on every message the selection matches: the count, a confirmation, then one
// request for all of them.
int bulk(const QueueCommand& cmd) {
  QueueSelection selection = cmd.selection;
  if (cmd.action == "release") selection.state = "held";
  const std::optional<std::string> select =
      answered(cmd, "GET", "/queue/select?" + selectionQuery(selection));
  if (!select) return 1;
  const std::vector<std::string> ids = lines(*select);
  if (ids.empty()) {
    std::printf("no queued message matches\n");
    return 0;
  }
  const char* verb = pastTense(cmd.action);
  if (asksFirst(cmd.action) && !cmd.yes) {
    if (!isatty(STDIN_FILENO)) {
      std::fprintf(stderr, "postern: %zu message(s) match; add --yes to %s them\n", ids.size(),
                   cmd.action.c_str());
      return 2;
    }
    std::printf("%s %zu message(s)? [y/N] ", cmd.action.c_str(), ids.size());
    std::fflush(stdout);
    char answer[16] = {};
    if (std::fgets(answer, sizeof answer, stdin) == nullptr ||
        (answer[0] != 'y' && answer[0] != 'Y')) {
      std::printf("nothing %s\n", verb);
      return 1;
    }
  }
  // One request: each worker acts on what matches on its own loop (messages that went
  // meanwhile are not counted; any that came since match too).
  const std::optional<std::string> acted =
      answered(cmd, "POST", "/queue/select/" + cmd.action + "?" + selectionQuery(selection));
  if (!acted) return 1;
  const size_t at = acted->find(':');
  const size_t done =
      at == std::string::npos ? 0 : std::strtoul(acted->c_str() + at + 1, nullptr, 10);
  std::printf("%s %zu of %zu message(s)", verb, done, ids.size());
  if (done < ids.size())
    std::printf(" (%zu delivered, gone or being delivered meanwhile)", ids.size() - done);
  std::printf("\n");
  return done > 0 ? 0 : 1;
}

}  // namespace

int runQueueCommand(const QueueCommand& cmd) {
  const bool acts = isAction(cmd.action);
  if (!cmd.selection.empty() && (!acts || !cmd.id.empty())) {
    std::fprintf(stderr,
                 "postern: --all, --domain, --sender and --older-than go with flush, delete, "
                 "bounce, requeue, hold or release, without a queue id\n");
    return 2;
  }
  if (cmd.body && cmd.action != "show") {
    std::fprintf(stderr, "postern: --body goes with show\n");
    return 2;
  }
  const bool needs_id = cmd.action == "show" || (acts && cmd.action != "flush");
  if (needs_id && cmd.id.empty() && cmd.selection.empty()) {
    std::fprintf(
        stderr, "postern: queue %s needs a queue id%s\n", cmd.action.c_str(),
        cmd.action == "show" ? "" : " or a selection (--all, --domain, --sender, --older-than)");
    return 2;
  }
  if (!cmd.spool_dir.empty()) return offline(cmd);
  if (!cmd.selection.empty()) return bulk(cmd);
  std::string method = "GET";
  std::string target;
  const std::string format = cmd.json ? "" : "?format=text";
  if (cmd.action == "list") {
    target = "/queue" + format;
  } else if (cmd.action == "summary") {
    target = "/queue/summary";
  } else if (cmd.action == "quarantine") {
    target = "/queue/quarantine" + format;
  } else if (cmd.action == "show") {
    target = "/queue/" + cmd.id + (cmd.body ? "/body" : format);
  } else if (cmd.action == "flush") {
    method = "POST";
    target = cmd.id.empty() ? "/queue/flush" : "/queue/" + cmd.id + "/flush";
  } else if (acts) {
    method = "POST";
    target = "/queue/" + cmd.id + "/" + cmd.action;
  } else {
    std::fprintf(stderr, "postern: unknown queue action \"%s\"\n", cmd.action.c_str());
    return 2;
  }
  Result<HttpAnswer> answer = httpRequest(cmd.admin, method, target, cmd.token);
  if (!answer) {
    std::fprintf(stderr, "postern: %s\n", answer.error().c_str());
    return 1;
  }
  const int status = answer->status;
  const std::string& body = answer->body;
  if (status == 404 && method == "POST") {
    std::fprintf(stderr, "postern: nothing to %s for %s (unknown id, or being delivered now)\n",
                 cmd.action.c_str(), cmd.id.empty() ? "the queue" : cmd.id.c_str());
    return 1;
  }
  if (status == 200 && method == "POST" && !cmd.json) {
    // {"jobs":N}: said in words unless --json.
    const size_t at = body.find(':');
    const long jobs = at == std::string::npos ? 0 : std::atol(body.c_str() + at + 1);
    std::printf("%s: %ld delivery job(s)\n", pastTense(cmd.action), jobs);
    return 0;
  }
  if (status == 200 && cmd.body) {
    std::fwrite(body.data(), 1, body.size(), stdout);  // may hold NUL octets (BINARYMIME)
    return 0;
  }
  std::fputs(body.c_str(), status == 200 ? stdout : stderr);
  return status == 200 ? 0 : 1;
}

}  // namespace postern
