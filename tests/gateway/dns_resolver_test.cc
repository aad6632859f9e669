#include "gateway/discovery/dns_resolver.h"

#include <gtest/gtest.h>

namespace tessera::gateway {
namespace {

TEST(DnsTargetTest, ParsesNameAndPort) {
  auto t = ParseDnsTarget("tessera-worker-headless.default.svc.cluster.local:50051");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->host, "tessera-worker-headless.default.svc.cluster.local");
  EXPECT_EQ(t->port, 50051);
  auto g = ParseDnsTarget("dns:///workers:7000");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->host, "workers");
  EXPECT_EQ(g->port, 7000);
}

TEST(DnsTargetTest, RejectsMalformedTargets) {
  for (const char* bad : {"", "workers", "workers:", ":50051", "workers:0", "workers:65536", "workers:http",
                          "workers:-1"}) {
    auto t = ParseDnsTarget(bad);
    EXPECT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseDnsTarget(std::string(300, 'a') + ":1").ok());
}

TEST(DnsResolverTest, RejectsAMalformedServer) {
  DnsTarget t{"workers", 1};
  for (const char* bad : {"nowhere", "127.0.0.1", "127.0.0.1:x", "::1:53", "300.1.1.1:53", "127.0.0.1:70000"}) {
    DnsOptions o;
    o.server = bad;
    auto r = ResolveWorkers(t, o);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace tessera::gateway
