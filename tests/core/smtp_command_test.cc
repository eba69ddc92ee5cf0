#include "core/smtp_command.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

struct VerbCase {
  const char* line;
  Verb verb;
  const char* arg;
};

// Every command named in ../shared/seeds and DESIGN.md, in the spellings clients use.
TEST(SmtpCommand, RecognisesEveryCommandCaseInsensitively) {
  const VerbCase cases[] = {
      {"HELO challenger.atc.educba", Verb::kHelo, "challenger.atc.educba"},
      {"ehlo client.example", Verb::kEhlo, "client.example"},
      {"Mail FROM:<a@b>", Verb::kMail, "FROM:<a@b>"},
      {"RCPT TO:<drol@mail.ru>", Verb::kRcpt, "TO:<drol@mail.ru>"},
      {"DATA", Verb::kData, ""},
      {"BDAT 100 LAST", Verb::kBdat, "100 LAST"},
      {"rset", Verb::kRset, ""},
      {"NOOP", Verb::kNoop, ""},
      {"VRFY postmaster", Verb::kVrfy, "postmaster"},
      {"EXPN abcd", Verb::kExpn, "abcd"},
      {"HELP mail", Verb::kHelp, "mail"},
      {"QUIT", Verb::kQuit, ""},
      {"STARTTLS", Verb::kStartTls, ""},
      {"SEND FROM:<a@b>", Verb::kSend, "FROM:<a@b>"},
      {"SOML FROM:<a@b>", Verb::kSoml, "FROM:<a@b>"},
      {"SAML FROM:<a@b>", Verb::kSaml, "FROM:<a@b>"},
      {"TURN", Verb::kTurn, ""},
      {"VERB on", Verb::kVerb, "on"},
      {"TICK 1", Verb::kTick, "1"},
      {"HELLO 195.161.101.33", Verb::kUnknown, "195.161.101.33"},
      {"", Verb::kUnknown, ""},
      {"MAILX FROM:<a@b>", Verb::kUnknown, "FROM:<a@b>"},
      {"NOOP   \t", Verb::kNoop, ""},
  };
  for (const auto& c : cases) {
    Command cmd = parseCommand(c.line);
    EXPECT_EQ(cmd.verb, c.verb) << c.line;
    EXPECT_EQ(cmd.arg, c.arg) << c.line;
  }
}

TEST(SmtpCommand, NulAndBinaryGarbageIsUnknown) {
  std::string line("NO\0OP", 5);
  EXPECT_EQ(parseCommand(line).verb, Verb::kUnknown);
  EXPECT_EQ(parseCommand("\xff\xfe\x01").verb, Verb::kUnknown);
}

TEST(SmtpCommand, MailPathWithParams) {
  PathArg p;
  ASSERT_FALSE(parsePathArg("FROM:<user@example.com> SIZE=1000 BODY=8BITMIME", "FROM", p));
  EXPECT_EQ(p.mailbox, "user@example.com");
  ASSERT_EQ(p.params.size(), 2u);
  EXPECT_EQ(p.params[0].keyword, "SIZE");
  EXPECT_EQ(p.params[0].value, "1000");
  EXPECT_EQ(p.params[1].value, "8BITMIME");
}

TEST(SmtpCommand, NullSenderAndLenientForms) {
  PathArg p;
  ASSERT_FALSE(parsePathArg("FROM:<>", "FROM", p));
  EXPECT_EQ(p.mailbox, "");
  ASSERT_FALSE(parsePathArg("from: <a@b>", "FROM", p));
  EXPECT_EQ(p.mailbox, "a@b");
  ASSERT_FALSE(parsePathArg("FROM:a@b", "FROM", p));
  EXPECT_EQ(p.mailbox, "a@b");
  ASSERT_FALSE(parsePathArg("TO:<@relay.one,@relay.two:user@d.example>", "TO", p));
  EXPECT_EQ(p.mailbox, "user@d.example");
  ASSERT_FALSE(parsePathArg("TO:<\"john doe\"@example.com>", "TO", p));
  EXPECT_EQ(p.mailbox, "\"john doe\"@example.com");
  ASSERT_FALSE(parsePathArg("TO:<postmaster>", "TO", p));
  EXPECT_EQ(p.mailbox, "postmaster");
}

TEST(SmtpCommand, SyntaxErrorsAre501) {
  const char* bad_from[] = {"",
                            "FROM",
                            "FROM <a@b>",
                            "TO:<a@b>",
                            "FROM:<a@b",
                            "FROM:<a@b>x",
                            "FROM:<a b@c>",
                            "FROM:<@b>",
                            "FROM:<a@>",
                            "FROM:<a@b> =x",
                            "FROM:<a@b> SIZE=",
                            "FROM:<\"unbalanced@b>",
                            "FROM:<a\x01@b>"};
  for (const char* arg : bad_from) {
    PathArg p;
    auto err = parsePathArg(arg, "FROM", p);
    ASSERT_TRUE(err.has_value()) << arg;
    EXPECT_EQ(err->code, 501) << arg;
    EXPECT_EQ(err->enhanced[0], '5') << arg;
  }
  PathArg p;
  auto err = parsePathArg("TO:<>", "TO", p);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->code, 501);
}

TEST(SmtpCommand, EightBitMailboxIsFlagged) {
  PathArg p;
  ASSERT_FALSE(parsePathArg("TO:<j\xc3\xb6rg@example.com>", "TO", p));
  EXPECT_TRUE(p.eight_bit);
}

TEST(SmtpCommand, DomainOf) {
  EXPECT_EQ(domainOf("a@Example.COM"), "Example.COM");
  EXPECT_EQ(domainOf("\"a@b\"@c.d"), "c.d");
  EXPECT_EQ(domainOf("postmaster"), "");
}

}  // namespace
}  // namespace postern
