// least-loaded: the candidate with the lowest load relative to its
// capacity; ties go to better adapter residency, then rotate.
#include <atomic>

#include "absl/strings/str_format.h"
#include "gateway/routing/policies.h"

namespace tessera::gateway {
namespace {

class LeastLoaded final : public RoutingPolicy {
 public:
  std::string_view name() const override { return "least-loaded"; }
  RouteDecision Pick(std::string_view, std::span<const RouteCandidate> c) override {
    const size_t start = next_.fetch_add(1, std::memory_order_relaxed) % c.size();
    int best = -1;
    double best_load = 0;
    for (size_t k = 0; k < c.size(); ++k) {
      const int i = static_cast<int>((start + k) % c.size());
      const double load = c[i].load / c[i].capacity;
      if (best < 0 || load < best_load || (load == best_load && c[i].residency > c[best].residency)) {
        best = i;
        best_load = load;
      }
    }
    return {best, -1, absl::StrFormat("least load %.2f of capacity", best_load)};
  }

 private:
  std::atomic<uint64_t> next_{0};
};

}  // namespace

std::unique_ptr<RoutingPolicy> MakeLeastLoadedPolicy() { return std::make_unique<LeastLoaded>(); }

}  // namespace tessera::gateway
