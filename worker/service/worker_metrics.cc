#include "worker/service/worker_metrics.h"

#include "common/metrics/metrics_server.h"

namespace tessera {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

prometheus::Gauge& Gauge(prometheus::Registry& r, const char* name, const char* help) {
  return BuildGauge().Name(name).Help(help).Register(r).Add({});
}
prometheus::Counter& Counter(prometheus::Registry& r, const char* name, const char* help) {
  return BuildCounter().Name(name).Help(help).Register(r).Add({});
}

// Adds the growth of a cumulative source since the last scrape.
void Advance(prometheus::Counter& c, uint64_t now, uint64_t& seen) {
  if (now > seen) c.Increment(static_cast<double>(now - seen));
  seen = now;
}

const char* PhaseName(EngineObserver::Phase p) {
  switch (p) {
    case EngineObserver::Phase::kPrefill:
      return "prefill";
    case EngineObserver::Phase::kDecode:
      return "decode";
    case EngineObserver::Phase::kMixed:
      return "mixed";
  }
  return "mixed";
}

const std::vector<double>& BatchBuckets() {
  static const std::vector<double> b = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
  return b;
}

}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& r, const std::string& model, const std::string& backend)
    : model_load_seconds_(Gauge(r, "tessera_worker_model_load_seconds", "Time the model took to load at start")),
      tensor_parallel_size_(Gauge(r, "tessera_worker_tensor_parallel_size",
                                  "Ranks the worker's model is split over (1: not split)")),
      running_(Gauge(r, "tessera_worker_running_sequences", "Sequences in the running batch")),
      waiting_(Gauge(r, "tessera_worker_waiting_sequences", "Sequences queued for the batch")),
      kv_used_(Gauge(r, "tessera_worker_kv_blocks_used", "KV-cache blocks in use")),
      kv_total_(Gauge(r, "tessera_worker_kv_blocks_capacity", "KV-cache blocks in all")),
      kv_usage_(Gauge(r, "tessera_worker_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use (0-1)")),
      prefix_queries_(Counter(r, "tessera_worker_prefix_cache_queries_total",
                              "Prompt tokens looked up in the prefix cache")),
      prefix_hits_(Counter(r, "tessera_worker_prefix_cache_hits_total", "Prompt tokens found in the prefix cache")),
      preemptions_(Counter(r, "tessera_worker_preemptions_total", "Sequences preempted for KV-cache space")),
      adapter_loads_(Counter(r, "tessera_worker_adapter_loads_total", "LoRA adapters read from disk into host memory")),
      adapter_uploads_(Counter(r, "tessera_worker_adapter_uploads_total",
                               "LoRA adapters copied from host memory to device slots")),
      adapter_device_evictions_(Counter(r, "tessera_worker_adapter_device_evictions_total",
                                        "LoRA adapters evicted from device slots")),
      adapter_host_evictions_(Counter(r, "tessera_worker_adapter_host_evictions_total",
                                      "LoRA adapters evicted from host memory")),
      adapter_failures_(Counter(r, "tessera_worker_adapter_load_failures_total", "LoRA adapters that failed to load")),
      adapter_requests_(Counter(r, "tessera_worker_adapter_requests_total", "Requests for a LoRA adapter")),
      adapter_device_hits_(Counter(r, "tessera_worker_adapter_device_hits_total",
                                   "Requests whose adapter was already in a device slot")),
      adapters_on_device_(Gauge(r, "tessera_worker_adapters_on_device", "LoRA adapters in device slots")),
      adapters_on_host_(Gauge(r, "tessera_worker_adapters_in_host", "LoRA adapters in host memory")),
      adapter_slots_(Gauge(r, "tessera_worker_adapter_device_slots", "Device slots for LoRA adapters (max_loras)")),
      adapter_last_load_(Gauge(r, "tessera_worker_adapter_last_load_seconds",
                               "Disk-to-device time of the latest cold adapter load")),
      prompt_tokens_(Counter(r, "tessera_worker_prompt_tokens_total", "Prompt tokens of finished requests")),
      generation_tokens_(Counter(r, "tessera_worker_generation_tokens_total", "Tokens generated")),
      requests_(BuildCounter()
                    .Name("tessera_worker_requests_total")
                    .Help("Finished requests by finish reason (stop, length, cancelled, error)")
                    .Register(r)),
      queue_time_(BuildHistogram()
                      .Name("tessera_worker_request_queue_time_seconds")
                      .Help("Time requests waited before joining the batch")
                      .Register(r)
                      .Add({}, LatencyBuckets())),
      e2e_(BuildHistogram()
               .Name("tessera_worker_e2e_request_latency_seconds")
               .Help("Time from a request's arrival at the worker to its end")
               .Register(r)
               .Add({}, LatencyBuckets())),
      batch_size_(BuildHistogram()
                      .Name("tessera_worker_step_batch_size")
                      .Help("Sequences per engine step, by phase (prefill, decode, mixed)")
                      .Register(r)),
      step_time_(BuildHistogram()
                     .Name("tessera_worker_step_duration_seconds")
                     .Help("Duration of an engine step (forward pass and sampling), by phase")
                     .Register(r)),
      constraint_hits_(Counter(r, "tessera_worker_structured_cache_hits_total",
                               "Structured-output requests whose constraint was already compiled")),
      constraint_misses_(Counter(r, "tessera_worker_structured_cache_misses_total",
                                 "Structured-output constraints compiled (cache misses)")),
      constraint_errors_(Counter(r, "tessera_worker_structured_compile_errors_total",
                                 "Structured-output specs refused as invalid or too large")),
      constraint_compile_(BuildHistogram()
                              .Name("tessera_worker_structured_compile_seconds")
                              .Help("Time to compile a structured-output constraint (misses and refusals)")
                              .Register(r)
                              .Add({}, LatencyBuckets())),
      constraint_masks_(Counter(r, "tessera_worker_structured_masks_computed_total",
                                "Automaton states whose token mask was computed (vocabulary trie walks)")),
      constraint_mask_seconds_(Counter(r, "tessera_worker_structured_mask_seconds_total",
                                       "Time spent computing token masks, at compile time and on first visits")) {
  model_format_ = &BuildGauge()
                       .Name("tessera_worker_model_format")
                       .Help("Constant 1, labelled with the checkpoint format and the weights' encoding")
                       .Register(r);
  BuildGauge()
      .Name("tessera_worker_info")
      .Help("Constant 1, labelled with the served model and the backend")
      .Register(r)
      .Add({{"model", model}, {"backend", backend}})
      .Set(1);
  for (const char* reason : {"stop", "length", "cancelled", "error"}) requests_.Add({{"finish_reason", reason}});
  for (const char* phase : {"prefill", "decode", "mixed"}) {
    batch_size_.Add({{"phase", phase}}, BatchBuckets());
    step_time_.Add({{"phase", phase}}, TokenTimeBuckets());
  }
}

void WorkerMetrics::SetModelFormat(const CheckpointInfo& info) {
  model_format_->Add({{"format", info.format},
                     {"weight_type", info.weight_type},
                     {"quantization", info.quantization.empty() ? "none" : info.quantization},
                     {"bits", std::to_string(info.bits)},
                     {"group_size", std::to_string(info.group_size)}})
      .Set(1);
}

void WorkerMetrics::Collect(const Engine* engine, const AdapterManager* adapters,
                            const structured::ConstraintCache* constraints) {
  absl::MutexLock lock(&mu_);
  if (constraints != nullptr) {
    const structured::ConstraintCache::Stats cs = constraints->stats();
    Advance(constraint_hits_, cs.hits, seen_.constraint_hits);
    Advance(constraint_misses_, cs.misses, seen_.constraint_misses);
    Advance(constraint_errors_, cs.errors, seen_.constraint_errors);
    Advance(constraint_masks_, cs.masks_computed, seen_.constraint_masks);
    if (cs.mask_seconds > seen_.constraint_mask_seconds) {
      constraint_mask_seconds_.Increment(cs.mask_seconds - seen_.constraint_mask_seconds);
      seen_.constraint_mask_seconds = cs.mask_seconds;
    }
  }
  if (engine != nullptr) {
    const EngineStats s = engine->stats();
    running_.Set(s.running);
    waiting_.Set(s.waiting);
    kv_used_.Set(static_cast<double>(s.kv_blocks_used));
    kv_total_.Set(static_cast<double>(s.kv_blocks_total));
    kv_usage_.Set(s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0);
    Advance(prefix_queries_, s.prefix_query_tokens, seen_.prefix_queries);
    Advance(prefix_hits_, s.prefix_hit_tokens, seen_.prefix_hits);
    Advance(preemptions_, s.preemptions, seen_.preemptions);
  }
  if (adapters != nullptr) {
    const AdapterStats a = adapters->stats();
    Advance(adapter_loads_, a.loads, seen_.loads);
    Advance(adapter_uploads_, a.uploads, seen_.uploads);
    Advance(adapter_device_evictions_, a.device_evictions, seen_.device_evictions);
    Advance(adapter_host_evictions_, a.host_evictions, seen_.host_evictions);
    Advance(adapter_failures_, a.load_failures, seen_.failures);
    Advance(adapter_requests_, a.requests, seen_.adapter_requests);
    Advance(adapter_device_hits_, a.device_hits, seen_.device_hits);
    adapters_on_device_.Set(a.on_device);
    adapters_on_host_.Set(a.on_host);
    adapter_slots_.Set(adapters->options().max_loras);
    adapter_last_load_.Set(a.last_load_seconds);
  }
}

void WorkerMetrics::OnConstraintCompiled(double seconds, bool) { constraint_compile_.Observe(seconds); }

void WorkerMetrics::OnStep(Phase phase, int sequences, int, double seconds) {
  const prometheus::Labels l{{"phase", PhaseName(phase)}};
  batch_size_.Add(l, BatchBuckets()).Observe(sequences);
  step_time_.Add(l, TokenTimeBuckets()).Observe(seconds);
}

void WorkerMetrics::OnRequestDone(const Done& d) {
  const char* reason = !d.ok                                     ? "error"
                       : d.finish == FinishReason::kStop         ? "stop"
                       : d.finish == FinishReason::kCancelled    ? "cancelled"
                                                                 : "length";
  requests_.Add({{"finish_reason", reason}}).Increment();
  prompt_tokens_.Increment(d.prompt_tokens);
  generation_tokens_.Increment(d.generated_tokens);
  queue_time_.Observe(d.queue_seconds);
  e2e_.Observe(d.e2e_seconds);
}

}  // namespace tessera
