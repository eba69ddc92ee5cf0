// SessionHost: what an inbound session needs from the worker that runs it, and the one
// way a message leaves the inbound side: accepted(), once the spool has made it durable.
// The worker implements it and wires accepted() to delivery, so a session never sees
// delivery, the server or the admin endpoint (relay/inbound never includes
// relay/outbound, and neither includes relay/ itself).
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "core/buffer_pool.h"
#include "core/config.h"
#include "core/memory_budget.h"
#include "core/metrics.h"
#include "core/network.h"
#include "core/tls.h"
#include "queue/spool.h"

namespace postern {

class AuthThrottle;
class HandshakeGate;
class RecipientProber;
class Session;

class SessionHost {
 public:
  virtual uv_loop_t* loop() = 0;
  // The configuration a new session keeps for its whole conversation.
  virtual std::shared_ptr<const Config> configSnapshot() const = 0;
  virtual BufferPool& bufferPool() = 0;
  virtual MemoryBudget& memory() = 0;
  virtual WorkerMetrics& metrics() = 0;
  virtual Spool& spool() = 0;
  virtual RecipientProber& prober() = 0;
  // The STARTTLS context, or nullptr when no certificate is configured.
  virtual const TlsContext* tls() const = 0;
  // Where TLS handshake steps queue for their turn of the loop.
  virtual HandshakeGate& handshakeGate() = 0;
  // Draining: new commands get 421.
  virtual bool stopping() const = 0;
  // A new session's id for its log lines, unique in the process and unlikely to repeat
  // across restarts.
  virtual std::string newSessionId() = 0;

  // The relay-wide per-address connection limits.
  virtual bool admitConnection(const IpAddress& ip) = 0;
  virtual void releaseConnection(const IpAddress& ip) = 0;
  // The relay-wide count of failed AUTH attempts per client address.
  virtual AuthThrottle& authThrottle() = 0;
  virtual void addSession(Session* s) = 0;
  virtual void removeSession(Session* s) = 0;

  // The message is durable (the spool has synced it): from here it is delivery's.
  virtual void accepted(SpooledMessage message) = 0;

 protected:
  ~SessionHost() = default;
};

}  // namespace postern
