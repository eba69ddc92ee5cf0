#include "core/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace postern {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    path_ = ::testing::TempDir() + "postern_config_test.toml";
    std::ofstream(path_) << text;
    return path_;
  }
  void TearDown() override { std::remove(path_.c_str()); }
  std::string path_;
};

std::string errorOf(const std::string& path) {
  try {
    loadConfig(path);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST_F(ConfigTest, DefaultConfigLoads) {
  Config c = loadConfig(std::string(POSTERN_SOURCE_DIR) + "/deploy/postern.toml");
  EXPECT_EQ(c.hostname, "relay.example.com");
  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].address, "127.0.0.1:2525");
  ASSERT_EQ(c.routes.size(), 1u);
  EXPECT_EQ(c.routes[0].next_hop, "127.0.0.1:2526");
  EXPECT_EQ(c.limits.message_size, 25u << 20);
  EXPECT_GE(c.workers, 1u);
}

TEST_F(ConfigTest, UnknownKeyNamesKeyAndLine) {
  std::string err =
      errorOf(write("[server]\nhostname = \"a\"\nhostnme = \"b\"\n"
                    "[[listener]]\naddress = \"127.0.0.1:25\"\n"));
  EXPECT_NE(err.find(":3:"), std::string::npos) << err;
  EXPECT_NE(err.find("server.hostnme"), std::string::npos) << err;
}

TEST_F(ConfigTest, WrongTypeAndImpossibleValues) {
  std::string l = "[[listener]]\naddress = \"127.0.0.1:25\"\n";
  EXPECT_NE(errorOf(write(l + "[limits]\nrecipients = \"many\"\n")).find("limits.recipients"),
            std::string::npos);
  EXPECT_NE(errorOf(write(l + "[limits]\nrecipients = 0\n")).find("between"), std::string::npos);
  EXPECT_NE(errorOf(write("[[listener]]\naddress = \"nowhere\"\n")).find("listener.address"),
            std::string::npos);
  EXPECT_NE(
      errorOf(write(l + "[relay]\nrelay_networks = [\"10.0.0.0/99\"]\n")).find("relay_networks"),
      std::string::npos);
  EXPECT_NE(errorOf(write(l + "[server]\nworkers = \"many\"\n")).find("server.workers"),
            std::string::npos);
  EXPECT_NE(errorOf(write("[server]\nhostname = \"a\"\n")).find("listener"), std::string::npos);
  EXPECT_NE(errorOf(write("[server\n")).find(":1:"), std::string::npos);
}

TEST_F(ConfigTest, MissingFileIsNamed) {
  EXPECT_NE(errorOf("/nonexistent/postern.toml").find("/nonexistent/postern.toml"),
            std::string::npos);
}

}  // namespace
}  // namespace postern
