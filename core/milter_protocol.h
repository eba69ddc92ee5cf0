// The milter protocol (Sendmail's libmilter, version 6, as Postfix speaks it from
// src/milter/milter8.c): the packets an MTA sends a filter and reads back. Encoding and
// decoding only, pure functions of their input; the client that drives a conversation on
// a worker's loop builds on these (issue 17).
//
// A packet is "u32 length (network order) | u8 command | data", the length counting the
// command octet. What a milter sends is input from outside: MilterReader bounds a packet
// (kMaxPacket, the 1 MiB a milter may ask for with SMFIP_MDS_1M, and a little), refuses a
// zero length, and the parsers refuse anything not exactly of their shape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace postern {

namespace milter {

constexpr uint32_t kVersion = 6;
constexpr size_t kMaxPacket = (1u << 20) + 1024;
constexpr size_t kBodyChunk = 65535;  // MILTER_CHUNK_SIZE: a body packet's largest data

// Commands, MTA to milter (SMFIC_*).
enum Command : char {
  kAbort = 'A',
  kBody = 'B',
  kConnect = 'C',
  kMacro = 'D',
  kEndOfBody = 'E',
  kHelo = 'H',
  kQuitNewConnection = 'K',
  kHeader = 'L',
  kMail = 'M',
  kEndOfHeaders = 'N',
  kOptionNegotiation = 'O',
  kQuit = 'Q',
  kRcpt = 'R',
  kData = 'T',
  kUnknown = 'U',
};

// Replies and modifications, milter to MTA (SMFIR_*).
enum Reply : char {
  kAddRcpt = '+',
  kDelRcpt = '-',
  kAddRcptPar = '2',
  kShutdown = '4',
  kAccept = 'a',
  kReplaceBody = 'b',
  kContinue = 'c',
  kDiscard = 'd',
  kChangeFrom = 'e',
  kConnectionFail = 'f',
  kAddHeader = 'h',
  kInsertHeader = 'i',
  kSetSymbolList = 'l',
  kChangeHeader = 'm',
  kProgress = 'p',
  kQuarantine = 'q',
  kReject = 'r',
  kSkip = 's',
  kTempfail = 't',
  kReplyCode = 'y',
};

// Actions a milter may take (SMFIF_*), offered by the MTA in its negotiation.
enum Action : uint32_t {
  kActAddHeaders = 0x01,
  kActChangeBody = 0x02,
  kActAddRcpt = 0x04,
  kActDelRcpt = 0x08,
  kActChangeHeaders = 0x10,
  kActQuarantine = 0x20,
  kActChangeFrom = 0x40,
  kActAddRcptPar = 0x80,
  kActSetSymbolList = 0x100,
};

// Steps and replies a milter may do without (SMFIP_*).
enum Protocol : uint32_t {
  kNoConnect = 0x01,
  kNoHelo = 0x02,
  kNoMail = 0x04,
  kNoRcpt = 0x08,
  kNoBody = 0x10,
  kNoHeaders = 0x20,
  kNoEndOfHeaders = 0x40,
  kNoReplyHeader = 0x80,
  kNoUnknown = 0x100,
  kNoData = 0x200,
  kSkipOk = 0x400,
  kRcptRejected = 0x800,
  kNoReplyConnect = 0x1000,
  kNoReplyHelo = 0x2000,
  kNoReplyMail = 0x4000,
  kNoReplyRcpt = 0x8000,
  kNoReplyData = 0x10000,
  kNoReplyUnknown = 0x20000,
  kNoReplyEndOfHeaders = 0x40000,
  kNoReplyBody = 0x80000,
  kHeaderLeadingSpace = 0x100000,
};

// One packet as read: its command or reply code and its data.
struct Packet {
  char code = 0;
  std::string data;
};

// Encodes one packet.
std::string encode(char code, std::string_view data = {});
// OPTNEG: version, the actions and protocol steps offered.
std::string encodeOptions(uint32_t version, uint32_t actions, uint32_t protocol);
// A macro definition for the step `for_command`: name/value pairs ("j", "{client_addr}").
std::string encodeMacros(char for_command,
                         const std::vector<std::pair<std::string, std::string>>& macros);
// CONNECT: the client's host name, and its address and port ('4' or '6'; 'U' unknown).
std::string encodeConnect(std::string_view hostname, char family, uint16_t port,
                          std::string_view address);
// NUL-terminated strings one after another (HELO; MAIL and RCPT: "<addr>" then ESMTP
// parameters; HEADER: name, value).
std::string encodeStrings(char code, const std::vector<std::string_view>& strings);

// Reads packets from a byte stream in any pieces.
class MilterReader {
 public:
  enum class Status { kPacket, kNeedMore, kBad };
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next whole packet into out, kNeedMore, or kBad (zero or oversized length): the
  // connection is then unusable.
  Status next(Packet& out);
  size_t buffered() const { return buffer_.size() - start_; }

 private:
  std::string buffer_;
  size_t start_ = 0;
};

// The milter's OPTNEG answer: the version and what it takes of the offer, and macro names
// it asks for by step (v6: pairs of u32 step and a space-separated name list).
struct Options {
  uint32_t version = 0;
  uint32_t actions = 0;
  uint32_t protocol = 0;
  std::vector<std::pair<uint32_t, std::string>> macros;
};
std::optional<Options> parseOptions(std::string_view data);

// SMFIR_REPLYCODE: "4XX x.y.z text" or "5XX ...", or several lines joined by CRLF, each
// but the last "NNN-text", all with the same code. Checked line by line (a 4xx or 5xx code,
// printable ASCII text, no CR or LF but those between lines), so that a milter's reply can never
// forge SMTP reply lines of its own.
struct ReplyCode {
  int code = 0;
  std::vector<std::string> lines;  // each line's text, after the code and its separator
};
std::optional<ReplyCode> parseReplyCode(std::string_view data);

// The NUL-terminated strings of a packet's data; nullopt unless it ends with a NUL (or is
// empty).
std::optional<std::vector<std::string>> parseStrings(std::string_view data);

// CHGHEADER and INSHEADER: "u32 index | name NUL value NUL".
struct HeaderChange {
  uint32_t index = 0;
  std::string name;
  std::string value;
};
std::optional<HeaderChange> parseHeaderChange(std::string_view data);

}  // namespace milter
}  // namespace postern
