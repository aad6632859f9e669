// WorkerMetrics: every Prometheus metric of a worker, declared once. Step
// and request metrics arrive from the engine thread (EngineObserver);
// queue, KV-cache and adapter gauges are read from the engine's and the
// adapter manager's snapshots at scrape time (Collect), so nothing polls.
// The README maps each metric to vLLM's of the same meaning.
//
// Thread-safety: all methods are thread-safe.
#ifndef TESSERA_WORKER_SERVICE_WORKER_METRICS_H_
#define TESSERA_WORKER_SERVICE_WORKER_METRICS_H_

#include <cstdint>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/synchronization/mutex.h"
#include "worker/engine/engine.h"
#include "worker/lora/adapter_manager.h"
#include "worker/model/checkpoint.h"
#include "worker/structured/constraint.h"

namespace tessera {

class WorkerMetrics final : public EngineObserver {
 public:
  WorkerMetrics(prometheus::Registry& registry, const std::string& model, const std::string& backend);

  void SetModelLoadSeconds(double s) { model_load_seconds_.Set(s); }
  void SetTensorParallelSize(int n) { tensor_parallel_size_.Set(n); }
  // tessera_worker_model_format{format, weight_type, quantization, bits,
  // group_size} = 1, once the checkpoint is open.
  void SetModelFormat(const CheckpointInfo& info);
  // Snapshot metrics; `engine`, `adapters` and `constraints` may be null
  // (not yet built).
  void Collect(const Engine* engine, const AdapterManager* adapters,
               const structured::ConstraintCache* constraints = nullptr);
  // Structured output: one constraint compile (a cache miss, or a refused
  // spec when !ok) took `seconds` (ConstraintCache's compile observer).
  void OnConstraintCompiled(double seconds, bool ok);

  void OnStep(Phase phase, int sequences, int rows, double seconds) override;
  void OnRequestDone(const Done& done) override;

 private:
  prometheus::Gauge& model_load_seconds_;
  prometheus::Gauge& tensor_parallel_size_;
  prometheus::Family<prometheus::Gauge>* model_format_ = nullptr;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Gauge& kv_used_;
  prometheus::Gauge& kv_total_;
  prometheus::Gauge& kv_usage_;
  prometheus::Counter& prefix_queries_;
  prometheus::Counter& prefix_hits_;
  prometheus::Counter& preemptions_;
  prometheus::Counter& adapter_loads_;
  prometheus::Counter& adapter_uploads_;
  prometheus::Counter& adapter_device_evictions_;
  prometheus::Counter& adapter_host_evictions_;
  prometheus::Counter& adapter_failures_;
  prometheus::Counter& adapter_requests_;
  prometheus::Counter& adapter_device_hits_;
  prometheus::Gauge& adapters_on_device_;
  prometheus::Gauge& adapters_on_host_;
  prometheus::Gauge& adapter_slots_;
  prometheus::Gauge& adapter_last_load_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Histogram& queue_time_;
  prometheus::Histogram& e2e_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Histogram>& step_time_;
  prometheus::Counter& constraint_hits_;
  prometheus::Counter& constraint_misses_;
  prometheus::Counter& constraint_errors_;
  prometheus::Histogram& constraint_compile_;
  prometheus::Counter& constraint_masks_;
  prometheus::Counter& constraint_mask_seconds_;

  // Cumulative sources turned into counter increments.
  absl::Mutex mu_;
  struct Seen {
    uint64_t prefix_queries = 0, prefix_hits = 0, preemptions = 0, loads = 0, uploads = 0, device_evictions = 0,
             host_evictions = 0, failures = 0, adapter_requests = 0, device_hits = 0, constraint_hits = 0,
             constraint_misses = 0, constraint_errors = 0, constraint_masks = 0;
    double constraint_mask_seconds = 0;
  } seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SERVICE_WORKER_METRICS_H_
