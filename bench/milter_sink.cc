// postern-milter-sink: an accept-everything milter (Sendmail milter protocol v6) for
// benchmarks. bench/milter.sh puts it behind the relay to measure what the milter round
// trips themselves cost Postern, with a filter that spends next to nothing per step: a real
// filter (a spam scanner, DKIM verifier) would add its own work on top.
//
// Usage: postern-milter-sink --listen HOST:PORT
//
// One thread, one libuv loop, any number of connections (one per SMTP session). It
// negotiates version 6 with no actions and protocol 0, so that it is sent every step and
// must answer each: CONTINUE to every command but MACRO, ABORT and QUIT-NC (no answer) and
// QUIT (closes the connection). Prints "listening" on stdout once bound; exits 0 on
// SIGTERM or SIGINT. A bad packet length closes that connection.
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "core/milter_protocol.h"
#include "core/network.h"

namespace {

namespace milter = postern::milter;

struct Connection {
  uv_tcp_t tcp;
  milter::MilterReader reader;
  char buffer[64 * 1024];
};

struct Write {
  uv_write_t req;
  std::string bytes;
};

void onClosed(uv_handle_t* h) { delete static_cast<Connection*>(h->data); }

void closeConnection(Connection* c) {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&c->tcp))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), onClosed);
  }
}

// The answer to one command ("" for none); false: close the connection after the answers.
bool answer(const milter::Packet& p, std::string& out) {
  switch (p.code) {
    case milter::kOptionNegotiation:
      out += milter::encodeOptions(milter::kVersion, 0, 0);
      return true;
    case milter::kMacro:
    case milter::kAbort:
    case milter::kQuitNewConnection:
      return true;
    case milter::kQuit:
      return false;
    default:  // CONNECT, HELO, MAIL, RCPT, DATA, HEADER, EOH, BODY, EOB, UNKNOWN
      out += milter::encode(milter::kContinue);
      return true;
  }
}

void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(s->data);
  if (nread < 0) return closeConnection(c);  // EOF or error
  c->reader.feed(std::string_view(buf->base, static_cast<size_t>(nread)));
  std::string out;
  bool keep = true;
  milter::Packet p;
  milter::MilterReader::Status st = milter::MilterReader::Status::kNeedMore;
  while (keep && (st = c->reader.next(p)) == milter::MilterReader::Status::kPacket) {
    keep = answer(p, out);
  }
  if (keep && st == milter::MilterReader::Status::kBad) {
    std::fprintf(stderr, "postern-milter-sink: bad packet length; closing\n");
    keep = false;
  }
  if (!out.empty()) {
    auto* w = new Write{{}, std::move(out)};
    uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    int rc = uv_write(&w->req, s, &b, 1,
                      [](uv_write_t* req, int) { delete reinterpret_cast<Write*>(req); });
    if (rc != 0) {
      delete w;
      keep = false;
    }
  }
  if (!keep) closeConnection(c);  // a queued write is still carried out before the close
}

void onConnection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* c = new Connection;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    return closeConnection(c);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t* h, size_t, uv_buf_t* b) {
        auto* conn = static_cast<Connection*>(h->data);
        *b = uv_buf_init(conn->buffer, sizeof conn->buffer);
      },
      onRead);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--listen") != 0) {
    std::fprintf(stderr, "usage: %s --listen HOST:PORT\n", argv[0]);
    return 2;
  }
  auto addr = postern::parseHostPort(argv[2]);
  if (!addr) {
    std::fprintf(stderr, "postern-milter-sink: expected a numeric HOST:PORT, got %s\n", argv[2]);
    return 2;
  }
  uv_loop_t* loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  int rc = uv_tcp_bind(&server, reinterpret_cast<const sockaddr*>(&*addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&server), 1024, onConnection);
  if (rc != 0) {
    std::fprintf(stderr, "postern-milter-sink: %s: %s\n", argv[2], uv_strerror(rc));
    return 1;
  }
  uv_signal_t term, intr;
  for (auto [h, signum] : {std::pair{&term, SIGTERM}, std::pair{&intr, SIGINT}}) {
    uv_signal_init(loop, h);
    uv_signal_start(
        h, [](uv_signal_t* sig, int) { uv_stop(sig->loop); }, signum);
  }
  std::printf("listening\n");
  std::fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;  // the open connections go with the process
}
