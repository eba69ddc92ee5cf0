// SpillFile: the body of a message being received once it outgrows what a session may hold
// in memory (limits.message_memory), kept in an unnamed file in the worker's spool
// directory until the spool copies it into a segment at commit.
//
// The file is created with O_TMPFILE (or created and unlinked at once where that is not
// supported), so a crash or an abandoned message leaves nothing on disk. Writes are plain
// write(2)s into the page cache, on the loop thread, in pieces of limits.message_memory
// (as Postfix's smtpd writes its queue file); nothing is synced: the spool's commit
// makes the copy durable. The CRC32C of the content is kept as it is written, for the
// record's checksum. A failed write (a full disk) is remembered; the message then gets
// 452 4.3.1 at its end.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/message_body.h"
#include "core/result.h"

namespace postern {

class SpillFile {
 public:
  // Fails when no file can be made in dir.
  static Result<std::unique_ptr<SpillFile>> create(const std::string& dir);
  ~SpillFile();
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;

  // Appends data; false (and failed() from then on) if the write fails. A MessageBody's
  // pieces go out with writev, straight from the read buffers they lie in.
  bool append(std::string_view data);
  bool append(const MessageBody& body);
  bool failed() const { return error_ != 0; }
  int error() const { return error_; }

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  uint32_t crc() const { return crc_; }  // crc32c(0, content)

 private:
  explicit SpillFile(int fd) : fd_(fd) {}
  bool writePieces(std::span<const std::string_view> pieces);
  int fd_;
  uint64_t size_ = 0;
  uint32_t crc_ = 0;
  int error_ = 0;
};

}  // namespace postern
