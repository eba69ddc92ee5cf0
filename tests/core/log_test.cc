#include "core/log.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

using spdlog::level::info;

TEST(FormatEvent, KeyValueQuotesAndEscapesPeerText) {
  EXPECT_EQ(formatEvent(false, info, "connect", {{"client", "127.0.0.1"}, {"n", uint64_t{3}}}),
            "event=connect client=127.0.0.1 n=3");
  // A HELO name cannot forge a second line or another field.
  EXPECT_EQ(formatEvent(false, info, "helo", {{"name", "a\r\nevent=fake x=\"y\""}}),
            "event=helo name=\"a\\u000d\\u000aevent=fake x=\\\"y\\\"\"");
  EXPECT_EQ(formatEvent(false, info, "e", {{"empty", ""}}), "event=e empty=\"\"");
}

TEST(FormatEvent, JsonMembersAreValidUtf8) {
  // The logger's pattern supplies `{"ts":"...",`; formatEvent the rest of the object.
  EXPECT_EQ(formatEvent(true, info, "accepted", {{"from", "s@o.test"}, {"size", uint64_t{12}}}),
            "\"level\":\"info\",\"event\":\"accepted\",\"from\":\"s@o.test\",\"size\":12}");
  // Well-formed UTF-8 (an SMTPUTF8 address) passes; other octets become U+FFFD.
  EXPECT_EQ(formatEvent(true, info, "e", {{"v", "j\xc3\xb6rg\xff\xc3(\xed\xa0\x80"}}),
            "\"level\":\"info\",\"event\":\"e\",\"v\":\"j\xc3\xb6rg\\ufffd\\ufffd("
            "\\ufffd\\ufffd\\ufffd\"}");
  EXPECT_EQ(formatEvent(true, info, "e", {{"v", "\xf0\x9f\x93\xa7 \xe2\x82"}}),
            "\"level\":\"info\",\"event\":\"e\",\"v\":\"\xf0\x9f\x93\xa7 \\ufffd\\ufffd\"}");
}

}  // namespace
}  // namespace postern
