#include "core/smtp_reply.h"

#include <gtest/gtest.h>

#include "core/smtp_command.h"

namespace postern {
namespace {

TEST(SmtpReply, SingleLineCarriesEnhancedCode) {
  std::string out;
  appendReply(out, 250, "2.1.0", "Ok");
  appendReply(out, 554, "5.7.1", "<x@y>: Relay access denied");
  EXPECT_EQ(out, "250 2.1.0 Ok\r\n554 5.7.1 <x@y>: Relay access denied\r\n");
}

TEST(SmtpReply, MultilineUsesDashUntilTheLastLine) {
  std::string out;
  std::string_view lines[] = {"relay.test", "PIPELINING", "SIZE 100"};
  appendMultiline(out, 250, lines);
  EXPECT_EQ(out, "250-relay.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n");
}

TEST(SmtpReply, CrLfInTextCannotForgeASecondReply) {
  std::string out;
  appendReply(out, 501, "5.1.7", "bad\r\n250 2.0.0 forged");
  EXPECT_EQ(out, "501 5.1.7 bad  250 2.0.0 forged\r\n");
}

// Every reply code listed in ../shared/seeds, formatted and classified the way the
// delivery client reads a next hop's reply.
TEST(SmtpReply, EverySeedReplyCodeIsClassified) {
  struct Case {
    int code;
    ReplyClass cls;
  };
  const Case cases[] = {
      {211, ReplyClass::kSuccess},      {214, ReplyClass::kSuccess},
      {220, ReplyClass::kSuccess},      {221, ReplyClass::kSuccess},
      {250, ReplyClass::kSuccess},      {251, ReplyClass::kSuccess},
      {354, ReplyClass::kIntermediate}, {421, ReplyClass::kTransient},
      {403, ReplyClass::kTransient},    {450, ReplyClass::kTransient},
      {451, ReplyClass::kTransient},    {452, ReplyClass::kTransient},
      {500, ReplyClass::kPermanent},    {501, ReplyClass::kPermanent},
      {502, ReplyClass::kPermanent},    {503, ReplyClass::kPermanent},
      {504, ReplyClass::kPermanent},    {550, ReplyClass::kPermanent},
      {551, ReplyClass::kPermanent},    {552, ReplyClass::kPermanent},
      {553, ReplyClass::kPermanent},    {554, ReplyClass::kPermanent},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(classifyReply(c.code), c.cls) << c.code;
    std::string out;
    appendReply(out, c.code, "", "text");
    EXPECT_EQ(out, std::to_string(c.code) + " text\r\n");
  }
  EXPECT_EQ(classifyReply(199), ReplyClass::kInvalid);
  EXPECT_EQ(classifyReply(600), ReplyClass::kInvalid);
}

}  // namespace
}  // namespace postern
