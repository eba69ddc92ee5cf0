#include "relay/reload.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

namespace postern {
namespace {

bool has(const std::vector<std::string>& keys, const std::string& key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

TEST(KeepFixedSettings, NamesChangedFixedKeysAndKeepsTheirRunningValues) {
  Config running;
  running.workers = 2;
  running.spool_dir = "/spool/a";
  running.listeners.push_back({"127.0.0.1:25", false, {}, false});
  running.hostname = "old.test";

  Config next = running;
  EXPECT_TRUE(keepFixedSettings(running, next).empty());

  next.workers = 4;
  next.spool_dir = "/spool/b";
  next.listeners[0].require_tls = true;
  next.dns.servers = {"127.0.0.53"};
  next.hostname = "new.test";  // reloadable
  next.limits.recipients = 7;  // reloadable
  const auto changed = keepFixedSettings(running, next);
  EXPECT_EQ(changed.size(), 4u);
  EXPECT_TRUE(has(changed, "server.workers"));
  EXPECT_TRUE(has(changed, "server.spool_dir"));
  EXPECT_TRUE(has(changed, "listener"));
  EXPECT_TRUE(has(changed, "dns"));
  EXPECT_EQ(next.workers, 2u);
  EXPECT_EQ(next.spool_dir, "/spool/a");
  EXPECT_FALSE(next.listeners[0].require_tls);
  EXPECT_TRUE(next.dns.servers.empty());
  EXPECT_EQ(next.hostname, "new.test");
  EXPECT_EQ(next.limits.recipients, 7u);
}

class PrepareReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "postern_reload_test_" + std::to_string(getpid()) + ".toml";
  }
  void TearDown() override { std::remove(path_.c_str()); }
  Result<ReloadPlan> prepare(const std::string& extra) {
    std::ofstream(path_) << "[server]\nspool_dir = \"/spool/file\"\n[[listener]]\n"
                            "address = \"127.0.0.1:2525\"\n"
                         << extra;
    return prepareReload(path_, "/spool/cli", running_);
  }
  // Why prepare(extra) refused the file; "" if it did not.
  std::string refusal(const std::string& extra) {
    Result<ReloadPlan> plan = prepare(extra);
    return plan ? "" : plan.error();
  }
  std::string path_;
  Config running_ = [] {
    Config c;
    c.spool_dir = "/spool/cli";
    c.listeners.push_back({"127.0.0.1:2525", false, {}, false});
    return c;
  }();
};

TEST_F(PrepareReloadTest, AcceptsAGoodFileWithTheCommandLineSpoolDir) {
  Result<ReloadPlan> prepared = prepare("[limits]\nrecipients = 3\n");
  ASSERT_TRUE(prepared) << prepared.error();
  const ReloadPlan& plan = *prepared;
  ASSERT_TRUE(plan.config);
  EXPECT_EQ(plan.config->limits.recipients, 3u);
  EXPECT_EQ(plan.config->spool_dir, "/spool/cli");
  EXPECT_FALSE(has(plan.restart_required, "server.spool_dir"));
  EXPECT_EQ(plan.tls.server, nullptr);
  EXPECT_EQ(plan.tls.verifying, nullptr);
}

TEST_F(PrepareReloadTest, RefusesWhatCannotBeApplied) {
  EXPECT_NE(refusal("[limits]\nrecipents = 3\n").find("recipents"), std::string::npos);
  EXPECT_NE(refusal("[limits]\ncommand_line = 65536\n").find("limits.command_line"),
            std::string::npos);
  EXPECT_NE(
      refusal("[tls]\ncertificate = \"/nonexistent.pem\"\nprivate_key = \"/nonexistent.key\"\n")
          .find("tls:"),
      std::string::npos);
  EXPECT_NE(refusal("[delivery]\nca_file = \"/nonexistent.pem\"\n[[route]]\ndomain = \"*\"\n"
                    "next_hop = \"127.0.0.1:25\"\ntls = \"required\"\n")
                .find("delivery.ca_file"),
            std::string::npos);
}

}  // namespace
}  // namespace postern
