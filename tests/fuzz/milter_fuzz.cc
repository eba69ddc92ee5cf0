// libFuzzer target for core/milter_protocol.*: what a milter sends back, read and parsed.
//
// Besides ASan/UBSan findings, traps when: the reader yields more octets than it was fed,
// or a different packet sequence when the input arrives in two pieces; a reply code that
// parses does not rebuild into the octets it came from (each line "NNN-text", the last
// "NNN text"), or has a code outside 400-599, or a line holding CR, LF or a non-ASCII
// octet (a forged reply line); NUL-separated strings do not rebuild into their input; a header
// change's name holds a blank, a colon or a control octet.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/milter_protocol.h"
#include "tests/fuzz/fuzz_check.h"

namespace postern {
namespace milter {
namespace {

std::vector<Packet> readAll(std::string_view a, std::string_view b, size_t& taken) {
  MilterReader r;
  std::vector<Packet> out;
  Packet p;
  r.feed(a);
  while (r.next(p) == MilterReader::Status::kPacket) out.push_back(p);
  r.feed(b);
  MilterReader::Status s;
  while ((s = r.next(p)) == MilterReader::Status::kPacket) out.push_back(p);
  taken = a.size() + b.size() - r.buffered();
  return out;
}

void checkPacket(const Packet& p) {
  if (auto r = parseReplyCode(p.data)) {
    FUZZ_CHECK(r->code >= 400 && r->code <= 599 && !r->lines.empty());
    std::string rebuilt;
    for (size_t i = 0; i < r->lines.size(); ++i) {
      for (unsigned char c : r->lines[i]) FUZZ_CHECK((c >= 0x20 && c < 0x7f) || c == '\t');
      rebuilt += std::to_string(r->code) + (i + 1 < r->lines.size() ? "-" : " ") + r->lines[i];
      if (i + 1 < r->lines.size()) rebuilt += "\r\n";
    }
    std::string_view data = p.data;
    if (!data.empty() && data.back() == '\0') data.remove_suffix(1);
    // A last line "NNN" alone reads as "NNN " with an empty text.
    FUZZ_CHECK(rebuilt == data || (r->lines.back().empty() && rebuilt == std::string(data) + " "));
  }
  if (auto strings = parseStrings(p.data)) {
    std::string rebuilt;
    for (const std::string& s : *strings) rebuilt.append(s).push_back('\0');
    FUZZ_CHECK(rebuilt == p.data);
  }
  if (auto h = parseHeaderChange(p.data)) {
    FUZZ_CHECK(!h->name.empty());
    for (unsigned char c : h->name) FUZZ_CHECK(c > ' ' && c != ':' && c < 0x7f);
  }
  if (auto o = parseOptions(p.data)) FUZZ_CHECK(p.data.size() >= 12);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t whole_taken = 0, split_taken = 0;
  const std::vector<Packet> whole = readAll(in, {}, whole_taken);
  const std::vector<Packet> split =
      readAll(in.substr(0, size / 2), in.substr(size / 2), split_taken);
  FUZZ_CHECK(whole_taken <= size && whole_taken == split_taken);
  FUZZ_CHECK(whole.size() == split.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    FUZZ_CHECK(whole[i].code == split[i].code && whole[i].data == split[i].data);
    checkPacket(whole[i]);
  }
  Packet raw{'y', std::string(in)};  // the parsers on the raw octets too
  checkPacket(raw);
  return 0;
}

}  // namespace milter
}  // namespace postern
