// MilterClient: one session's connection to one milter ([[milter]]), on the worker's loop,
// as Postfix's smtpd keeps one per milter per SMTP session. It connects, negotiates
// (protocol version 6, core/milter_protocol.h) and then carries one step at a time: the
// packets of a step go out, and when the step expects an answer, done() gets the milter's
// final reply, after any modification packets (kept for takeModifications()) and progress
// packets (which restart the timeout, up to kMaxProgressTimeouts for one step).
//
// A milter is input from outside: an answer that is not of its step's shape, a packet
// over the codec's bound, silence past the timeout or a closed connection make the
// client failed (done gets kFailed once, and every later send() answers kFailed at once);
// the session applies the milter's default_action.
//
// Lifetime: made with new, owned by a MilterChain; detach() ends it (no callback after it),
// and it deletes itself once its handles have closed.
#pragma once

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/milter_protocol.h"

namespace postern {

struct MilterReply {
  enum class Kind { kContinue, kAccept, kReject, kTempfail, kDiscard, kSkip, kReplyCode, kFailed };
  Kind kind = Kind::kFailed;
  milter::ReplyCode reply;  // kReplyCode
  std::string why;          // kFailed: what went wrong, for the log
};

class MilterClient {
 public:
  using Done = std::function<void(const MilterReply&)>;
  // What Postern offers in the negotiation.
  static constexpr uint32_t kActions =
      milter::kActAddHeaders | milter::kActChangeBody | milter::kActAddRcpt | milter::kActDelRcpt |
      milter::kActChangeHeaders | milter::kActQuarantine | milter::kActChangeFrom |
      milter::kActAddRcptPar | milter::kActSetSymbolList;
  static constexpr uint32_t kProtocol =
      milter::kNoConnect | milter::kNoHelo | milter::kNoMail | milter::kNoRcpt | milter::kNoBody |
      milter::kNoHeaders | milter::kNoEndOfHeaders | milter::kNoReplyHeader | milter::kNoUnknown |
      milter::kNoData | milter::kSkipOk | milter::kNoReplyConnect | milter::kNoReplyHelo |
      milter::kNoReplyMail | milter::kNoReplyRcpt | milter::kNoReplyData | milter::kNoReplyUnknown |
      milter::kNoReplyEndOfHeaders | milter::kNoReplyBody;
  // Bound on the modification packets one message may collect (their data besides).
  static constexpr size_t kMaxModifications = 10000;
  // Progress packets may stretch one step to this many timeouts, no further.
  static constexpr uint64_t kMaxProgressTimeouts = 10;

  MilterClient(uv_loop_t* loop, const MilterConfig& config, size_t max_modification_bytes);
  MilterClient(const MilterClient&) = delete;
  MilterClient& operator=(const MilterClient&) = delete;

  // Connects and negotiates; done(kContinue) once ready, or kFailed.
  void open(Done done);
  // Sends packets (already encoded). await: the step expects an answer, which done()
  // gets; otherwise done is not called. False if the client has failed (nothing sent).
  bool send(std::string packets, bool await, Done done);
  bool failed() const { return failed_; }
  const std::string& failure() const { return failure_; }  // why it failed
  const MilterConfig& config() const { return config_; }
  // What the milter agreed to (its OPTNEG answer).
  uint32_t actions() const { return options_.actions; }
  uint32_t protocol() const { return options_.protocol; }
  // The modification packets that came before the last final reply, in order.
  std::vector<milter::Packet> takeModifications();
  // Ends the conversation (QUIT if it is open) without further callbacks; the object
  // deletes itself later.
  void detach();

 private:
  ~MilterClient() = default;
  void fail(std::string why);
  void write(std::string bytes);
  void arm();
  uint64_t timeoutMs() const;
  void onPacket(milter::Packet& p);
  void closeHandles();
  void maybeDelete();
  uv_stream_t* stream();

  static void onConnect(uv_connect_t* req, int status);
  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onTimeout(uv_timer_t* t);
  static void onClosed(uv_handle_t* h);

  uv_loop_t* loop_;
  const MilterConfig config_;
  const size_t max_modification_bytes_;
  uv_tcp_t tcp_{};
  uv_pipe_t pipe_{};
  uv_timer_t timer_{};
  uv_connect_t connect_{};
  int handles_ = 0;  // open handles (stream and timer)
  bool negotiating_ = false;
  bool awaiting_ = false;  // a step's answer is owed
  bool failed_ = false;
  std::string failure_;
  bool detached_ = false;
  bool closing_ = false;
  uint64_t step_started_ = 0;  // loop time the awaited step was sent
  Done done_;
  milter::MilterReader reader_;
  char read_buffer_[16 * 1024];
  milter::Options options_;
  std::vector<milter::Packet> modifications_;
  size_t modification_bytes_ = 0;
};

}  // namespace postern
