// SinkSession: one inbound SMTP connection of the sink (RFC 5321, RFC 2920 server side).
//
// Accepts any envelope. Every complete line in a read is processed before anything is
// written, so the replies to a pipelined group leave in one write. DATA is read line by
// line as views into the InputBuffer, unstuffed and fed to a MessageVerifier; the message
// ends at CRLF.CRLF only. A command line past the bound gets 500 5.5.2, a data line past
// it marks the message damaged (counted corrupt). The session is freed only in its close
// callback; anything the peer does wrong ends in a reply or a close, never a crash.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "bench/load_message.h"
#include "core/input_buffer.h"
#include "core/line_splitter.h"

namespace postern {

class Sink;

class SinkSession {
 public:
  explicit SinkSession(Sink& sink);
  SinkSession(const SinkSession&) = delete;
  SinkSession& operator=(const SinkSession&) = delete;

  // Accepts the pending connection on server and starts the dialogue. On failure the
  // session closes itself (and is freed by its close callback).
  bool start(uv_stream_t* server);
  void close();

 private:
  enum class State : uint8_t { kCommand, kData, kQuit };

  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onClose(uv_handle_t* h);
  static void onWritten(void* ctx, int status);

  void onCommand(const Line& line);
  void onDataLine(const Line& line);
  void endOfMessage();
  void resetTransaction();
  void flush();
  void afterLastWrite();

  Sink& sink_;
  uv_tcp_t tcp_{};
  bool closing_ = false;
  State state_ = State::kCommand;
  InputBuffer in_{64 * 1024};
  LineSplitter splitter_;
  std::string out_;
  bool mail_ = false;
  int rcpts_ = 0;
  bool prev_crlf_ = true;  // the previous DATA line ended in CRLF (for CRLF.CRLF)
  bool finish_run_ = false;
  uint64_t messages_ = 0;
  MessageVerifier verifier_;
};

}  // namespace postern
