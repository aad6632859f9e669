// RetryBudget: bounds the retries in progress to a share of the requests in
// flight (Envoy's retry budget), so that failover during a wide outage never
// multiplies the load on the workers that are left: at most
// max(min_concurrency, ratio x requests in flight) retries at once.
//
// Thread-safety: thread-safe (atomics).
#ifndef TESSERA_GATEWAY_POOL_RETRY_BUDGET_H_
#define TESSERA_GATEWAY_POOL_RETRY_BUDGET_H_

#include <atomic>

namespace tessera::gateway {

class RetryBudget {
 public:
  RetryBudget(double ratio, int min_concurrency) : ratio_(ratio), min_concurrency_(min_concurrency) {}

  // Whether a retry may start now, given the requests in flight; a true
  // answer holds a slot until End.
  bool TryStart(int requests_in_flight);
  void End() { in_progress_.fetch_sub(1); }
  int in_progress() const { return in_progress_.load(); }
  // The retries allowed at once with `requests_in_flight`.
  int Limit(int requests_in_flight) const;

 private:
  const double ratio_;
  const int min_concurrency_;
  std::atomic<int> in_progress_{0};
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_POOL_RETRY_BUDGET_H_
