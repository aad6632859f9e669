// adapter-affinity (the default): send a request where its adapter already
// is, and keep each adapter on as few workers as its load needs.
//
//  1. Workers holding the adapter on the device, then in host memory, win,
//     least loaded first, as long as they are under the load bound; a worker
//     holding it on the device keeps it a little past the bound (a short
//     queue) before the adapter is loaded anywhere else.
//  2. Otherwise the adapter goes to its rendezvous-hash home (the first
//     worker, in the adapter's own hash order, that is under the bound), so
//     every gateway replica places a cold adapter on the same worker.
//  3. Every worker over its bound cannot happen (the bounds add up to more
//     than the load), but if it did the least loaded one would take it.
//
// The bound is that of consistent hashing with bounded loads (Mirrokni,
// Thorup and Zadimoghaddam): a worker may take a request while its load
// stays within kBound times its capacity-weighted share of the total (and
// always while it has a free batch slot). A worker chosen for an adapter it
// does not hold on the device is asked to prefetch it at once. (Warming the
// next worker in the hash order ahead of a spill was tried and dropped: in
// the routing experiment it tripled adapter loads by evicting warm ones.)
//
// Base-model requests go to the least loaded worker.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "gateway/routing/policies.h"

namespace tessera::gateway {
namespace {

constexpr double kBound = 1.25;
// How far past its bound a worker holding the adapter still takes it: a
// short wait for a batch slot costs less than loading the adapter on a
// worker that lacks it.
constexpr double kQueueSlack = 1.1;

class AdapterAffinity final : public RoutingPolicy {
 public:
  std::string_view name() const override { return "adapter-affinity"; }

  RouteDecision Pick(std::string_view adapter, std::span<const RouteCandidate> c) override {
    double load = 1, capacity = 0;  // + 1: this request
    for (const RouteCandidate& x : c) {
      load += x.load;
      capacity += x.capacity;
    }
    // Worker i's bound: its share of the total load (by capacity) times
    // kBound, rounded up as in the paper so that an even spread fits; and
    // never below its batch capacity, since a batch slot is nearly free
    // next to an adapter load elsewhere.
    auto limit = [&](int i) {
      return std::max(std::ceil(kBound * load * c[i].capacity / capacity), c[i].capacity);
    };
    auto after = [&](int i) { return (c[i].load + 1) / c[i].capacity; };
    auto under = [&](int i) { return c[i].load + 1 <= limit(i); };
    auto least_loaded = [&](auto&& eligible) {
      int best = -1;
      for (int i = 0; i < static_cast<int>(c.size()); ++i) {
        if (eligible(i) && (best < 0 || after(i) < after(best))) best = i;
      }
      return best;
    };
    if (adapter.empty()) {
      const int i = least_loaded([](int) { return true; });
      return {i, -1, absl::StrFormat("base model: least loaded (%.2f of capacity)", after(i))};
    }
    // The adapter's rendezvous order: highest hash first.
    std::vector<int> order(c.size());
    for (int i = 0; i < static_cast<int>(c.size()); ++i) order[i] = i;
    std::vector<uint64_t> h(c.size());
    for (size_t i = 0; i < c.size(); ++i) h[i] = StableHash(adapter, c[i].address);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return h[a] > h[b]; });

    RouteDecision d;
    if (int i = least_loaded([&](int k) { return c[k].residency == kOnDevice && under(k); }); i >= 0) {
      d = {i, -1, absl::StrFormat("adapter on the device, load %g of bound %g", c[i].load + 1, limit(i))};
    } else if (int q = least_loaded([&](int k) {
                 return c[k].residency == kOnDevice && c[k].load + 1 <= kQueueSlack * limit(k);
               });
               q >= 0) {
      d = {q, -1, absl::StrFormat("adapter on the device, queueing (load %g of bound %g) beats a load elsewhere",
                                  c[q].load + 1, limit(q))};
    } else if (int j = least_loaded([&](int k) { return c[k].residency == kInHost && under(k); }); j >= 0) {
      d = {j, -1, absl::StrFormat("adapter in host memory, load %g of bound %g", c[j].load + 1, limit(j))};
    } else {
      for (int k : order) {
        if (under(k)) {
          d = {k, -1,
               k == order[0]
                   ? absl::StrFormat("rendezvous home of the adapter, load %g of bound %g", c[k].load + 1, limit(k))
                   : absl::StrFormat("next in the adapter's rendezvous order (home over its bound), load %g of %g",
                                     c[k].load + 1, limit(k))};
          break;
        }
      }
      if (d.chosen < 0) {
        const int k = least_loaded([](int) { return true; });
        d = {k, -1, absl::StrFormat("every worker over its bound: least loaded (%g)", c[k].load + 1)};
      }
    }
    // Placing the adapter where it is not on the device: ask that worker to
    // start loading it now, so that the load overlaps the request's wait for
    // a batch slot instead of following it.
    if (c[d.chosen].residency != kOnDevice) d.prefetch = d.chosen;
    return d;
  }
};

}  // namespace

std::unique_ptr<RoutingPolicy> MakeAdapterAffinityPolicy() { return std::make_unique<AdapterAffinity>(); }

}  // namespace tessera::gateway
