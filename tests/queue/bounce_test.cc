#include "queue/bounce.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace postern {
namespace {

Envelope original() {
  Envelope e;
  e.id = 0x0123456789ABCDEFull;
  e.received_ms = 1'700'000'000'000;
  e.sender = "alice@origin.test";
  e.recipients = {"bob@dest.test", "carol@dest.test"};
  e.dsn_orcpt = {"rfc822;bob+2Bx@dest.test", ""};
  e.dsn_envid = "ENV+2B1";
  return e;
}

const std::string kMessage =
    "Subject: hello\r\nMessage-ID: <m1@origin.test>\r\n\r\nline one\r\nline two\r\n";

BounceInput input(const Envelope& env) {
  BounceInput in;
  in.reporting_mta = "relay.test";
  in.original = &env;
  in.failed = {{0, "5.1.1", "550 5.1.1 no such user", "mx.dest.test", "mx.dest.test said: 550"}};
  in.original_message = kMessage;
  in.now_ms = 1'700'000'100'000;
  return in;
}

TEST(BounceTest, MultipartReportWithStatusAndOriginal) {
  Envelope env = original();
  std::string m = composeBounce(input(env));
  EXPECT_NE(m.find("To: <alice@origin.test>\r\n"), std::string::npos);
  EXPECT_NE(m.find("Auto-Submitted: auto-replied\r\n"), std::string::npos);
  EXPECT_NE(m.find("Content-Type: multipart/report; report-type=delivery-status;"),
            std::string::npos);
  EXPECT_NE(m.find("Reporting-MTA: dns; relay.test\r\n"), std::string::npos);
  EXPECT_NE(m.find("Original-Envelope-Id: ENV+1\r\n"), std::string::npos);  // xtext decoded
  EXPECT_NE(m.find("Final-Recipient: rfc822; bob@dest.test\r\n"), std::string::npos);
  EXPECT_NE(m.find("Original-Recipient: rfc822; bob+x@dest.test\r\n"), std::string::npos);
  EXPECT_NE(m.find("Action: failed\r\nStatus: 5.1.1\r\n"), std::string::npos);
  EXPECT_NE(m.find("Remote-MTA: dns; mx.dest.test\r\n"), std::string::npos);
  EXPECT_NE(m.find("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"), std::string::npos);
  EXPECT_EQ(m.find("carol"), std::string::npos);  // only the failed recipient
  EXPECT_NE(m.find("Content-Type: message/rfc822\r\n"), std::string::npos);
  EXPECT_NE(m.find(kMessage), std::string::npos);
  EXPECT_TRUE(m.ends_with("--\r\n"));
  // Every line ends in CRLF and none is longer than 998 octets.
  size_t pos = 0;
  while (pos < m.size()) {
    size_t lf = m.find('\n', pos);
    ASSERT_NE(lf, std::string::npos);
    ASSERT_GT(lf, pos);
    EXPECT_EQ(m[lf - 1], '\r');
    EXPECT_LE(lf - pos + 1, 1000u);
    pos = lf + 1;
  }
}

TEST(BounceTest, HeadersOnlyForRetHdrsOrOversizedOriginals) {
  Envelope env = original();
  env.dsn_ret = "HDRS";
  std::string m = composeBounce(input(env));
  EXPECT_NE(m.find("Content-Type: text/rfc822-headers\r\n"), std::string::npos);
  EXPECT_NE(m.find("Message-ID: <m1@origin.test>"), std::string::npos);
  EXPECT_EQ(m.find("line one"), std::string::npos);

  env.dsn_ret = "FULL";
  BounceInput in = input(env);
  in.size_limit = 10;
  m = composeBounce(in);
  EXPECT_NE(m.find("text/rfc822-headers"), std::string::npos);
  EXPECT_EQ(m.find("line one"), std::string::npos);
}

// bounce_size_limit caps the notice whatever the message looks like: a message without
// an empty line is no header section of 236 KB, and a huge header section is cut too.
TEST(BounceTest, EveryNoticeFitsTheLimitWhateverTheMessage) {
  std::string no_blank_line = "Subject: no blank line\r\n";
  while (no_blank_line.size() < 236'000)
    no_blank_line += "BODY-TEXT " + std::string(60, 'b') + "\r\n";
  std::string huge_header;
  while (huge_header.size() < 236'000) huge_header += "X-Filler: " + std::string(60, 'h') + "\r\n";
  huge_header += "\r\nBODY-TEXT\r\n";
  Envelope env = original();
  for (const std::string* msg : {&no_blank_line, &huge_header}) {
    for (DsnAction action : {DsnAction::kFailed, DsnAction::kRelayed, DsnAction::kDelayed}) {
      for (size_t limit : {size_t{50000}, size_t{3000}, size_t{0}}) {
        BounceInput in = input(env);
        in.original_message = *msg;
        in.action = action;
        in.size_limit = limit;
        std::string m = composeBounce(in);
        EXPECT_EQ(m.find("BODY-TEXT"), std::string::npos) << limit;
        EXPECT_NE(m.find("text/rfc822-headers"), std::string::npos);
        if (limit > 0) {
          EXPECT_LE(m.size(), limit);
        }
        if (limit == 50000 && msg == &huge_header) {
          EXPECT_NE(m.find("X-Filler: hhh"), std::string::npos);  // as much as fits
          EXPECT_GT(m.size(), 45000u);
        }
      }
    }
  }
  // The subject line of the message without a blank line is its whole header section.
  BounceInput in = input(env);
  in.original_message = no_blank_line;
  EXPECT_NE(composeBounce(in).find("Subject: no blank line\r\n\r\n--"), std::string::npos);
}

// A report too long for one notice (many failed recipients with long replies) is split:
// every notice fits, every recipient is reported exactly once.
TEST(BounceTest, ManyRecipientsAreSplitOverNoticesThatFit) {
  Envelope env = original();
  env.recipients.clear();
  BounceInput in = input(env);
  in.failed.clear();
  for (uint32_t i = 0; i < 300; ++i) {
    env.recipients.push_back("user" + std::to_string(i) + "@dest.test");
    in.failed.push_back({i, "5.1.1", "550 5.1.1 " + std::string(600, 'd'), "mx.dest.test",
                         "mx.dest.test said: 550 " + std::string(300, 'r')});
  }
  in.original = &env;
  const std::vector<std::string> notices = composeNotices(in);
  EXPECT_GT(notices.size(), 5u);
  std::vector<int> seen(300, 0);
  for (const auto& n : notices) {
    EXPECT_LE(n.size(), in.size_limit);
    for (uint32_t i = 0; i < 300; ++i) {
      if (n.find("Final-Recipient: rfc822; user" + std::to_string(i) + "@dest.test\r\n") !=
          std::string::npos) {
        ++seen[i];
      }
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 300);
  // One notice when it fits.
  in.failed.resize(3);
  EXPECT_EQ(composeNotices(in).size(), 1u);
}

TEST(BounceTest, SmallMessageReturnedWholeWithinTheLimit) {
  Envelope env = original();
  BounceInput in = input(env);
  in.size_limit = 5000;
  std::string m = composeBounce(in);
  EXPECT_NE(m.find("Content-Type: message/rfc822\r\n"), std::string::npos);
  EXPECT_NE(m.find(kMessage), std::string::npos);
  EXPECT_LE(m.size(), 5000u);
}

TEST(BounceTest, BoundaryIsUnpredictable) {
  Envelope env = original();
  auto boundaryOf = [](const std::string& m) {
    size_t b = m.find("boundary=\"");
    EXPECT_NE(b, std::string::npos);
    return m.substr(b + 10, m.find('"', b + 10) - b - 10);
  };
  std::string a = boundaryOf(composeBounce(input(env)));
  std::string b = boundaryOf(composeBounce(input(env)));  // same inputs, same time
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find(queueIdString(env.id)), std::string::npos);
  EXPECT_GE(a.size(), 32u);
}

TEST(BounceTest, NotifyAndNullSender) {
  EXPECT_TRUE(notifyOnFailure(""));
  EXPECT_TRUE(notifyOnFailure("FAILURE"));
  EXPECT_TRUE(notifyOnFailure("success,failure"));
  EXPECT_FALSE(notifyOnFailure("NEVER"));
  EXPECT_FALSE(notifyOnFailure("SUCCESS,DELAY"));
  Envelope env = original();
  EXPECT_TRUE(bounceWanted(env));
  env.sender.clear();
  EXPECT_FALSE(bounceWanted(env));
}

TEST(BounceTest, StatusFromReply) {
  EXPECT_EQ(statusFromReply(550, "5.1.1 no such user"), "5.1.1");
  EXPECT_EQ(statusFromReply(554, "5.7.1"), "5.7.1");
  EXPECT_EQ(statusFromReply(550, "no such user"), "5.0.0");
  EXPECT_EQ(statusFromReply(550, "4.1.1 mismatched class"), "5.0.0");
  EXPECT_EQ(statusFromReply(552, "5.3.4x"), "5.0.0");
  EXPECT_EQ(statusFromReply(451, "4.4.7 expired"), "4.4.7");
}

TEST(BounceTest, RelayedAndDelayedNoticesQuoteOnlyTheHeader) {
  Envelope env = original();
  BounceInput in = input(env);
  in.action = DsnAction::kRelayed;
  in.failed = {{1, "2.0.0", "250 2.0.0 ok", "hop.test", "relayed to hop.test"}};
  std::string m = composeBounce(in);
  EXPECT_NE(m.find("Subject: Successful Mail Delivery Report\r\n"), std::string::npos);
  EXPECT_NE(m.find("Final-Recipient: rfc822; carol@dest.test\r\nAction: relayed\r\n"
                   "Status: 2.0.0\r\n"),
            std::string::npos);
  EXPECT_NE(m.find("Content-Type: text/rfc822-headers\r\n"), std::string::npos);
  EXPECT_EQ(m.find("line one"), std::string::npos);  // RET=FULL is for failures only
  EXPECT_EQ(m.find("Will-Retry-Until"), std::string::npos);

  in.action = DsnAction::kDelayed;
  in.retry_until_ms = env.received_ms + 5 * 86400'000LL;
  in.failed = {{0, "4.2.1", "451 4.2.1 busy", "", "not delivered yet"}};
  m = composeBounce(in);
  EXPECT_NE(m.find("Subject: Delayed Mail (still being retried)\r\n"), std::string::npos);
  EXPECT_NE(m.find("Action: delayed\r\nStatus: 4.2.1\r\n"), std::string::npos);
  EXPECT_NE(m.find("Will-Retry-Until: "), std::string::npos);
  EXPECT_EQ(m.find("line one"), std::string::npos);
}

TEST(BounceTest, NotifyForSuccessAndDelay) {
  EXPECT_FALSE(notifyOnSuccess(""));
  EXPECT_TRUE(notifyOnSuccess("success,failure"));
  EXPECT_FALSE(notifyOnSuccess("FAILURE,DELAY"));
  EXPECT_TRUE(notifyOnDelay(""));  // by default, once the operator turns warnings on
  EXPECT_TRUE(notifyOnDelay("DELAY"));
  EXPECT_FALSE(notifyOnDelay("FAILURE"));
  EXPECT_FALSE(notifyOnDelay("NEVER"));
}

}  // namespace
}  // namespace postern
