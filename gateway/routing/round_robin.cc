// round-robin: each request to the next candidate, blind to load and
// adapters. The baseline of the routing experiment.
#include <atomic>

#include "gateway/routing/policies.h"

namespace tessera::gateway {
namespace {

class RoundRobin final : public RoutingPolicy {
 public:
  std::string_view name() const override { return "round-robin"; }
  RouteDecision Pick(std::string_view, std::span<const RouteCandidate> c) override {
    return {static_cast<int>(next_.fetch_add(1, std::memory_order_relaxed) % c.size()), -1, "next in turn"};
  }

 private:
  std::atomic<uint64_t> next_{0};
};

}  // namespace

std::unique_ptr<RoutingPolicy> MakeRoundRobinPolicy() { return std::make_unique<RoundRobin>(); }

}  // namespace tessera::gateway
