// adapter-affinity (the default): send a request where its adapter already
// is, and keep each adapter on as few workers as its load needs.
//
// Each adapter has an ordered list of workers, its rendezvous-hash order
// (the same on every gateway replica), and a number of homes: the first
// workers of that list. An adapter gets as many homes as its share of the
// recent traffic needs (so that it brings at most kHomeShare of one
// worker's fair share to each), which spreads a hot adapter over several
// workers before it overloads one, and leaves a cold one on a single
// worker. For a request:
//  1. a worker holding the adapter on the device, with room, least loaded
//     first;
//  2. a home with room (asked to prefetch the adapter if it lacks it);
//  3. a worker holding the adapter on the device with a short queue, which
//     costs less than loading the adapter elsewhere;
//  4. a worker holding it in host memory, with room;
//  5. the next worker in the adapter's order with room (a spill);
//  6. the least loaded worker (cannot happen while the bounds add up to more
//     than the load, kept as a guard).
// "Room": while the cluster is not overloaded a worker takes requests up to
// its batch size (a batch slot is nearly free next to an adapter load
// elsewhere); beyond that, up to kBound times its capacity-weighted share of
// the load, as in consistent hashing with bounded loads (Mirrokni, Thorup
// and Zadimoghaddam).
//
// Base-model requests go to the least loaded worker.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gateway/routing/policies.h"

namespace tessera::gateway {
namespace {

constexpr double kBound = 1.25;
// How far past its room a worker holding the adapter on the device still
// takes it (step 3).
constexpr double kQueueSlack = 1.1;
// Traffic of one adapter per home, as a fraction of a worker's fair share.
constexpr double kHomeShare = 0.5;
// Half-life of the traffic counts behind the home numbers.
constexpr absl::Duration kHalfLife = absl::Seconds(10);

// Recent requests per adapter, decayed exponentially.
class Demand {
 public:
  // Counts one request for `adapter`; returns its share of recent requests.
  double Record(std::string_view adapter) {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now - decayed_ >= absl::Seconds(1)) {
      const double f = std::exp2(-absl::ToDoubleSeconds(now - decayed_) / absl::ToDoubleSeconds(kHalfLife));
      total_ *= f;
      for (auto it = counts_.begin(); it != counts_.end();) {
        it->second *= f;
        if (it->second < 1e-3) {
          counts_.erase(it++);
        } else {
          ++it;
        }
      }
      decayed_ = now;
    }
    double& n = counts_[std::string(adapter)];
    n += 1;
    total_ += 1;
    return n / total_;
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, double> counts_ ABSL_GUARDED_BY(mu_);
  double total_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time decayed_ ABSL_GUARDED_BY(mu_) = absl::Now();
};

class AdapterAffinity final : public RoutingPolicy {
 public:
  std::string_view name() const override { return "adapter-affinity"; }

  RouteDecision Pick(std::string_view adapter, std::span<const RouteCandidate> c) override {
    const int n = static_cast<int>(c.size());
    double load = 1, capacity = 0;  // + 1: this request
    for (const RouteCandidate& x : c) {
      load += x.load;
      capacity += x.capacity;
    }
    const bool overloaded = load > capacity;
    auto room = [&](int i) {
      return overloaded ? std::ceil(kBound * load * c[i].capacity / capacity) : c[i].capacity;
    };
    auto after = [&](int i) { return (c[i].load + 1) / c[i].capacity; };
    auto fits = [&](int i) { return c[i].load + 1 <= room(i); };
    auto least_loaded = [&](auto&& eligible) {
      int best = -1;
      for (int i = 0; i < n; ++i) {
        if (eligible(i) && (best < 0 || after(i) < after(best) ||
                            (after(i) == after(best) && c[i].residency > c[best].residency))) {
          best = i;
        }
      }
      return best;
    };
    if (adapter.empty()) {
      const int i = least_loaded([](int) { return true; });
      return {i, -1, absl::StrFormat("base model: least loaded (%.2f of capacity)", after(i))};
    }
    // The adapter's rendezvous order, highest hash first, and its homes.
    std::vector<int> order(n);
    std::vector<uint64_t> h(n);
    for (int i = 0; i < n; ++i) {
      order[i] = i;
      h[i] = StableHash(adapter, c[i].address);
    }
    std::sort(order.begin(), order.end(), [&](int a, int b) { return h[a] > h[b]; });
    const double share = demand_.Record(adapter);
    const int homes = std::clamp(static_cast<int>(std::ceil(share * n / kHomeShare)), 1, n);
    std::vector<bool> home(n, false);
    for (int k = 0; k < homes; ++k) home[order[k]] = true;

    RouteDecision d;
    auto pick = [&](int i, std::string reason) {
      d = {i, c[i].residency == kOnDevice ? -1 : i, std::move(reason)};
      return true;
    };
    const std::string where = absl::StrFormat("%d of %d homes for %.1f%% of traffic", homes, n, 100 * share);
    if (int i = least_loaded([&](int k) { return c[k].residency == kOnDevice && fits(k); }); i >= 0) {
      pick(i, absl::StrFormat("adapter on the device, load %g of %g (%s)", c[i].load + 1, room(i), where));
    } else if (int j = least_loaded([&](int k) { return home[k] && fits(k); }); j >= 0) {
      pick(j, absl::StrFormat("home of the adapter, load %g of %g (%s)", c[j].load + 1, room(j), where));
    } else if (int q = least_loaded([&](int k) {
                 return c[k].residency == kOnDevice && c[k].load + 1 <= kQueueSlack * room(k);
               });
               q >= 0) {
      pick(q, absl::StrFormat("adapter on the device, queueing (load %g of %g) beats a load elsewhere",
                              c[q].load + 1, room(q)));
    } else if (int m = least_loaded([&](int k) { return c[k].residency == kInHost && fits(k); }); m >= 0) {
      pick(m, absl::StrFormat("adapter in host memory, load %g of %g", c[m].load + 1, room(m)));
    } else {
      for (int k : order) {
        if (fits(k)) {
          pick(k, absl::StrFormat("spill: next in the adapter's rendezvous order past its full homes, load %g of %g",
                                  c[k].load + 1, room(k)));
          break;
        }
      }
      if (d.chosen < 0) {
        const int k = least_loaded([](int) { return true; });
        pick(k, absl::StrFormat("every worker full: least loaded (%g)", c[k].load + 1));
      }
    }
    return d;
  }

 private:
  Demand demand_;
};

}  // namespace

std::unique_ptr<RoutingPolicy> MakeAdapterAffinityPolicy() { return std::make_unique<AdapterAffinity>(); }

}  // namespace tessera::gateway
