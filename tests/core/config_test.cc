#include "core/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace postern {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    // ctest runs every test case as its own process, two at a time: a shared file name
    // let one case read the config another was writing (CI saw it).
    path_ = ::testing::TempDir() + "postern_config_test_" + std::to_string(getpid()) + ".toml";
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
  // A message that would not fit one spool record is refused at load, not acknowledged
  // and then unreadable at the next start.
  EXPECT_NE(errorOf(write(l + "[limits]\nmessage_size = 1073741824\n")).find("spool record"),
            std::string::npos);
  EXPECT_NE(errorOf(write(l + "[limits]\nmessage_size = 700000000\nrecipients = 100000\n"))
                .find("limits.message_size"),
            std::string::npos);
  EXPECT_NO_THROW(loadConfig(write(l + "[limits]\nmessage_size = 500000000\n")));
}

TEST_F(ConfigTest, MissingFileIsNamed) {
  EXPECT_NE(errorOf("/nonexistent/postern.toml").find("/nonexistent/postern.toml"),
            std::string::npos);
}

TEST_F(ConfigTest, DuplicateListenerIsNamedWithItsLine) {
  std::string err =
      errorOf(write("[[listener]]\naddress = \"127.0.0.1:25\"\n"
                    "[[listener]]\naddress = \"127.0.0.1:25\"\n"
                    "require_tls = true\n"));
  EXPECT_NE(err.find(":4:"), std::string::npos) << err;
  EXPECT_NE(err.find("listener.address"), std::string::npos) << err;
  EXPECT_NE(err.find("already a listener"), std::string::npos) << err;
}

constexpr const char* kListener = "[[listener]]\naddress = \"127.0.0.1:2525\"\n";

TEST_F(ConfigTest, RoutesTakeDefaultsAndAMxFallback) {
  Config c =
      loadConfig(write(std::string(kListener) +
                       "[delivery]\nconnections_per_host = 7\nmessages_per_connection = 9\n"
                       "[[route]]\ndomain = \"*.Example.com\"\nnext_hop = \"smart.example:587\"\n"
                       "tls = \"required\"\nmax_connections = 2\nmax_rate = 0.5\n"));
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_EQ(c.routes[0].domain, "*.example.com");
  EXPECT_EQ(c.routes[0].tls, TlsPolicy::kRequired);
  EXPECT_EQ(c.routes[0].max_connections, 2u);
  EXPECT_EQ(c.routes[0].messages_per_connection, 9u);  // from [delivery]
  EXPECT_DOUBLE_EQ(c.routes[0].max_rate, 0.5);
  // No route for "*": every other domain goes by MX.
  EXPECT_EQ(c.routes[1].domain, "*");
  EXPECT_TRUE(c.routes[1].isMx());
  EXPECT_EQ(c.routes[1].max_connections, 7u);
}

TEST_F(ConfigTest, BadRoutesAreNamed) {
  auto route = [&](const std::string& body) {
    return errorOf(write(std::string(kListener) + "[[route]]\n" + body));
  };
  EXPECT_NE(route("domain = \"a..b\"\nnext_hop = \"mx\"\n").find("route.domain"),
            std::string::npos);
  EXPECT_NE(route("domain = \"*x.com\"\nnext_hop = \"mx\"\n").find("route.domain"),
            std::string::npos);
  EXPECT_NE(route("domain = \"a.com\"\n").find("route.next_hop: is required"), std::string::npos);
  EXPECT_NE(route("domain = \"a.com\"\nnext_hop = \"h:99999\"\n").find("route.next_hop"),
            std::string::npos);
  EXPECT_NE(route("domain = \"a.com\"\nnext_hop = \"mx\"\ntls = \"maybe\"\n").find("route.tls"),
            std::string::npos);
  EXPECT_NE(route("domain = \"a.com\"\nnext_hop = \"mx\"\nmax_rate = 0\n").find("route.max_rate"),
            std::string::npos);
  EXPECT_NE(
      errorOf(write(std::string(kListener) + "[[route]]\ndomain = \"a.com\"\nnext_hop = \"mx\"\n"
                                             "[[route]]\ndomain = \"A.com\"\nnext_hop = \"mx\"\n"))
          .find("more than one"),
      std::string::npos);
  EXPECT_NE(errorOf(write(std::string(kListener) + "[dns]\nservers = [\"resolver.example\"]\n"))
                .find("dns.servers"),
            std::string::npos);
  Config ok = loadConfig(write(std::string(kListener) +
                               "[dns]\nservers = [\"127.0.0.1:5353\", \"::1\", \"10.0.0.1\"]\n"));
  EXPECT_EQ(ok.dns.servers.size(), 3u);
}

TEST_F(ConfigTest, TlsSecondCertificateAndSessionLifetime) {
  auto tls = [&](const std::string& body) {
    return std::string(kListener) + "[tls]\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n" +
           body;
  };
  Config c =
      loadConfig(write(tls("ecdsa_certificate = \"e.pem\"\necdsa_private_key = \"e.key\"\n")));
  EXPECT_EQ(c.tls.ecdsa_certificate, "e.pem");
  EXPECT_EQ(c.tls.session_lifetime, 7200);
  EXPECT_EQ(loadConfig(write(tls("session_lifetime = 0\n"))).tls.session_lifetime, 0);
  EXPECT_EQ(loadConfig(write(tls("session_lifetime = 60\n"))).tls.session_lifetime, 60);
  EXPECT_NE(errorOf(write(tls("ecdsa_certificate = \"e.pem\"\n"))).find("go together"),
            std::string::npos);
  EXPECT_NE(errorOf(write(tls("session_lifetime = -1\n"))).find("tls.session_lifetime"),
            std::string::npos);
  EXPECT_NE(errorOf(write(std::string(kListener) +
                          "[tls]\necdsa_certificate = \"e.pem\"\necdsa_private_key = \"e.key\"\n"))
                .find("RSA pair"),
            std::string::npos);
}

TEST_F(ConfigTest, MiltersAndTheListenersThatUseThem) {
  const std::string two =
      "[[listener]]\naddress = \"127.0.0.1:2526\"\nmilters = [\"dkim\"]\n"
      "[[milter]]\nname = \"spam\"\naddress = \"inet:localhost:11332\"\n"
      "[[milter]]\nname = \"dkim\"\naddress = \"unix:/run/opendkim.sock\"\ntimeout = 2\n"
      "default_action = \"accept\"\n";
  Config c = loadConfig(write(std::string(kListener) + two));
  ASSERT_EQ(c.milters.size(), 2u);
  EXPECT_EQ(c.milters[0].path, "");
  EXPECT_EQ(c.milters[0].inet.ss_family, AF_INET);
  EXPECT_EQ(c.milters[0].timeout, 30);
  EXPECT_EQ(c.milters[0].default_action, MilterConfig::DefaultAction::kTempfail);
  EXPECT_EQ(c.milters[1].path, "/run/opendkim.sock");
  EXPECT_EQ(c.milters[1].default_action, MilterConfig::DefaultAction::kAccept);
  EXPECT_EQ(c.miltersFor(c.listeners[0].address), (std::vector<size_t>{0, 1}));  // default: all
  EXPECT_EQ(c.miltersFor("127.0.0.1:2526"), (std::vector<size_t>{1}));

  auto milter = [&](const std::string& body) {
    return errorOf(write(std::string(kListener) + "[[milter]]\n" + body));
  };
  EXPECT_NE(milter("name = \"m\"\naddress = \"inet:mail.example:25\"\n").find("milter.address"),
            std::string::npos);
  EXPECT_NE(milter("name = \"m\"\naddress = \"tcp:1.2.3.4:25\"\n").find("milter.address"),
            std::string::npos);
  EXPECT_NE(milter("address = \"unix:/x\"\n").find("milter.name"), std::string::npos);
  EXPECT_NE(milter("name = \"m\"\naddress = \"unix:/x\"\ntimeout = 0\n").find("milter.timeout"),
            std::string::npos);
  EXPECT_NE(milter("name = \"m\"\naddress = \"unix:/x\"\ndefault_action = \"reject\"\n")
                .find("milter.default_action"),
            std::string::npos);
  EXPECT_NE(milter("name = \"m\"\naddress = \"unix:/x\"\n[[milter]]\nname = \"m\"\n"
                   "address = \"unix:/y\"\n")
                .find("already a milter"),
            std::string::npos);
  EXPECT_NE(errorOf(write("[[listener]]\naddress = \"127.0.0.1:2525\"\nmilters = [\"nope\"]\n"))
                .find("no [[milter]] named \"nope\""),
            std::string::npos);
}

TEST_F(ConfigTest, DaneRoutesAndTheDefaultTlsPolicy) {
  Config c = loadConfig(write(std::string(kListener) +
                              "[[route]]\ndomain = \"a.test\"\nnext_hop = \"mx\"\n"
                              "[[route]]\ndomain = \"b.test\"\nnext_hop = \"mx\"\ntls = \"none\"\n"
                              "[delivery]\ntls = \"dane\"\n[dns]\ndnssec = true\n"));
  ASSERT_GE(c.routes.size(), 3u);
  EXPECT_EQ(c.routes[0].tls, TlsPolicy::kDane);  // the [delivery] default
  EXPECT_EQ(c.routes[1].tls, TlsPolicy::kNone);  // its own
  EXPECT_EQ(c.routes[2].tls, TlsPolicy::kDane);  // the implicit "*" route
  EXPECT_TRUE(c.dns.dnssec);
  EXPECT_NE(errorOf(write(std::string(kListener) +
                          "[[route]]\ndomain = \"a.test\"\nnext_hop = \"mx\"\ntls = \"dane\"\n"))
                .find("needs [dns] dnssec = true"),
            std::string::npos);
  EXPECT_NE(errorOf(write(std::string(kListener) + "[delivery]\ntls = \"sometimes\"\n"))
                .find("delivery.tls"),
            std::string::npos);
}

TEST_F(ConfigTest, ReloadCheckIntervalIsBounded) {
  auto server = [&](const std::string& v) {
    return errorOf(write("[server]\nreload_check_interval = " + v + "\n" + kListener));
  };
  EXPECT_NE(server("0.05").find("server.reload_check_interval"), std::string::npos);
  EXPECT_NE(server("3601").find("server.reload_check_interval"), std::string::npos);
  EXPECT_EQ(server("0.1"), "");
  EXPECT_EQ(server("3600"), "");
}

}  // namespace
}  // namespace postern
