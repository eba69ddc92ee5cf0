#include "relay/inbound/received.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

TEST(Received, FormatAndSanitisedHelo) {
  std::string out;
  appendReceived(out, ReceivedInfo{"evil)\r\nX-Injected: 1", "127.0.0.2", "relay.test", true, false,
                                   false, "0123456789ABCDEF", "a@b.test", 0});
  EXPECT_EQ(out,
            "Received: from evil___X-Injected:_1 ([127.0.0.2])\r\n"
            "\tby relay.test (Postern) with ESMTP id 0123456789ABCDEF\r\n"
            "\tfor <a@b.test>; Thu, 01 Jan 1970 00:00:00 +0000\r\n");
}

}  // namespace
}  // namespace postern
