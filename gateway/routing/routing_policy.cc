#include "gateway/routing/routing_policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gateway/routing/policies.h"

namespace tessera::gateway {
namespace {

struct Registration {
  const char* name;
  std::unique_ptr<RoutingPolicy> (*make)();
};

// The registry: one line per policy.
constexpr Registration kPolicies[] = {
    {"adapter-affinity", MakeAdapterAffinityPolicy},
    {"least-loaded", MakeLeastLoadedPolicy},
    {"round-robin", MakeRoundRobinPolicy},
};

}  // namespace

absl::StatusOr<std::unique_ptr<RoutingPolicy>> CreateRoutingPolicy(std::string_view name) {
  for (const Registration& r : kPolicies) {
    if (name == r.name) return r.make();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown routing policy '", std::string(name), "'; choose one of ",
                                                 absl::StrJoin(RoutingPolicyNames(), ", ")));
}

std::vector<std::string> RoutingPolicyNames() {
  std::vector<std::string> out;
  for (const Registration& r : kPolicies) out.emplace_back(r.name);
  return out;
}

uint64_t StableHash(std::string_view a, std::string_view b) {
  // FNV-1a over a, a separator and b, then a splitmix64 finaliser so that
  // similar names spread over the whole range.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](unsigned char c) {
    h ^= c;
    h *= 1099511628211ull;
  };
  for (char c : a) mix(static_cast<unsigned char>(c));
  mix(0);
  for (char c : b) mix(static_cast<unsigned char>(c));
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace tessera::gateway
