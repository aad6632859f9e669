// RoutingPolicy: picks the worker for one request among those that can serve
// it. Policies see plain numbers (residency of the request's adapter and
// estimated load per candidate) so that they are pure, unit-testable and
// cheap; the WorkerPool gathers the numbers from load reports.
//
// A new policy is one file defining a class and one line in the registry
// (routing_policy.cc).
//
// Thread-safety: Pick may be called from many threads at once.
#ifndef TESSERA_GATEWAY_ROUTING_ROUTING_POLICY_H_
#define TESSERA_GATEWAY_ROUTING_ROUTING_POLICY_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::gateway {

enum Residency : int { kOnDisk = 0, kInHost = 1, kOnDevice = 2 };

// One worker that serves the request's model (and adapter).
struct RouteCandidate {
  std::string_view address;  // stable identity, for hashing
  int residency = kOnDevice;  // of the request's adapter; base-model requests: kOnDevice
  double load = 0;            // running + waiting + sent since its last load report
  double capacity = 1;        // sequences it batches (max_num_seqs), at least 1
};

struct RouteDecision {
  int chosen = -1;    // index into the candidates
  int prefetch = -1;  // a candidate to ask to start loading the adapter now, or -1
  std::string reason;
};

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  virtual std::string_view name() const = 0;
  // `adapter` empty: the base model. REQUIRES: !candidates.empty().
  virtual RouteDecision Pick(std::string_view adapter, std::span<const RouteCandidate> candidates) = 0;
};

// "adapter-affinity" (default), "least-loaded" or "round-robin".
absl::StatusOr<std::unique_ptr<RoutingPolicy>> CreateRoutingPolicy(std::string_view name);
std::vector<std::string> RoutingPolicyNames();

// A hash that every gateway replica computes alike (for rendezvous hashing).
uint64_t StableHash(std::string_view a, std::string_view b);

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_ROUTING_ROUTING_POLICY_H_
