#include "relay/admin.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/network.h"
#include "core/smtp_command.h"
#include "core/version.h"
#include "relay/admin_token.h"
#include "relay/queue_selection.h"
#include "relay/worker.h"

namespace postern {
namespace {

constexpr size_t kMaxRequest = 8192;
constexpr uint64_t kReadTimeoutMs = 5000;
constexpr uint64_t kWorkerTimeoutMs = 2000;

struct Family {
  const char* name;
  const char* type;
  const char* help;
};

constexpr Family kFamilies[] = {
    {"postern_build_info", "gauge",
     "Always 1; its labels say what runs: version, revision (git describe), openssl, libuv."},
    {"postern_connections_total", "counter", "SMTP connections accepted."},
    {"postern_sessions", "gauge", "Open SMTP sessions by state."},
    {"postern_messages_accepted_total", "counter", "Messages acknowledged with 250 (spooled)."},
    {"postern_message_bytes_accepted_total", "counter", "Bytes of messages acknowledged."},
    {"postern_messages_rejected_total", "counter",
     "Messages refused at their end: size, line_too_long, bare_lf, bare_cr, storage."},
    {"postern_replies_rejected_total", "counter",
     "4xx and 5xx replies to clients by enhanced status code."},
    {"postern_recipients_total", "counter",
     "Delivery results per recipient: delivered, deferred, bounced, expired."},
    {"postern_queue_jobs", "gauge", "Queued delivery jobs by state."},
    {"postern_queue_oldest_age_seconds", "gauge", "Age of the oldest queued message."},
    {"postern_spool_bytes", "gauge", "Bytes in spool segment files."},
    {"postern_spool_segments", "gauge", "Spool segment files."},
    {"postern_spool_write_failing", "gauge", "1 when the latest spool write failed."},
    {"postern_spool_quarantined_bytes_total", "counter",
     "Damaged spool octets copied to the quarantine at start (each record lost is in it)."},
    {"postern_spool_fsync_seconds", "histogram", "Time of one group commit (writev+fdatasync)."},
    {"postern_delivery_seconds", "histogram", "Outbound SMTP transaction time by next hop."},
    {"postern_spool_free_bytes", "gauge",
     "Free space on the spool's file system, as an unprivileged writer may use it."},
    {"postern_config_reloads_total", "counter", "SIGHUP reloads by result: ok, failed."},
    {"postern_config_loaded_timestamp_seconds", "gauge",
     "When the running configuration was loaded (start or reload), in Unix seconds."},
    {"postern_tls_handshake_failures_total", "counter", "Inbound TLS handshakes that failed."},
    {"postern_auth_total", "counter", "SMTP AUTH attempts by result: ok, failed."},
    {"postern_dkim_signatures_total", "counter",
     "DKIM signatures by result: signed (a field added), failed (a key that could not sign)."},
    {"postern_milter_actions_total", "counter",
     "What milters did besides continue: reject, tempfail, discard, quarantine, failed."},
    {"postern_dns_lookups_total", "counter",
     "Next hops' DNS lookups (MX or host) by result: ok, temporary, permanent."},
    {"postern_outbound_connections_total", "counter",
     "Outbound connections opened, by result: ready (for mail) or failed (before that)."},
    {"postern_outbound_connections_open", "gauge",
     "Open outbound connections by state: opening, idle, busy, closing."},
    {"postern_outbound_tls_policy_total", "counter",
     "Outbound connections by TLS policy applied and result (ok, failed)."},
    {"postern_outbound_tls_failures_total", "counter", "Outbound STARTTLS handshakes that failed."},
    {"process_resident_memory_bytes", "gauge", "Resident memory."},
    {"process_open_fds", "gauge", "Open file descriptors."},
    {"process_max_fds", "gauge", "The open file descriptor limit (RLIMIT_NOFILE)."},
    {"process_cpu_seconds_total", "counter", "User and system CPU time."},
    {"process_start_time_seconds", "gauge", "Start time in Unix seconds."},
    {"postern_body_pieces_read_total", "counter",
     "Message body pieces (64 KiB) read for delivery: at once from the page cache (cache) or "
     "on the thread pool (pool)."},
};

// The queue actions on one message by id (POST /queue/ID/ACTION and the selections).
bool isQueueAction(const std::string& a) {
  return a == "flush" || a == "delete" || a == "bounce" || a == "requeue" || a == "hold" ||
         a == "release";
}

// Does action on message id on worker w (its loop): done(jobs, ok) now, or once the spool
// has made a hold or release durable.
void actOn(Worker& w, const std::string& action, uint64_t id,
           std::function<void(size_t jobs, bool ok)> done) {
  Delivery& d = w.delivery();
  if (action == "hold") return d.hold(id, std::move(done));
  if (action == "release") return d.release(id, std::move(done));
  const size_t jobs = action == "flush"    ? d.flush(id)
                      : action == "delete" ? d.remove(id)
                      : action == "bounce" ? d.bounceNow(id)
                                           : d.requeue(id);
  done(jobs, true);
}

std::string notDurable(const std::string& action) {
  const bool hold = action == "hold";
  return std::string(hold ? "held" : "released") +
         ", but not durably: a marker in the spool's hold directory could not be " +
         (hold ? "made" : "removed") + " (log: hold_marker_failed); a restart undoes it\n";
}

std::string buildInfo() {
  return "postern_build_info{version=\"" + promEscape(kVersion) + "\",revision=\"" +
         promEscape(kRevision) + "\",openssl=\"" + promEscape(opensslVersion()) + "\",libuv=\"" +
         promEscape(libuvVersion()) + "\"} 1\n";
}

// The token of an "Authorization: Bearer T" header line in a request head; "" if none.
std::string_view bearerToken(std::string_view head) {
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    pos += 2;
    size_t end = head.find("\r\n", pos);
    std::string_view line = head.substr(pos, end == std::string_view::npos ? end : end - pos);
    constexpr std::string_view kName = "authorization:";
    if (line.size() > kName.size() && equalsIgnoreCase(line.substr(0, kName.size()), kName)) {
      std::string_view v = line.substr(kName.size());
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      if (v.size() > 7 && equalsIgnoreCase(v.substr(0, 7), "bearer ")) return v.substr(7);
      return {};
    }
    pos = end;
  }
  return {};
}

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    default:
      return "Service Unavailable";
  }
}

}  // namespace

std::string renderMetrics(const std::vector<std::string>& per_worker) {
  std::map<std::string, std::string> lines;
  for (const std::string& text : per_worker) {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t tab = text.find('\t', pos);
      size_t nl = text.find('\n', pos);
      if (tab == std::string::npos || nl == std::string::npos || tab > nl) break;
      lines[text.substr(pos, tab - pos)] += text.substr(tab + 1, nl - tab);
      pos = nl + 1;
    }
  }
  lines["postern_build_info"] = buildInfo();  // the process's, not a worker's
  std::string out;
  for (const Family& f : kFamilies) {
    out += std::string("# HELP ") + f.name + " " + f.help + "\n";
    out += std::string("# TYPE ") + f.name + " " + f.type + "\n";
    out += lines[f.name];
  }
  return out;
}

struct Admin::Gather {
  std::vector<WorkerAnswer> answers;  // guarded by Shared::m until complete
  size_t remaining = 0;
  Finish finish;
  Conn* conn = nullptr;
  bool done = false;  // admin loop only: answered, or timed out
};

struct Admin::Shared {
  std::mutex m;
  bool open = true;
  uv_async_t async;
  std::vector<std::shared_ptr<Gather>> completed;
};

struct Admin::Conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  Admin* admin;
  std::optional<IpAddress> peer;
  std::string in;
  std::string out;
  uv_write_t write;
  std::shared_ptr<Gather> gather;
  bool responded = false;
  int handles = 2;

  void respond(int status, const std::string& type, const std::string& body) {
    if (responded) return;
    responded = true;
    uv_timer_stop(&timer);
    if (gather) gather->done = true;
    out = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
          "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
          "\r\nConnection: close\r\n\r\n" + body;
    uv_buf_t buf = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
    write.data = this;
    if (uv_write(&write, reinterpret_cast<uv_stream_t*>(&tcp), &buf, 1,
                 [](uv_write_t* w, int) { static_cast<Conn*>(w->data)->close(); }) != 0) {
      close();
    }
  }
  void text(int status, const std::string& body) {
    respond(status, "text/plain; charset=utf-8", body);
  }
  void close() {
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp))) return;
    if (gather) gather->done = true;
    auto done = [](uv_handle_t* h) {
      auto* c = static_cast<Conn*>(h->data);
      if (--c->handles == 0) {
        c->admin->conns_.erase(c);
        delete c;
      }
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), done);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), done);
  }
};

Admin::Admin(uv_loop_t* loop, std::string address, std::vector<Network> queue_networks,
             std::string token, std::string spool_dir, std::vector<Worker*> workers,
             std::function<bool()> draining, std::function<std::string()> process_metrics)
    : loop_(loop),
      address_(std::move(address)),
      queue_networks_(std::move(queue_networks)),
      token_(std::move(token)),
      spool_dir_(std::move(spool_dir)),
      workers_(std::move(workers)),
      draining_(std::move(draining)),
      process_metrics_(std::move(process_metrics)),
      shared_(std::make_shared<Shared>()) {}

Admin::~Admin() = default;

Status Admin::start() {
  const std::optional<sockaddr_storage> addr = parseHostPort(address_);
  if (!addr) return fail("admin.address \"" + address_ + "\" is not ip:port");
  uv_async_init(loop_, &shared_->async, onAsync);
  shared_->async.data = this;
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  listening_ = true;
  int rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&*addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 64, onConnection);
  if (rc != 0) return fail("admin " + address_ + ": " + uv_strerror(rc));
  logEvent(spdlog::level::info, "admin_listening", {{"address", address_}});
  return {};
}

void Admin::close() {
  if (!listening_) return;
  listening_ = false;
  {
    std::lock_guard<std::mutex> lock(shared_->m);
    shared_->open = false;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  // Every worker has drained: a request still open (one that never came whole, or an
  // answer still being written) is not waited for.
  for (Conn* c : conns_) c->close();
  // The async lives in Shared, which late worker tasks may still hold: keep it alive
  // until libuv is done with the handle.
  shared_->async.data = new std::shared_ptr<Shared>(shared_);
  uv_close(reinterpret_cast<uv_handle_t*>(&shared_->async),
           [](uv_handle_t* h) { delete static_cast<std::shared_ptr<Shared>*>(h->data); });
}

void Admin::onConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<Admin*>(server->data);
  if (status < 0 || !self->listening_) return;
  auto* c = new Conn;
  c->admin = self;
  self->conns_.insert(c);
  uv_tcp_init(self->loop_, &c->tcp);
  uv_timer_init(self->loop_, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) return c->close();
  sockaddr_storage peer{};
  int len = sizeof peer;
  if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    c->peer = IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&peer));
  }
  uv_timer_start(
      &c->timer, [](uv_timer_t* t) { static_cast<Conn*>(t->data)->text(503, "timeout\n"); },
      kReadTimeoutMs, 0);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static thread_local char scratch[4096];
        *buf = uv_buf_init(scratch, sizeof scratch);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        auto* c = static_cast<Conn*>(s->data);
        if (n < 0) return c->close();
        if (c->responded) return;
        c->in.append(buf->base, static_cast<size_t>(n));
        size_t end = c->in.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (c->in.size() > kMaxRequest) c->text(413, "request too large\n");
          return;
        }
        uv_read_stop(s);
        // "METHOD SP target SP HTTP/x.y"
        std::string line = c->in.substr(0, c->in.find("\r\n"));
        size_t sp1 = line.find(' ');
        size_t sp2 = line.rfind(' ');
        if (sp1 == std::string::npos || sp2 == sp1) return c->text(400, "bad request\n");
        c->admin->handle(c, line.substr(0, sp1), line.substr(sp1 + 1, sp2 - sp1 - 1));
      });
}

void Admin::handle(Conn* c, const std::string& method, const std::string& full_target) {
  std::string target = full_target;
  std::string query;
  if (size_t q = target.find('?'); q != std::string::npos) {
    query = target.substr(q + 1);
    target.resize(q);
  }
  const bool as_text = query == "format=text";
  const bool get = method == "GET";
  const bool post = method == "POST";

  if (target == "/queue" || target.starts_with("/queue/")) {
    const bool allowed =
        c->peer && std::any_of(queue_networks_.begin(), queue_networks_.end(),
                               [&](const Network& n) { return n.contains(*c->peer); });
    if (!allowed) return c->text(403, "the queue API answers only admin.queue_networks\n");
    if (!adminTokenMatches(token_, bearerToken(c->in))) {
      return c->text(401, "the queue API needs its bearer token (admin.token_file)\n");
    }
  }
  if (target == "/healthz") {
    if (!get) return c->text(405, "GET only\n");
    // Answered from every worker's loop: one that does not turn within kWorkerTimeoutMs
    // (stuck in a call, spinning) makes it 503, and the orchestrator restarts the process.
    return askWorkers(
        c, [](Worker&, WorkerAnswer&) {},
        [c](std::vector<WorkerAnswer>&) { c->text(200, "ok\n"); });
  }
  if (target == "/readyz") {
    if (!get) return c->text(405, "GET only\n");
    if (draining_()) return c->text(503, "draining\n");
    return askWorkers(
        c, [](Worker& w, WorkerAnswer& a) { a.spool_ok = !w.spool().writeFailing(); },
        [c](std::vector<WorkerAnswer>& all) {
          bool ok = std::all_of(all.begin(), all.end(), [](auto& a) { return a.spool_ok; });
          c->text(ok ? 200 : 503, ok ? "ready\n" : "spool unwritable\n");
        });
  }
  if (target == "/metrics") {
    if (!get) return c->text(405, "GET only\n");
    return askWorkers(
        c, [](Worker& w, WorkerAnswer& a) { a.text = w.metricsText(); },
        [this, c](std::vector<WorkerAnswer>& all) {
          std::vector<std::string> texts;
          if (process_metrics_) texts.push_back(process_metrics_());
          for (auto& a : all) texts.push_back(std::move(a.text));
          c->respond(200, "text/plain; version=0.0.4; charset=utf-8", renderMetrics(texts));
        });
  }
  if (target == "/queue" || target == "/queue/summary") {
    if (!get) return c->text(405, "GET only\n");
    const bool summary = target == "/queue/summary";
    return askWorkers(
        c, [](Worker& w, WorkerAnswer& a) { a.entries = w.delivery().queueEntries(); },
        [c, summary, as_text, spool_dir = spool_dir_](std::vector<WorkerAnswer>& all) {
          std::vector<QueueEntry> entries;
          for (auto& a : all) {
            for (auto& e : a.entries) entries.push_back(std::move(e));
          }
          std::sort(entries.begin(), entries.end(),
                    [](auto& a, auto& b) { return a.received_ms < b.received_ms; });
          if (summary) {
            return c->text(200, queueSummary(entries, unixMillis()) +
                                    quarantineSummary(listQuarantine(spool_dir)));
          }
          if (as_text) return c->text(200, queueText(entries, unixMillis()));
          c->respond(200, "application/json", queueJson(entries));
        });
  }
  if (target == "/queue/quarantine") {
    if (!get) return c->text(405, "GET only\n");
    // Read here on the admin loop, not asked of the workers: only directory listings and
    // lstat()s, bounded (queue/quarantine_list.h), and no worker state is involved.
    const QuarantineListing q = listQuarantine(spool_dir_);
    if (as_text) return c->text(200, quarantineText(q));
    return c->respond(200, "application/json", quarantineJson(q));
  }
  if (target == "/queue/select") {
    if (!get) return c->text(405, "GET only\n");
    Result<QueueSelection> selection = parseSelection(query);
    if (!selection) return c->text(400, selection.error() + "\n");
    if (selection->empty()) return c->text(400, "select all=1 or by domain, sender, older_than\n");
    return askWorkers(
        c, [](Worker& w, WorkerAnswer& a) { a.entries = w.delivery().queueEntries(); },
        [c, s = *selection](std::vector<WorkerAnswer>& all) {
          // One line per message: its jobs (one per next hop) share the id.
          std::set<std::string> ids;
          const int64_t now = unixMillis();
          for (auto& a : all) {
            for (auto& e : a.entries) {
              if (s.matches(e, now)) ids.insert(e.id);
            }
          }
          std::string out;
          for (const std::string& id : ids) out += id + "\n";
          c->text(200, out);
        });
  }
  if (target.starts_with("/queue/select/")) {
    // An action on every message the selection matches, decided on each worker's loop.
    if (!post) return c->text(405, "POST only\n");
    const std::string action = target.substr(14);
    if (!isQueueAction(action)) return c->text(404, "unknown action\n");
    Result<QueueSelection> selection = parseSelection(query);
    if (!selection) return c->text(400, selection.error() + "\n");
    if (selection->empty()) return c->text(400, "an empty selection: give all=1 or criteria\n");
    return askWorkersLater(
        c,
        [action, s = *selection](Worker& w, Reply reply) {
          std::set<uint64_t> ids;
          const int64_t now = unixMillis();
          for (const QueueEntry& e : w.delivery().queueEntries()) {
            if (s.matches(e, now)) ids.insert(parseQueueId(e.id).value_or(0));
          }
          ids.erase(0);
          // Every id's answer (hold and release come after a spool write) is gathered here.
          struct Tally {
            size_t left, acted = 0;
            bool ok = true;
            Reply reply;
          };
          auto tally = std::make_shared<Tally>(Tally{ids.size(), 0, true, std::move(reply)});
          auto finish = [tally] {
            WorkerAnswer a;
            a.count = tally->acted;
            a.spool_ok = tally->ok;
            tally->reply(std::move(a));
          };
          if (ids.empty()) return finish();
          for (uint64_t id : ids) {
            actOn(w, action, id, [tally, finish](size_t jobs, bool ok) {
              tally->acted += jobs > 0;
              tally->ok = tally->ok && ok;
              if (--tally->left == 0) finish();
            });
          }
        },
        [c, action](std::vector<WorkerAnswer>& all) {
          answerAction(c, action, all, "messages", 200);
        });
  }
  if (target == "/queue/flush") {
    if (!post) return c->text(405, "POST only\n");
    return askWorkers(
        c, [](Worker& w, WorkerAnswer& a) { a.count = w.delivery().flush(0); },
        [c](std::vector<WorkerAnswer>& all) {
          size_t n = 0;
          for (auto& a : all) n += a.count;
          c->respond(200, "application/json", "{\"jobs\":" + std::to_string(n) + "}\n");
        });
  }
  if (target.starts_with("/queue/")) {
    std::string rest = target.substr(7);
    std::string action;
    if (size_t slash = rest.find('/'); slash != std::string::npos) {
      action = rest.substr(slash + 1);
      rest.resize(slash);
    }
    const std::optional<uint64_t> parsed = parseQueueId(rest);
    if (!parsed) return c->text(404, "no such queue id\n");
    const uint64_t id = *parsed;
    if (action.empty()) {
      if (!get) return c->text(405, "GET only\n");
      const std::string want = queueIdString(id);
      return askWorkers(
          c, [](Worker& w, WorkerAnswer& a) { a.entries = w.delivery().queueEntries(); },
          [c, want, as_text](std::vector<WorkerAnswer>& all) {
            std::vector<QueueEntry> found;
            for (auto& a : all) {
              for (auto& e : a.entries) {
                if (e.id == want) found.push_back(std::move(e));
              }
            }
            if (found.empty()) return c->text(404, "no such queue id\n");
            if (as_text) {
              std::string out;
              for (auto& e : found) out += queueEntryText(e, unixMillis());
              return c->text(200, out);
            }
            c->respond(200, "application/json", queueJson(found));
          });
    }
    if (action == "body") {
      if (!get) return c->text(405, "GET only\n");
      return askWorkers(
          c,
          [id](Worker& w, WorkerAnswer& a) {
            if (auto at = w.delivery().bodyLocation(id)) {
              a.body_path = at->path;
              a.body_offset = at->offset;
              a.body_size = at->size;
            }
          },
          [this, c](std::vector<WorkerAnswer>& all) { sendBody(c, all); });
    }
    if (!post) return c->text(405, "POST only\n");
    if (!isQueueAction(action)) return c->text(404, "unknown action\n");
    return askWorkersLater(
        c,
        [id, action](Worker& w, Reply reply) {
          actOn(w, action, id, [reply](size_t jobs, bool ok) {
            WorkerAnswer a;
            a.count = jobs;
            a.spool_ok = ok;
            reply(std::move(a));
          });
        },
        [c, action](std::vector<WorkerAnswer>& all) {
          // Nothing matched: unknown, already gone, or on a connection right now: 404.
          answerAction(c, action, all, "jobs", 404);
        });
  }
  c->text(404, "not found\n");
}

// The workers' answers to a queue action summed up: {"KEY":N}, or none_status when N is 0,
// or 500 when a hold or release was not made durable.
void Admin::answerAction(Conn* c, const std::string& action, std::vector<WorkerAnswer>& all,
                         const char* key, int none_status) {
  size_t n = 0;
  bool ok = true;
  for (auto& a : all) {
    n += a.count;
    ok = ok && a.spool_ok;
  }
  if (!ok) return c->text(500, notDurable(action));
  c->respond(n ? 200 : none_status, "application/json",
             std::string("{\"") + key + "\":" + std::to_string(n) + "}\n");
}

void Admin::askWorkers(Conn* c, Ask ask, Finish finish) {
  askWorkersLater(
      c,
      [ask = std::move(ask)](Worker& w, Reply reply) {
        WorkerAnswer a;
        ask(w, a);
        reply(std::move(a));
      },
      std::move(finish));
}

void Admin::askWorkersLater(Conn* c, AskLater ask, Finish finish) {
  auto g = std::make_shared<Gather>();
  g->answers.resize(workers_.size());
  g->remaining = workers_.size();
  g->finish = std::move(finish);
  g->conn = c;
  c->gather = g;
  uv_timer_start(
      &c->timer, [](uv_timer_t* t) { static_cast<Conn*>(t->data)->text(503, "workers busy\n"); },
      kWorkerTimeoutMs, 0);
  std::shared_ptr<Shared> shared = shared_;
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker* w = workers_[i];
    bool posted = w->post([shared, g, i, ask, w] {
      ask(*w, [shared, g, i](WorkerAnswer a) {
        std::lock_guard<std::mutex> lock(shared->m);
        g->answers[i] = std::move(a);
        if (--g->remaining == 0 && shared->open) {
          shared->completed.push_back(g);
          uv_async_send(&shared->async);
        }
      });
    });
    if (!posted) return c->text(503, "draining\n");
  }
}

void Admin::sendBody(Conn* c, const std::vector<WorkerAnswer>& all) {
  for (const WorkerAnswer& a : all) {
    if (a.body_path.empty()) continue;
    // The size is the spool's own record of a message it took, so bounded by
    // limits.max_message_size; the segment may have been deleted since (delivered).
    std::string body(a.body_size, '\0');
    int fd = ::open(a.body_path.c_str(), O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    while (fd >= 0 && got < body.size()) {
      ssize_t n = ::pread(fd, body.data() + got, body.size() - got,
                          static_cast<off_t>(a.body_offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    if (fd >= 0) ::close(fd);
    if (got != body.size()) return c->text(404, "no such queue id (delivered meanwhile)\n");
    return c->respond(200, "message/rfc822", body);
  }
  c->text(404, "no such queue id\n");
}

void Admin::onAsync(uv_async_t* h) {
  auto* self = static_cast<Admin*>(h->data);
  std::vector<std::shared_ptr<Gather>> done;
  {
    std::lock_guard<std::mutex> lock(self->shared_->m);
    done.swap(self->shared_->completed);
  }
  for (auto& g : done) {
    if (g->done) continue;
    g->done = true;
    g->finish(g->answers);
  }
}

}  // namespace postern
