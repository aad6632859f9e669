// WorkerHealth: how the gateway judges one worker, as a state machine fed by
// probe results and request outcomes (Envoy's active health checking plus
// outlier detection, reduced to what a gateway of stateless replicas needs).
//
//   serving --(probe fails, or a request finds it unreachable)--> not serving
//   not serving --(probe passes)--> serving
//   serving --(N consecutive worker faults, or hung)--> ejected, for
//       base x (consecutive ejections), at most max; the pool may refuse an
//       ejection (at most half its workers at once)
//   ejected --(ejection over, and a probe passes)--> serving, not ejected
//   a worker that stays out of trouble for max_ejection after an ejection
//   ends has its ejection count reset, so its next ejection is short again.
//
// Pure: time comes in as arguments, nothing is logged; the caller acts on
// the returned transitions. Thread-safety: all methods are thread-safe; the
// routing hot path (Routable) reads atomics only.
#ifndef TESSERA_GATEWAY_POOL_WORKER_HEALTH_H_
#define TESSERA_GATEWAY_POOL_WORKER_HEALTH_H_

#include <atomic>
#include <optional>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tessera::gateway {

struct WorkerHealthOptions {
  int outlier_consecutive_failures = 3;
  absl::Duration base_ejection = absl::Seconds(5);
  absl::Duration max_ejection = absl::Seconds(60);
};

// What a failed request says about its worker.
enum class RequestFault {
  kNotTheWorkers,  // the request's own fault (bad input, cancelled, deadline)
  kUnreachable,    // the worker is unreachable or shutting down
  kWorkerFault,    // the worker failed it (internal error, crash mid-stream)
};

class WorkerHealth {
 public:
  explicit WorkerHealth(const WorkerHealthOptions& options = {}) : options_(options) {}

  bool serving() const { return serving_.load(); }
  bool ejected() const { return ejected_.load(); }
  int consecutive_failures() const { return consecutive_failures_.load(); }

  // Whether a probe should run now: always, unless ejected and the ejection
  // has not run out.
  bool ProbeDue(absl::Time now) const;

  struct ProbeTransition {
    bool became_serving = false;      // was not serving before
    bool became_not_serving = false;  // was serving before
    bool readmitted = false;          // was ejected; the ejection is over
  };
  ProbeTransition OnProbe(bool passed, absl::Time now);

  void OnRequestSucceeded() { consecutive_failures_.store(0); }
  // What the pool should do about a failed request.
  enum class Verdict {
    kNothing,
    kNowNotServing,  // unreachable: out of rotation until a probe passes (it was serving)
    kStillNotServing,  // unreachable, and already out of rotation
    kEject,          // too many consecutive faults: eject, if the pool allows
  };
  Verdict OnRequestFailed(RequestFault fault);

  // Ejects now (the pool has allowed it). Returns how long, or nullopt if it
  // is ejected already.
  std::optional<absl::Duration> Eject(absl::Time now);

 private:
  const WorkerHealthOptions options_;
  std::atomic<bool> serving_{false};
  std::atomic<bool> ejected_{false};
  std::atomic<int> consecutive_failures_{0};
  mutable absl::Mutex mu_;
  absl::Time ejected_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int ejections_ ABSL_GUARDED_BY(mu_) = 0;  // consecutive: each lasts longer
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_POOL_WORKER_HEALTH_H_
