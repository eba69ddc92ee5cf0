#include "core/recipient_list.h"

#include "core/ascii.h"
#include "core/config.h"
#include "core/domain.h"

namespace postern {

std::shared_ptr<const RecipientList> RecipientList::load(const std::string& path) {
  return parse(readReferencedFile(path), path);
}

std::shared_ptr<const RecipientList> RecipientList::parse(std::string_view text,
                                                          const std::string& where) {
  auto list = std::make_shared<RecipientList>();
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t lf = text.find('\n');
    std::string_view line = text.substr(0, lf);
    text.remove_prefix(lf == std::string_view::npos ? text.size() : lf + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    const size_t at = line.rfind('@');
    auto fail = [&](const char* why) {
      throw ConfigError(where + ":" + std::to_string(line_no) + ": \"" + std::string(line) +
                        "\": " + why);
    };
    if (at == std::string_view::npos || at + 1 == line.size()) {
      fail("expected user@domain or @domain");
    }
    if (line.find_first_of(" \t") != std::string_view::npos) fail("blanks inside an entry");
    auto domain = canonicalDomain(line.substr(at + 1));
    if (!domain) fail("invalid domain");
    list->entries_.insert(asciiLower(line.substr(0, at)) + "@" + *domain);
  }
  return list;
}

bool RecipientList::contains(std::string_view mailbox) const {
  const size_t at = mailbox.rfind('@');
  if (at == std::string_view::npos) return false;
  if (entries_.contains(asciiLower(mailbox))) return true;
  return entries_.contains(std::string(mailbox.substr(at)));  // "@domain", already canonical
}

}  // namespace postern
