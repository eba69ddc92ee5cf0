// TlsSessionCache: a client's TLS sessions by server, so that the next connection to the
// same next hop resumes (an abbreviated handshake: no certificate chain to check, no
// signature) instead of starting over. One per event loop (no lock); a connection puts the
// session it got once the server's ticket has arrived and takes it before its handshake.
//
// The key says who the session was made with and how: the server's name, address and port,
// and the client context (a session from an unverified connection must never stand in for a
// verified one; OpenSSL skips the certificate check when it resumes). Bounded: past
// `capacity` servers the cache starts over, a full handshake each being the only cost.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <unordered_map>

#include "core/tls.h"

namespace postern {

class TlsSessionCache {
 public:
  explicit TlsSessionCache(size_t capacity = 1024) : capacity_(capacity) {}

  static std::string key(const TlsContext& ctx, const std::string& host,
                         const sockaddr_storage& addr) {
    const size_t len = addr.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    std::string k = host + '\0' + std::to_string(reinterpret_cast<uintptr_t>(ctx.get())) + '\0';
    k.append(reinterpret_cast<const char*>(&addr), len);
    return k;
  }
  // The session to offer, or nullptr.
  TlsSession find(const std::string& key) const {
    auto it = sessions_.find(key);
    return it == sessions_.end() ? nullptr : it->second;
  }
  void put(const std::string& key, TlsSession session) {
    if (!session) return;
    if (sessions_.size() >= capacity_ && sessions_.count(key) == 0) sessions_.clear();
    sessions_[key] = std::move(session);
  }
  void erase(const std::string& key) { sessions_.erase(key); }
  void clear() { sessions_.clear(); }
  size_t size() const { return sessions_.size(); }

 private:
  size_t capacity_;
  std::unordered_map<std::string, TlsSession> sessions_;
};

}  // namespace postern
