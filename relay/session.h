// Session: one inbound SMTP connection and its state machine (RFC 5321 §4.1, §4.3).
//
// Input is read into the session's InputBuffer and split into lines in place; every
// complete line in a read is handled before the replies go out, so the replies to a
// pipelined group (RFC 2920) leave in one write. After end-of-data the session pauses
// (stops reading and parsing) until the spool has fsynced the message, then answers
// 250, or 452 4.3.1 if the spool failed, and resumes with whatever the client had
// already pipelined.
//
// Lifetime: the session owns its TCP and timer handles and is deleted only when both
// have closed and no spool commit still refers to it. close() may be called from any
// callback; every callback checks closing_ first.
#pragma once

#include <uv.h>

#include <string>
#include <vector>

#include "core/input_buffer.h"
#include "core/line_splitter.h"
#include "core/network.h"
#include "core/smtp_command.h"
#include "queue/spool.h"

namespace postern {

class Worker;

class Session {
 public:
  // Accepts the pending connection on server. Never throws; on failure nothing remains.
  static void accept(Worker& worker, uv_stream_t* server);

  // Worker is draining: 421 and close, or after the pending commit's reply.
  void shutdown();

 private:
  enum class State { kConnected, kReady, kMail, kRcpt, kData, kCommit };
  enum class DataError { kNone, kTooBig, kLineTooLong, kBareLf, kBareCr };

  explicit Session(Worker& worker);
  ~Session();

  void start();
  void close();
  void unref();

  void processInput();
  void handleCommand(const Line& line);
  void handleData(const Line& line);

  void cmdHelo(const Command& cmd, bool esmtp);
  void cmdMail(const Command& cmd);
  void cmdRcpt(const Command& cmd);
  void cmdData(const Command& cmd);
  void endData();
  void onCommitted(bool ok, const StoredRef& ref);

  void resetTransaction();
  void reply(int code, std::string_view enhanced, std::string_view text);
  void error(int code, std::string_view enhanced, std::string_view text);
  void flushOutput();
  void closeAfterFlush();
  void armTimer();
  void pauseReading();
  void resumeReading();

  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onWriteDone(void* ctx, int status);
  static void onTimeout(uv_timer_t* t);
  static void onClose(uv_handle_t* h);

  Worker& worker_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  int refs_ = 0;  // open handles + writes and commits in flight
  int writes_pending_ = 0;
  bool closing_ = false;
  bool close_after_flush_ = false;
  bool reading_ = false;
  bool counted_ = false;  // holds a slot in the worker's connection accounting

  IpAddress client_;
  std::string client_text_;
  bool relay_client_ = false;

  InputBuffer in_;
  LineSplitter splitter_;
  std::string out_;
  size_t errors_ = 0;

  State state_ = State::kConnected;
  std::string helo_;
  bool esmtp_ = false;
  std::string sender_;
  std::vector<std::string> recipients_;
  bool rcpt_rejected_ = false;  // some RCPT failed (for the DATA reply when none passed)

  // DATA
  uint64_t queue_id_ = 0;
  std::string body_;
  size_t body_size_ = 0;  // client octets counted against the size limit
  bool prev_crlf_ = true;
  DataError data_error_ = DataError::kNone;
};

}  // namespace postern
