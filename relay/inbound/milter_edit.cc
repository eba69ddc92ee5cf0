#include "relay/inbound/milter_edit.h"

#include "core/ascii.h"
#include "core/smtp_command.h"

namespace postern {
namespace {

bool isBlank(char c) { return c == ' ' || c == '\t'; }

// The value of a field's raw text: after the colon and its blanks, folds as "\n", no
// final line ending.
std::string valueOf(std::string_view raw, size_t colon) {
  std::string_view v = raw.substr(colon + 1);
  while (!v.empty() && isBlank(v.front())) v.remove_prefix(1);
  if (v.ends_with("\r\n")) v.remove_suffix(2);
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '\r' && i + 1 < v.size() && v[i + 1] == '\n') continue;
    out.push_back(v[i]);
  }
  return out;
}

}  // namespace

bool validHeaderName(std::string_view name) {
  if (name.empty() || name.size() > 998) return false;
  for (unsigned char c : name) {
    if (c <= ' ' || c == ':' || c >= 0x7f) return false;
  }
  return true;
}

HeaderSection parseHeaderSection(std::string_view text) {
  HeaderSection h;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t eol = text.find("\r\n", pos);
    if (eol == std::string_view::npos) break;  // a partial line: the text ends in it
    if (eol == pos) {                          // the empty line
      h.body_begin = pos + 2;
      h.complete = h.blank_line = true;
      break;
    }
    const std::string_view line = text.substr(pos, eol - pos);
    const size_t colon = line.find(':');
    if (isBlank(line[0]) && !h.fields.empty()) {  // a fold of the field before
      h.fields.back().raw.append(text.substr(pos, eol + 2 - pos));
    } else if (colon != std::string_view::npos && validHeaderName(line.substr(0, colon))) {
      h.fields.push_back(MilterHeader{
          std::string(line.substr(0, colon)), {}, std::string(text.substr(pos, eol + 2 - pos))});
    } else {
      h.complete = true;  // not a field: the body starts here, as Postfix's cleanup does
      h.body_begin = pos;
      break;
    }
    pos = eol + 2;
  }
  for (MilterHeader& f : h.fields) f.value = valueOf(f.raw, f.name.size());
  if (!h.complete) h.body_begin = pos;
  return h;
}

std::string foldValue(std::string_view value) {
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.remove_suffix(1);
  std::string out;
  out.reserve(value.size() + 8);
  for (size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < value.size() && value[i + 1] == '\n') ++i;
      out.append("\r\n");
      if (i + 1 >= value.size() || !isBlank(value[i + 1])) out.push_back('\t');
      continue;
    }
    out.push_back(c == '\0' ? ' ' : c);
  }
  return out;
}

bool applyHeaderEdit(std::vector<MilterHeader>& fields, const milter::Packet& p) {
  auto make = [](std::string name, const std::string& value) {
    MilterHeader h{std::move(name), value, {}};
    h.raw = h.name + ": " + foldValue(value) + "\r\n";
    return h;
  };
  if (p.code == milter::kAddHeader) {
    std::optional<std::vector<std::string>> s = milter::parseStrings(p.data);
    if (!s || s->size() != 2 || !validHeaderName((*s)[0])) return false;
    fields.push_back(make(std::move((*s)[0]), (*s)[1]));
    return true;
  }
  std::optional<milter::HeaderChange> c = milter::parseHeaderChange(p.data);
  if (!c) return false;
  if (p.code == milter::kInsertHeader) {
    const size_t at = std::min<size_t>(c->index, fields.size());
    fields.insert(fields.begin() + static_cast<std::ptrdiff_t>(at), make(c->name, c->value));
    return true;
  }
  if (p.code != milter::kChangeHeader) return false;
  // The index-th field of that name (from 1); an empty value deletes it, a missing one is
  // added (as libmilter documents smfi_chgheader).
  uint32_t seen = 0;
  for (auto it = fields.begin(); it != fields.end(); ++it) {
    if (!equalsIgnoreCase(it->name, c->name) || ++seen != std::max<uint32_t>(c->index, 1)) {
      continue;
    }
    if (c->value.empty()) {
      fields.erase(it);
    } else {
      *it = make(it->name, c->value);
    }
    return true;
  }
  if (!c->value.empty()) fields.push_back(make(c->name, c->value));
  return true;
}

std::string serializeHeaders(const std::vector<MilterHeader>& fields, bool had_blank_line) {
  std::string out;
  for (const MilterHeader& f : fields) out.append(f.raw);
  if (had_blank_line) out.append("\r\n");
  return out;
}

std::string normalizeBody(std::string_view body) {
  std::string out;
  out.reserve(body.size() + body.size() / 64 + 2);
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < body.size() && body[i + 1] == '\n') ++i;
      out.append("\r\n");
    } else {
      out.push_back(c);
    }
  }
  if (!out.empty() && !out.ends_with("\r\n")) out.append("\r\n");
  return out;
}

}  // namespace postern
