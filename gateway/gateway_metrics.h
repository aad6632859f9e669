// GatewayMetrics: every Prometheus metric of the gateway, declared once.
// Names follow Prometheus conventions (base units, _total counters); the
// README maps each to vLLM's metric of the same meaning.
//
// Label cardinality is bounded: `model` and `adapter` are names a worker
// serves (requests for unknown names count under "-"), `worker` is a
// discovered address.
//
// Thread-safety: all methods are thread-safe.
#ifndef TESSERA_GATEWAY_GATEWAY_METRICS_H_
#define TESSERA_GATEWAY_GATEWAY_METRICS_H_

#include <optional>
#include <string>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace tessera::gateway {

class GatewayMetrics {
 public:
  explicit GatewayMetrics(prometheus::Registry& registry);

  struct Finished {
    std::string model;    // "-" if no worker serves it
    std::string adapter;  // "" for the base model
    int http_status = 200;
    std::optional<double> ttft_s;  // absent when no output came
    double e2e_s = 0;
    int prompt_tokens = 0;
    int completion_tokens = 0;
  };
  void RequestStarted() { in_flight_.Increment(); }
  // A completion request refused before it reached a worker (bad body,
  // authentication): counted under model "-".
  void RequestRejected(int http_status);
  void RequestFinished(const Finished& f);
  // `residency`: "device", "host", "disk" (the adapter's tier on the chosen
  // worker) or "base".
  void Routed(std::string_view policy, std::string_view residency);
  // A request run again on another worker (counted only when that attempt
  // starts). `reason`: "unavailable", "queue_full" or "hung".
  void Retried(std::string_view reason);
  // A request whose refusal by overload reached the client (429/503):
  // `reason` "queue_full" (every worker tried was full), "unavailable" (no
  // worker could take it) or "retry_budget" (a retry was possible but the
  // budget was spent). Tells overload from failover on the dashboards.
  void Shed(std::string_view reason);
  void RetryBudgetExhausted() { retry_budget_exhausted_.Increment(); }
  void Ejected(const std::string& worker, std::string_view reason);

  struct WorkerState {
    std::string address;
    bool healthy = false;
    bool ejected = false;
    int in_flight = 0;
    int running = -1;  // from its last load report; -1: none
    int waiting = -1;
  };
  // Replaces the per-worker gauges (workers that left are removed).
  void SetWorkers(const std::vector<WorkerState>& workers);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& ttft_;
  prometheus::Family<prometheus::Histogram>& tpot_;
  prometheus::Family<prometheus::Histogram>& e2e_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& generation_tokens_;
  prometheus::Gauge& in_flight_;
  prometheus::Family<prometheus::Counter>& routed_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Counter>& shed_;
  prometheus::Counter& retry_budget_exhausted_;
  prometheus::Family<prometheus::Counter>& ejections_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Gauge>& worker_up_;
  prometheus::Family<prometheus::Gauge>& worker_in_flight_;
  prometheus::Family<prometheus::Gauge>& worker_running_;
  prometheus::Family<prometheus::Gauge>& worker_waiting_;

  absl::Mutex mu_;
  struct PerWorker {
    prometheus::Gauge *up, *in_flight, *running, *waiting;
  };
  absl::flat_hash_map<std::string, PerWorker> per_worker_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_GATEWAY_METRICS_H_
