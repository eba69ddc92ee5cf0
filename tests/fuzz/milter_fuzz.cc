// libFuzzer target for core/milter_protocol.*: what a milter sends back, read and parsed.
//
// Besides ASan/UBSan findings, traps when: the reader yields more octets than it was fed,
// or a different packet sequence when the input arrives in two pieces; a reply code that
// parses does not rebuild into the octets it came from (each line "NNN-text", the last
// "NNN text"), or has a code outside 400-599, or a line holding CR, LF or a non-ASCII
// octet (a forged reply line); NUL-separated strings do not rebuild into their input; a header
// change's name holds a blank, a colon or a control octet. The edits of
// relay/inbound/milter_edit.h, applied to a header section parsed from the input: traps
// when an edited field has a line that does not end in CRLF, holds a bare CR or LF, or
// (after the first) does not start with a blank, that is, when a milter's value could
// start a field of its own; when a parsed section does not rebuild into its input; or
// when a replaced body keeps a bare CR or LF.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/milter_protocol.h"
#include "relay/inbound/milter_edit.h"
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

// Every line of a stored field ends in CRLF, has no other CR or LF, and all but the first
// start with a blank.
void checkField(const std::string& raw) {
  FUZZ_CHECK(raw.size() >= 2 && raw.compare(raw.size() - 2, 2, "\r\n") == 0);
  size_t start = 0;
  while (start < raw.size()) {
    const size_t end = raw.find("\r\n", start);
    FUZZ_CHECK(end != std::string::npos);
    const std::string_view line = std::string_view(raw).substr(start, end - start);
    FUZZ_CHECK(line.find_first_of("\r\n") == std::string_view::npos);
    if (start > 0) FUZZ_CHECK(!line.empty() && (line[0] == ' ' || line[0] == '\t'));
    start = end + 2;
  }
}

void checkEdits(std::string_view in) {
  const HeaderSection h = parseHeaderSection(in);
  FUZZ_CHECK(h.body_begin <= in.size());
  if (h.complete) {
    FUZZ_CHECK(serializeHeaders(h.fields, h.blank_line) == in.substr(0, h.body_begin));
  }
  std::vector<MilterHeader> fields = h.fields;
  for (char code : {kAddHeader, kInsertHeader, kChangeHeader}) {
    const size_t before = fields.size();
    std::vector<MilterHeader> edited = fields;
    if (!applyHeaderEdit(edited, Packet{code, std::string(in)})) continue;
    FUZZ_CHECK(edited.size() + 1 >= before && edited.size() <= before + 1);
    for (const MilterHeader& f : edited) {
      // The fields the edit made (the message's own are as they came).
      bool original = false;
      for (const MilterHeader& o : fields) original = original || o.raw == f.raw;
      if (!original) checkField(f.raw);
    }
  }
  const std::string body = normalizeBody(in);
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\r') FUZZ_CHECK(i + 1 < body.size() && body[i + 1] == '\n');
    if (body[i] == '\n') FUZZ_CHECK(i > 0 && body[i - 1] == '\r');
  }
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
  checkEdits(in);
  return 0;
}

}  // namespace milter
}  // namespace postern
