#include "relay/outbound/tls_reports.h"

#include <gtest/gtest.h>

#include <string>

namespace postern {
namespace {

TEST(TlsReports, BuildsRfc8460JsonFromCountLines) {
  const std::string counts =
      "sts\tversion: STSv1\x1fmode: enforce\x1fmx: mx.a.test\tmx.a.test\t192.0.2.1\t\t3\n"
      "sts\tversion: STSv1\x1fmode: enforce\x1fmx: mx.a.test\tmx.a.test\t192.0.2.1\t\t2\n"
      "sts\tversion: STSv1\x1fmode: enforce\x1fmx: mx.a.test\tmx.a.test\t192.0.2.1\t"
      "starttls-not-supported\t1\n"
      "not a count line\n"
      "\n";
  const std::string json =
      TlsReports::buildReport("a.test", "2026-12-04", "Org \"Q\"", "pm@relay.test", counts);
  EXPECT_EQ(json,
            "{\"organization-name\":\"Org \\\"Q\\\"\",\"date-range\":{\"start-datetime\":"
            "\"2026-12-04T00:00:00Z\",\"end-datetime\":\"2026-12-04T23:59:59Z\"},"
            "\"contact-info\":\"pm@relay.test\",\"report-id\":\"2026-12-04_a.test\","
            "\"policies\":[{\"policy\":{\"policy-type\":\"sts\",\"policy-string\":"
            "[\"version: STSv1\",\"mode: enforce\",\"mx: mx.a.test\"],\"policy-domain\":"
            "\"a.test\",\"mx-host\":[\"mx.a.test\"]},\"summary\":{"
            "\"total-successful-session-count\":5,\"total-failure-session-count\":1},"
            "\"failure-details\":[{\"result-type\":\"starttls-not-supported\","
            "\"receiving-mx-hostname\":\"mx.a.test\",\"receiving-ip\":\"192.0.2.1\","
            "\"failed-session-count\":1}]}]}\n");
}

TEST(TlsReports, NoLinesNoPolicies) {
  EXPECT_NE(TlsReports::buildReport("a.test", "2026-12-04", "o", "c", "").find("\"policies\":[]"),
            std::string::npos);
}

}  // namespace
}  // namespace postern
