#include "core/tls_stream.h"

#include "core/assert.h"

namespace postern {

TlsStream::TlsStream(const TlsContext& ctx, TlsConnection::Side side, size_t read_size)
    : tls_(ctx, side),
      read_buffer_(std::make_unique_for_overwrite<char[]>(read_size)),
      read_size_(read_size) {}

uv_buf_t TlsStream::readBuffer() {
  return uv_buf_init(read_buffer_.get(), static_cast<unsigned>(read_size_));
}

TlsStream::Handshake TlsStream::handshake() {
  if (tls_.established()) return Handshake::kDone;
  Result<bool> done = tls_.handshake();
  if (!done) return Handshake::kFailed;  // error() says why
  return *done ? Handshake::kDone : Handshake::kPending;
}

TlsStream::Read TlsStream::read(InputBuffer& in) {
  std::span<char> free = in.writable();
  if (free.empty()) return Read::kFull;
  Result<size_t> n = tls_.readPlain(free.data(), free.size());
  if (!n) return Read::kFailed;  // error() says why
  if (*n == 0) return Read::kNone;
  in.commit(*n);
  return Read::kData;
}

bool TlsStream::seal(std::string& plain, std::string& wire) {
  if (tls_.established() && !plain.empty()) {
    if (!tls_.writePlain(plain)) return false;
    plain.clear();
  }
  tls_.takeCipher(wire);
  return true;
}

Result<Sent> TlsStream::write(uv_stream_t* socket, std::string& plain, WriteDone done, void* ctx) {
  std::string wire;
  if (!seal(plain, wire)) return fail("TLS: " + error());
  return writeOut(socket, wire, done, ctx);
}

Result<Sent> TlsStream::write(uv_stream_t* socket, std::span<const std::string_view> plain,
                              WriteDone done, void* ctx) {
  POSTERN_ASSERT(tls_.established());  // else seal() would keep, and this drop, the data
  gather_.clear();
  for (std::string_view v : plain) gather_.append(v);
  Result<Sent> sent = write(socket, gather_, done, ctx);
  gather_.clear();
  return sent;
}

}  // namespace postern
