#include "gateway/pool/worker_health.h"

#include <algorithm>

namespace tessera::gateway {

bool WorkerHealth::ProbeDue(absl::Time now) const {
  if (!ejected_.load()) return true;
  absl::MutexLock lock(&mu_);
  return now >= ejected_until_;
}

WorkerHealth::ProbeTransition WorkerHealth::OnProbe(bool passed, absl::Time now) {
  ProbeTransition t;
  if (!passed) {
    t.became_not_serving = serving_.exchange(false);
    return t;
  }
  {
    absl::MutexLock lock(&mu_);
    if (ejected_.load()) {
      // Only a probe that is due re-admits (ProbeDue); one that raced the
      // ejection does not cut it short.
      if (now >= ejected_until_) {
        ejected_.store(false);
        consecutive_failures_.store(0);
        t.readmitted = true;
      }
    } else if (ejections_ > 0 && now > ejected_until_ + options_.max_ejection) {
      ejections_ = 0;
    }
  }
  t.became_serving = !serving_.exchange(true);
  return t;
}

WorkerHealth::Verdict WorkerHealth::OnRequestFailed(RequestFault fault) {
  switch (fault) {
    case RequestFault::kNotTheWorkers:
      return Verdict::kNothing;
    case RequestFault::kUnreachable:
      return serving_.exchange(false) ? Verdict::kNowNotServing : Verdict::kStillNotServing;
    case RequestFault::kWorkerFault:
      break;
  }
  const int failures = consecutive_failures_.fetch_add(1) + 1;
  return failures >= options_.outlier_consecutive_failures ? Verdict::kEject : Verdict::kNothing;
}

std::optional<absl::Duration> WorkerHealth::Eject(absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (ejected_.load()) return std::nullopt;
  ++ejections_;
  const absl::Duration duration = std::min(options_.base_ejection * ejections_, options_.max_ejection);
  ejected_until_ = now + duration;
  ejected_.store(true);
  return duration;
}

}  // namespace tessera::gateway
