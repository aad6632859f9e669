// Routing policies on scripted candidates.
#include "gateway/routing/routing_policy.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace tessera::gateway {
namespace {

std::unique_ptr<RoutingPolicy> Policy(const char* name) {
  auto p = CreateRoutingPolicy(name);
  EXPECT_TRUE(p.ok()) << p.status();
  return std::move(*p);
}

std::vector<RouteCandidate> Idle(const std::vector<std::string>& addresses) {
  std::vector<RouteCandidate> c;
  for (const auto& a : addresses) c.push_back({a, kOnDisk, 0, 4});
  return c;
}

const std::vector<std::string> kWorkers = {"w0:1", "w1:1", "w2:1", "w3:1"};

TEST(RoutingPolicyTest, RegistryNamesPolicies) {
  EXPECT_EQ(RoutingPolicyNames(), (std::vector<std::string>{"adapter-affinity", "least-loaded", "round-robin"}));
  auto bad = CreateRoutingPolicy("random");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("adapter-affinity"), std::string::npos);
}

TEST(RoutingPolicyTest, RoundRobinCycles) {
  auto p = Policy("round-robin");
  auto c = Idle(kWorkers);
  std::vector<int> seen;
  for (int i = 0; i < 8; ++i) seen.push_back(p->Pick("a", c).chosen);
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3}));
}

TEST(RoutingPolicyTest, LeastLoadedUsesLoadPerCapacityThenResidency) {
  auto p = Policy("least-loaded");
  auto c = Idle(kWorkers);
  c[0].load = 2;
  c[1].load = 4;
  c[1].capacity = 8;  // 0.5 per unit: ties with w2
  c[2].load = 2;
  c[2].residency = kOnDevice;
  c[3].load = 3;
  EXPECT_EQ(p->Pick("a", c).chosen, 2);
}

// Spreads the policy's traffic counts over many adapters, so that the one
// under test is a small share of the traffic (one home).
void WarmDemand(RoutingPolicy& p, const std::vector<RouteCandidate>& c) {
  for (int i = 0; i < 200; ++i) p.Pick("background-" + std::to_string(i), c);
}

TEST(RoutingPolicyTest, AffinityPrefersDeviceThenHomeThenHost) {
  auto p = Policy("adapter-affinity");
  auto c = Idle(kWorkers);
  WarmDemand(*p, c);
  for (auto& x : c) x.load = 2;
  c[3].residency = kOnDevice;
  RouteDecision d = p->Pick("a", c);
  EXPECT_EQ(d.chosen, 3) << d.reason;
  EXPECT_EQ(d.prefetch, -1);
  EXPECT_NE(d.reason.find("on the device"), std::string::npos);
  // Full batch (4), and no short queue allowed (6 + 1 > 1.1 * 4): the
  // adapter's home takes it and is asked to prefetch it.
  c[3].load = 6;
  d = p->Pick("a", c);
  EXPECT_NE(d.chosen, 3);
  EXPECT_NE(d.reason.find("home of the adapter"), std::string::npos) << d.reason;
  EXPECT_EQ(d.prefetch, d.chosen);
  // Its home full too: host memory beats a cold worker.
  const int home = d.chosen;
  c[home].load = 4;
  const int host = home == 1 ? 2 : 1;
  c[host].residency = kInHost;
  d = p->Pick("a", c);
  EXPECT_EQ(d.chosen, host) << d.reason;
  EXPECT_NE(d.reason.find("host memory"), std::string::npos) << d.reason;
  // No room anywhere it is warm, and the holder's queue would be too long:
  // the next worker in its order takes it.
  c[3].load = 4;  // 4 + 1 <= 1.1 * 4? no: 5 > 4.4
  c[host].residency = kOnDisk;
  d = p->Pick("a", c);
  EXPECT_NE(d.reason.find("spill"), std::string::npos) << d.reason;
}

TEST(RoutingPolicyTest, AffinityHomeIsStableAndSpreadsAdapters) {
  auto p = Policy("adapter-affinity");
  auto c = Idle(kWorkers);
  WarmDemand(*p, c);
  std::map<int, int> homes;
  for (int a = 0; a < 400; ++a) {
    const std::string name = "adapter-" + std::to_string(a);
    const int home = p->Pick(name, c).chosen;
    // Same answer whatever the candidate order (every gateway agrees).
    auto reversed = c;
    std::reverse(reversed.begin(), reversed.end());
    EXPECT_EQ(reversed[p->Pick(name, reversed).chosen].address, c[home].address);
    ++homes[home];
  }
  ASSERT_EQ(homes.size(), 4u);
  for (const auto& [w, n] : homes) EXPECT_GT(n, 60) << w;  // ~100 each
}

TEST(RoutingPolicyTest, AffinityGivesAHotAdapterSeveralHomes) {
  auto p = Policy("adapter-affinity");
  auto c = Idle(kWorkers);
  WarmDemand(*p, c);
  // A cold adapter keeps one home while its home has room.
  std::set<int> cold;
  for (int i = 0; i < 3; ++i) {
    c[0].load = c[1].load = c[2].load = c[3].load = 1;
    cold.insert(p->Pick("cold", c).chosen);
  }
  EXPECT_EQ(cold.size(), 1u);
  // Half of the traffic: it gets every worker as a home, and requests go to
  // the least loaded of them.
  for (int i = 0; i < 400; ++i) p->Pick("hot", c);
  for (int w = 0; w < 4; ++w) {
    for (auto& x : c) x.load = 3;
    c[w].load = 0;
    RouteDecision d = p->Pick("hot", c);
    EXPECT_EQ(d.chosen, w) << d.reason;
    EXPECT_NE(d.reason.find("4 of 4 homes"), std::string::npos) << d.reason;
  }
}

TEST(RoutingPolicyTest, AffinitySendsBaseModelToLeastLoaded) {
  auto p = Policy("adapter-affinity");
  auto c = Idle(kWorkers);
  c[0].load = 1;
  c[1].load = 1;
  c[3].load = 1;
  EXPECT_EQ(p->Pick("", c).chosen, 2);
}

}  // namespace
}  // namespace tessera::gateway
