// Routing policies on scripted candidates.
#include "gateway/routing/routing_policy.h"

#include <gtest/gtest.h>

#include <map>
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

TEST(RoutingPolicyTest, AffinityPrefersDeviceThenHostWithinTheBound) {
  auto p = Policy("adapter-affinity");
  auto c = Idle(kWorkers);
  for (auto& x : c) x.load = 2;
  c[1].residency = kInHost;
  c[3].residency = kOnDevice;
  RouteDecision d = p->Pick("a", c);
  EXPECT_EQ(d.chosen, 3) << d.reason;
  EXPECT_NE(d.reason.find("on the device"), std::string::npos);
  c[3].load = 6;  // over 1.25 x mean: spill to host residency
  d = p->Pick("a", c);
  EXPECT_EQ(d.chosen, 1) << d.reason;
  EXPECT_NE(d.reason.find("host memory"), std::string::npos);
}

TEST(RoutingPolicyTest, AffinityHomeIsStableAndSpreadsAdapters) {
  auto p = Policy("adapter-affinity");
  auto c = Idle(kWorkers);
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

TEST(RoutingPolicyTest, AffinitySpillsPastTheBoundAndPrefetchesAhead) {
  auto p = Policy("adapter-affinity");
  auto c = Idle(kWorkers);
  const int home = p->Pick("hot", c).chosen;
  c[home].residency = kOnDevice;
  c[home].load = 3;  // 3 + 1 fits its batch of 4 although the others idle
  EXPECT_EQ(p->Pick("hot", c).chosen, home);
  c[home].load = 4;  // 4 + 1 is past max(ceil(1.25 * 5 * 4 / 16), 4) = 4 and its queue slack (4.4)
  RouteDecision d = p->Pick("hot", c);
  EXPECT_NE(d.chosen, home);
  EXPECT_NE(d.reason.find("next in the adapter's rendezvous order"), std::string::npos) << d.reason;
  // The spill target does not hold the adapter: it is asked to prefetch.
  EXPECT_EQ(d.prefetch, d.chosen);
  c[d.chosen].residency = kOnDevice;
  EXPECT_EQ(p->Pick("hot", c).prefetch, -1);
  // The bounds always leave room somewhere: their sum exceeds the load.
  for (auto& x : c) x.load = 9;
  EXPECT_GE(p->Pick("hot", c).chosen, 0);
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
