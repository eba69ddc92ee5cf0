// TlsStream: TLS over a libuv stream, written once for every connection that speaks it (the
// server session after STARTTLS, the delivery client, postern-load's --starttls). Like
// Envoy's TransportSocket it keeps TLS out of the connection logic: the connection reads
// and writes plaintext, and the stream moves ciphertext between the socket and OpenSSL
// (core/tls.h, memory BIOs, so no call blocks the loop).
//
// Use: alloc_cb hands libuv readBuffer() (ciphertext never lands in the plaintext buffer),
// read_cb passes what arrived to received(). Then handshake() until it says kDone, and
// read() decrypts into the connection's InputBuffer, one record at a time, so the
// connection decides after each piece whether it takes more. Output goes through write(),
// which encrypts and hands the records to writeOut (core/stream_write.h) with its
// contract; seal() is the same without the socket.
//
// Bounds: ciphertext read from the socket is at most one readBuffer() at a time; plaintext
// is decrypted only into the InputBuffer's free space (zero-copy and bounded as for plain
// TCP). What OpenSSL holds beyond that is the unread part of the records fed to it, so a
// connection that stops taking plaintext must stop reading the socket, at once or once
// pendingCipher() has reached a bound of its own: nothing here bounds what received() is
// given.
//
// Failures are values: kFailed with error() saying why (a failed handshake, a bad record,
// or the peer's close_notify, "closed by peer"); nothing throws.
#pragma once

#include <uv.h>

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/input_buffer.h"
#include "core/stream_write.h"
#include "core/tls.h"

namespace postern {

class TlsStream {
 public:
  // read_size: the ciphertext read buffer (one TLS record is at most 16 KiB plus overhead).
  TlsStream(const TlsContext& ctx, TlsConnection::Side side, size_t read_size);

  // Client side: SNI and, if verify, the name the certificate must be valid for.
  void expectPeer(const std::string& host, bool verify) { tls_.expectPeer(host, verify); }
  bool expectDane(const std::string& host, const std::vector<TlsConnection::Tlsa>& records) {
    return tls_.expectDane(host, records);
  }
  std::string daneAuthority() const { return tls_.daneAuthority(); }
  void checkPeer(const std::string& host) { tls_.checkPeer(host); }
  long verifyError() const { return tls_.verifyError(); }

  // Client side: session resumption (TlsConnection::resume, resumable, resumed).
  void resume(const TlsSession& session) { tls_.resume(session); }
  TlsSession resumable() const { return tls_.resumable(); }
  bool resumed() const { return tls_.resumed(); }

  // alloc_cb: where libuv reads ciphertext to.
  uv_buf_t readBuffer();
  // read_cb: len bytes of ciphertext arrived (data is readBuffer()'s, or any bytes in tests).
  void received(const char* data, size_t len) { tls_.feedCipher(data, len); }
  // Ciphertext received and not yet decrypted: what a connection that pauses its reading
  // bounds (see Bounds above).
  size_t pendingCipher() const { return tls_.pendingCipher(); }

  enum class Handshake { kPending, kDone, kFailed };
  // Runs the handshake as far as the ciphertext received allows; kDone once it is complete
  // (and on every call after). Its records wait in the stream for write() or seal().
  Handshake handshake();
  bool established() const { return tls_.established(); }
  bool tls13() const { return tls_.tls13(); }

  enum class Read { kData, kNone, kFull, kFailed };
  // Decrypts into in's free space and commits it: kData (some bytes), kNone (no complete
  // record yet), kFull (in has no free space; nothing was decrypted), kFailed.
  Read read(InputBuffer& in);

  // Encrypts plain and clears it, then appends every pending record to wire. Before the
  // handshake completes plain is left as it is, to go once it has (nothing leaves in the
  // clear after STARTTLS). False on an encryption error (see error()).
  bool seal(std::string& plain, std::string& wire);
  // seal(), then writes the records to socket: writeOut's result, or "TLS: why" if
  // encryption failed.
  Result<Sent> write(uv_stream_t* socket, std::string& plain, WriteDone done, void* ctx);
  // The same for plaintext in views (a body's pieces): gathered into one buffer first, so
  // that small views (a stuffed dot) do not each become a TLS record of their own.
  Result<Sent> write(uv_stream_t* socket, std::span<const std::string_view> plain, WriteDone done,
                     void* ctx);

  // Queues a close_notify alert for the next write() or seal(). No connection sends one
  // today (SMTP ends with QUIT and the TCP close); the tests use it to check the peer's side.
  void shutdown() { tls_.shutdown(); }

  std::string error() const { return tls_.error(); }
  std::string describe() const { return tls_.describe(); }  // "TLSv1.3 TLS_AES_256_GCM_SHA384"

 private:
  TlsConnection tls_;
  std::unique_ptr<char[]> read_buffer_;
  size_t read_size_;
  std::string gather_;  // write(views): reused, at most one call's views
};

}  // namespace postern
