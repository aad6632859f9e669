#include "gateway/gateway_metrics.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/metrics/metrics_server.h"

namespace tessera::gateway {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

GatewayMetrics::GatewayMetrics(prometheus::Registry& r)
    : requests_(BuildCounter()
                    .Name("tessera_gateway_requests_total")
                    .Help("Completion requests by model, adapter and HTTP status")
                    .Register(r)),
      ttft_(BuildHistogram()
                .Name("tessera_gateway_time_to_first_token_seconds")
                .Help("Time from a request's arrival to its first output, retries included")
                .Register(r)),
      tpot_(BuildHistogram()
                .Name("tessera_gateway_time_per_output_token_seconds")
                .Help("Mean time between output tokens of a request after the first")
                .Register(r)),
      e2e_(BuildHistogram()
               .Name("tessera_gateway_e2e_request_latency_seconds")
               .Help("Time from a request's arrival to its last byte")
               .Register(r)),
      prompt_tokens_(BuildCounter()
                         .Name("tessera_gateway_prompt_tokens_total")
                         .Help("Prompt tokens of completed requests")
                         .Register(r)),
      generation_tokens_(BuildCounter()
                             .Name("tessera_gateway_generation_tokens_total")
                             .Help("Tokens generated for completed requests")
                             .Register(r)),
      in_flight_(BuildGauge()
                     .Name("tessera_gateway_requests_in_flight")
                     .Help("Completion requests being served")
                     .Register(r)
                     .Add({})),
      routed_(BuildCounter()
                  .Name("tessera_gateway_routing_decisions_total")
                  .Help("Routing decisions by policy and the residency of the request's adapter on the chosen worker")
                  .Register(r)),
      retries_(BuildCounter()
                   .Name("tessera_gateway_retries_total")
                   .Help("Requests run again on another worker, by the failure that caused it")
                   .Register(r)),
      shed_(BuildCounter()
                .Name("tessera_gateway_requests_shed_total")
                .Help("Requests refused to the client for overload (429/503), by reason")
                .Register(r)),
      retry_budget_exhausted_(BuildCounter()
                                  .Name("tessera_gateway_retry_budget_exhausted_total")
                                  .Help("Failed requests not retried because the retry budget was spent")
                                  .Register(r)
                                  .Add({})),
      ejections_(BuildCounter()
                     .Name("tessera_gateway_worker_ejections_total")
                     .Help("Workers taken out of rotation by outlier detection")
                     .Register(r)),
      workers_(BuildGauge()
                   .Name("tessera_gateway_workers")
                   .Help("Known workers by state (routable, unhealthy, ejected)")
                   .Register(r)),
      worker_up_(BuildGauge()
                     .Name("tessera_gateway_worker_up")
                     .Help("1 if the worker is routable (healthy and not ejected)")
                     .Register(r)),
      worker_in_flight_(BuildGauge()
                            .Name("tessera_gateway_worker_requests_in_flight")
                            .Help("Generation streams this gateway has open to the worker")
                            .Register(r)),
      worker_running_(BuildGauge()
                          .Name("tessera_gateway_worker_running_sequences")
                          .Help("Running sequences in the worker's latest load report")
                          .Register(r)),
      worker_waiting_(BuildGauge()
                          .Name("tessera_gateway_worker_waiting_sequences")
                          .Help("Queued sequences in the worker's latest load report")
                          .Register(r)) {
  for (const char* state : {"routable", "unhealthy", "ejected"}) workers_.Add({{"state", state}});
  for (const char* reason : {"unavailable", "queue_full", "hung"}) retries_.Add({{"reason", reason}});
}

void GatewayMetrics::RequestFinished(const Finished& f) {
  in_flight_.Decrement();
  const std::string adapter = f.adapter.empty() ? "-" : f.adapter;
  requests_.Add({{"model", f.model}, {"adapter", adapter}, {"status", absl::StrCat(f.http_status)}}).Increment();
  const prometheus::Labels model{{"model", f.model}};
  e2e_.Add(model, LatencyBuckets()).Observe(f.e2e_s);
  if (f.ttft_s) {
    ttft_.Add(model, LatencyBuckets()).Observe(*f.ttft_s);
    if (f.completion_tokens > 1) {
      tpot_.Add(model, TokenTimeBuckets()).Observe((f.e2e_s - *f.ttft_s) / (f.completion_tokens - 1));
    }
  }
  if (f.http_status == 200) {
    prompt_tokens_.Add(model).Increment(f.prompt_tokens);
    generation_tokens_.Add(model).Increment(f.completion_tokens);
  }
}

void GatewayMetrics::RequestRejected(int http_status) {
  requests_.Add({{"model", "-"}, {"adapter", "-"}, {"status", absl::StrCat(http_status)}}).Increment();
}

void GatewayMetrics::Routed(std::string_view policy, std::string_view residency) {
  routed_.Add({{"policy", std::string(policy)}, {"residency", std::string(residency)}}).Increment();
}

void GatewayMetrics::Retried(std::string_view reason) { retries_.Add({{"reason", std::string(reason)}}).Increment(); }
void GatewayMetrics::Shed(std::string_view reason) { shed_.Add({{"reason", std::string(reason)}}).Increment(); }

void GatewayMetrics::Ejected(const std::string& worker, std::string_view reason) {
  ejections_.Add({{"worker", worker}, {"reason", std::string(reason)}}).Increment();
}

void GatewayMetrics::SetWorkers(const std::vector<WorkerState>& workers) {
  absl::MutexLock lock(&mu_);
  int routable = 0, unhealthy = 0, ejected = 0;
  absl::flat_hash_set<std::string> present;
  for (const WorkerState& w : workers) {
    present.insert(w.address);
    auto it = per_worker_.find(w.address);
    if (it == per_worker_.end()) {
      const prometheus::Labels l{{"worker", w.address}};
      it = per_worker_
               .emplace(w.address, PerWorker{&worker_up_.Add(l), &worker_in_flight_.Add(l), &worker_running_.Add(l),
                                             &worker_waiting_.Add(l)})
               .first;
    }
    const bool up = w.healthy && !w.ejected;
    routable += up;
    ejected += w.ejected;
    unhealthy += !w.healthy && !w.ejected;
    it->second.up->Set(up ? 1 : 0);
    it->second.in_flight->Set(w.in_flight);
    it->second.running->Set(std::max(0, w.running));
    it->second.waiting->Set(std::max(0, w.waiting));
  }
  for (auto it = per_worker_.begin(); it != per_worker_.end();) {
    if (present.contains(it->first)) {
      ++it;
      continue;
    }
    worker_up_.Remove(it->second.up);
    worker_in_flight_.Remove(it->second.in_flight);
    worker_running_.Remove(it->second.running);
    worker_waiting_.Remove(it->second.waiting);
    per_worker_.erase(it++);
  }
  workers_.Add({{"state", "routable"}}).Set(routable);
  workers_.Add({{"state", "unhealthy"}}).Set(unhealthy);
  workers_.Add({{"state", "ejected"}}).Set(ejected);
}

}  // namespace tessera::gateway
