// Session: one inbound SMTP connection and its state machine (RFC 5321 §4.1, §4.3), with
// PIPELINING (RFC 2920), CHUNKING (RFC 3030), STARTTLS (RFC 3207) or TLS from the start
// (RFC 8314), SMTPUTF8 (RFC 6531), DSN parameters (RFC 3461), AUTH (RFC 4954,
// session_auth.cc), DKIM signing of its clients' mail (session_data.cc) and the PROXY
// protocol.
//
// Input is read into the session's InputBuffer (through a TlsStream when active) and split into
// lines in place; every complete line in a read is handled before the replies go out, so
// the replies to a pipelined group leave in one write. After the end of a message the
// session pauses (stops reading and parsing) until the spool has fsynced it, then answers
// 250, or 452 4.3.1 if the spool failed, and resumes with whatever the client had already
// pipelined.
//
// Timeouts are deadlines for progress: a complete line (or BDAT chunk data) must arrive
// within command_timeout (data_timeout inside a message); bytes that never make a line do
// not reset it, so a client trickling one byte at a time is still cut off.
//
// Lifetime: the session owns its TCP and timer handles and is deleted only when both
// have closed and no write or spool commit still refers to it. close() may be called from
// any callback; every callback checks closing_ first.
#pragma once

#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/credentials.h"
#include "core/data_reader.h"
#include "core/dkim.h"
#include "core/input_buffer.h"
#include "core/line_splitter.h"
#include "core/log.h"
#include "core/network.h"
#include "core/smtp_command.h"
#include "core/tls_stream.h"
#include "queue/envelope.h"
#include "queue/spool.h"
#include "relay/inbound/milter_chain.h"
#include "relay/inbound/session_host.h"

namespace postern {

class Session {
 public:
  // Accepts the pending connection on server. Never throws; on failure nothing remains.
  static void accept(SessionHost& host, const ListenerConfig& listener, uv_stream_t* server);
  // Takes over a socket accepted by another thread (handoff mode).
  static void adopt(SessionHost& host, const ListenerConfig& listener, int fd);

  // The read buffer size for these limits (the worker's BufferPool hands these out).
  static size_t bufferSize(const Limits& limits);

  // Worker is draining: 421 and close. A session in a transaction (MAIL to the end of
  // DATA/BDAT) may finish it first and gets its 250 before the 421, unless force (the
  // drain deadline has passed).
  void shutdown(bool force = false);

  // For metrics: "proxy", "connected", "ready", "mail", "rcpt", "data", "bdat", "commit".
  const char* stateName() const;

 private:
  static constexpr size_t kCipherBuffer = 16 * 1024;
  static constexpr size_t kBodyChargeStep = 16 * 1024;  // see spillIfLarge()
  // Budget charged per envelope address besides its octets: its three strings (address,
  // NOTIFY, ORCPT or sender, RET, ENVID) and their vector slots.
  static constexpr size_t kEnvelopeOverhead = 3 * sizeof(std::string);
  // Replies queued but not taken by the socket: above the high mark the session stops
  // reading (a client that pipelines without reading cannot grow our memory), below the
  // low mark it reads again.
  static constexpr size_t kWriteHighWater = 64 * 1024;
  static constexpr size_t kWriteLowWater = 16 * 1024;

  enum class State { kProxy, kConnected, kReady, kMail, kRcpt, kData, kBdat, kCommit };

  Session(SessionHost& host, const ListenerConfig& listener);
  static Session* create(SessionHost& host, const ListenerConfig& listener);
  ~Session();

  // session.cc: lifecycle, I/O, TLS, timers.
  void start();
  void greet();
  void sendGreeting();  // the 220, or the TLS handshake first for implicit TLS
  void close();
  void unref();
  void processInput();
  bool handleProxyHeader();
  void pumpTls();
  void reply(int code, std::string_view enhanced, std::string_view text);
  // A log line of this session: its id and client first, then fields.
  void log(spdlog::level::level_enum level, std::string_view event,
           std::initializer_list<LogField> fields = {}) const;
  void error(int code, std::string_view enhanced, std::string_view text);
  void flushOutput();
  void sendCipher();
  void closeAfterFlush();
  void progress();
  uint64_t timeoutMs() const;  // the deadline that applies in the current state
  void armDeadline();          // (re)starts the timer for it, counted from the last progress
  void checkWriteBackpressure();
  void pauseReading();
  void resumeReading();

  // session_commands.cc
  void handleCommand(const Line& line);
  void cmdHelo(const Command& cmd, bool esmtp);
  void heloReply();
  void cmdMail(const Command& cmd);
  void cmdRcpt(const Command& cmd);
  void addRecipient(std::string mailbox, std::string notify, std::string orcpt);
  void cmdStartTls(const Command& cmd);
  // A STARTTLS or implicit-TLS stream over the socket (session.cc).
  void startTls();
  // [[recipients]]: true if mailbox may be accepted; else the reply has been given.
  bool recipientExists(const RecipientCheck& check, const std::string& mailbox);
  void resetTransaction();
  // Gives back what this session's envelope and body hold of the worker's MemoryBudget.
  void releaseMemory();

  // session_auth.cc
  enum class AuthStep { kNone, kPlain, kLoginUser, kLoginPassword };
  bool authOffered() const;
  void cmdAuth(const Command& cmd);
  void handleAuthResponse(const Line& line);
  void authResponse(AuthStep step, std::string_view text);
  void checkLogin(const char* mechanism, std::string user, std::string password);
  void checked(const char* mechanism, const std::string& user, bool ok);
  void authFailed(const char* mechanism, const std::string& user, const char* why);
  // Reading and parsing wait: for the spool (kCommit), a password check or the milters.
  bool waiting() const { return state_ == State::kCommit || auth_checking_ || milter_waiting_; }

  // session_data.cc
  void cmdData(const Command& cmd);
  void startData();
  void cmdBdat(const Command& cmd);
  void beginMessage();
  void handleData(const Line& line);
  void takeChunk();
  void finishChunk();
  void endMessage();
  // Moves body_ into the spill file once its footprint reaches limits.message_memory.
  void spillIfLarge();
  // Feeds what body_ holds now to the DKIM hasher (before it moves to a spill or the spool).
  void feedDkim();
  // The DKIM-Signature fields for the message, if its sender may be signed for and its
  // From: domain has keys; "" otherwise. signed_for: what the accepted line says.
  std::string dkimSignatures(std::string& signed_for);
  // The spool's part of the end of a message: DKIM signatures, then the commit.
  void commitMessage();
  void onCommitted(bool ok, const StoredRef& ref);

  // session_milter.cc
  using MilterThen = std::function<void(const MilterVerdict&)>;
  void startMilters();
  // Runs a milter step (ask starts it on milters_); then gets the verdict, at once or once
  // the milters have answered, while reading waits.
  void askMilters(MilterStep step, const std::function<void(MilterChain::Done)>& ask,
                  MilterThen then);
  void milterReply(const MilterVerdict& v);
  MilterChain::Macros milterMacros(MilterStep step) const;
  void milterConnect();
  // The end of a message through the milters (BDAT's data step, then the content), then
  // commitMessage().
  void filterMessage();
  void filtered(const MilterVerdict& v, bool whole_message);
  // The milters' edits applied to the transaction; false if the content could not be
  // written again (storage).
  bool applyEdits(MilterEdits& edits);
  bool rewriteContent(const MilterEdits& edits);
  void refusedHeaderEdit(const milter::Packet& p);
  // The message content so far (spill file, or body_): n octets at offset.
  bool readContent(uint64_t offset, size_t n, std::string& out) const;
  uint64_t contentSize() const;

  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onWriteDone(void* ctx, int status);
  static void onTimeout(uv_timer_t* t);
  static void onHandshakeTurn(void* who);  // HandshakeGate's resume
  static void onClose(uv_handle_t* h);

  SessionHost& host_;
  // The configuration in force when the connection came in; a reload applies to the next
  // connection (a session's rules never change under it).
  const std::shared_ptr<const Config> config_;
  const ListenerConfig& listener_;
  const Limits& limits_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  int refs_ = 0;  // open handles + writes and commits in flight
  int writes_pending_ = 0;
  bool closing_ = false;
  bool close_after_flush_ = false;
  bool reading_ = false;
  bool write_blocked_ = false;  // reading paused until queued replies drain
  bool counted_ = false;        // holds a slot in the worker's connection accounting
  uint64_t last_progress_ = 0;
  uint64_t armed_limit_ = 0;   // the limit the timer was last armed with
  uint64_t connected_at_ = 0;  // loop time of the greeting

  IpAddress client_;
  uint16_t client_port_ = 0;
  std::string client_text_;
  std::string id_;  // in every log line of the session (SessionHost::newSessionId)
  bool relay_client_ = false;

  InputBuffer in_;
  LineSplitter splitter_;
  std::string out_;
  size_t errors_ = 0;
  size_t messages_ = 0;  // accepted on this connection

  // After STARTTLS: ciphertext is read into the stream's own buffer, in_ holds plaintext.
  std::unique_ptr<TlsStream> tls_;

  State state_ = State::kConnected;
  std::string helo_;
  bool esmtp_ = false;
  bool greeted_ = false;  // the 220 went out (implicit TLS sends it after the handshake)

  // SMTP AUTH (session_auth.cc).
  AuthStep auth_step_ = AuthStep::kNone;   // the next line is a response, not a command
  bool auth_checking_ = false;             // a password check is on the thread pool
  std::string auth_login_user_;            // LOGIN: the user name, while the password is asked
  std::string auth_user_;                  // logged in as ("" until AUTH succeeds)
  std::string auth_mechanism_;             // and how (for the milters' {auth_type})
  const UserEntry* auth_entry_ = nullptr;  // its entry, in config_'s credentials

  // The transaction: what the spool will store about the message, from MAIL until the
  // spool has answered (states kMail to kCommit), empty otherwise. A reset is one
  // assignment; the commit moves it into the delivery queue once it is durable. Its id is
  // drawn when the message begins (the Received: line names it), its received_ms at the end.
  std::optional<Envelope> txn_;
  // Transaction state that is not part of the envelope, reset with it.
  bool rcpt_rejected_ = false;  // some RCPT failed (for the DATA reply when none passed)
  // Octets of the process-wide MemoryBudget this transaction holds: its recipients, and
  // its in-memory body in steps of kBodyChargeStep.
  size_t envelope_charged_ = 0;
  size_t body_charged_ = 0;

  // The message being received (DATA or BDAT).
  MessageBody body_;  // views into the read buffers it pins (zero-copy), until the commit
  std::unique_ptr<SpillFile> spill_;  // the body so far, once it outgrew message_memory
  bool spill_failed_ = false;         // the spool directory took no more: 452 at the end
  DataReader reader_;
  // The message's DKIM hasher, for a relay client or a logged-in user when [[dkim]] keys
  // are configured (session_data.cc).
  std::unique_ptr<DkimHasher> dkim_;
  std::string dkim_signed_;  // for the accepted line: "domain:algorithm,...", or empty

  // The listener's milters (session_milter.cc), or nullptr.
  std::unique_ptr<MilterChain> milters_;
  bool milter_waiting_ = false;  // a step is with the milters
  bool milter_async_ = false;    // ...and askMilters() has returned
  // Per transaction (reset with it): a milter said discard; BDAT's data step was asked;
  // a milter quarantined the message (its reason).
  bool milter_discard_ = false;
  bool milter_data_asked_ = false;
  std::string milter_quarantine_;
  uint64_t chunk_left_ = 0;  // BDAT octets still to read
  uint64_t chunk_size_ = 0;
  uint64_t chunk_unmarked_ = 0;  // chunk octets received since the last progress mark
  bool chunk_last_ = false;
  bool in_chunk_ = false;
  // Reply owed for a BDAT chunk sent out of sequence, given once its octets are consumed.
  int chunk_error_code_ = 0;
  std::string_view chunk_error_enhanced_;
  std::string_view chunk_error_text_;
};

}  // namespace postern
