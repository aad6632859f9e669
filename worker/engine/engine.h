// Engine: the worker's generation loop, one visible loop on one thread:
// schedule -> run one forward pass over the whole batch -> apply results.
//
// Requests arrive as EngineJobs from any thread and join the running batch at
// the next step (continuous batching); each sequence's output goes to its
// JobSink; a cancelled job leaves the batch, and frees its KV blocks, at the
// next step. The KV cache is paged and prefix-cached (BlockManager); the
// Scheduler picks each step's rows.
//
// A request may ask for its prompt's logprobs (GenerateRequest::
// prompt_logprobs): its prompt rows then get logits too, scored to top-N as
// each prefill chunk runs, and it takes no prefix-cache hits (recomputing
// the prompt) since cached blocks carry no logits. Its chunks are bounded by
// the logit rows a step may compute, so the transient cost is at most
// max_logit_rows x vocabulary floats whatever the prompt's length. A
// request with max_tokens 0 ends after its prompt.
//
// Thread-safety: Submit, Stop, CanEverFit and stats() are thread-safe; sinks
// are called on the engine thread.
#ifndef TESSERA_WORKER_ENGINE_ENGINE_H_
#define TESSERA_WORKER_ENGINE_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "worker/engine/block_manager.h"
#include "worker/engine/generate.h"
#include "worker/kv/kv_cache.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/step_cost.h"
#include "worker/model/model_bundle.h"

namespace tessera {

// Receives a job's output on the engine thread.
class JobSink {
 public:
  virtual ~JobSink() = default;
  // Prefill is done; generation starts.
  virtual void OnStarted(uint64_t queue_ns, uint64_t prefill_ns) {}
  // With GenerateRequest::prompt_logprobs: once, right after OnStarted and
  // before any OnEvent or OnFinished. Entry p is prompt token p (id) with
  // its logprob and alternatives under the model's distribution after
  // tokens [0, p); entry 0 has nothing before it (logprob 0, no top).
  virtual void OnPromptLogprobs(std::vector<SampledToken> prompt) {}
  // A generated token (or the final flush). Return false to cancel.
  virtual bool OnEvent(const StreamEvent& event) = 0;
  // Exactly once, last: the result, or the error that ended the job.
  virtual void OnFinished(const absl::StatusOr<GenerateResult>& result) = 0;
};

// Hears about every step and every finished request, on the engine thread
// (metrics); must be cheap and must not call back into the engine.
class EngineObserver {
 public:
  enum class Phase { kPrefill, kDecode, kMixed };  // rows of prompts, of generation, or both
  virtual ~EngineObserver() = default;
  virtual void OnStep(Phase phase, int sequences, int rows, double seconds) = 0;
  struct Done {
    bool ok = true;  // false: ended by an error
    FinishReason finish = FinishReason::kLength;
    int prompt_tokens = 0;
    int generated_tokens = 0;
    double queue_seconds = 0;  // submitted -> admitted to the engine
    double e2e_seconds = 0;    // submitted -> finished
  };
  virtual void OnRequestDone(const Done& done) = 0;
};

struct EngineJob {
  GenerateRequest request;
  std::shared_ptr<JobSink> sink;
  std::atomic<bool> cancelled{false};
  uint64_t enqueued_ns = 0;
  uint64_t prefix_salt = 0;  // prefix-cache namespace (e.g. the LoRA adapter)
  uint64_t adapter = 0;      // LoRA adapter id (EngineOptions::adapters); 0: the base model
};

// The KV cache size when EngineOptions::kv_cache_bytes is 0 (the worker's
// kv_cache_memory default too): 256 MiB, whatever the model and max_num_seqs.
inline constexpr int64_t kDefaultKvCacheBytes = int64_t{256} << 20;

struct EngineOptions {
  // scheduler.max_num_batched_tokens 0: stall-free batching. Create
  // measures the step cost (per step, per row, per attended key) and each
  // step is planned to take 85% of step_target_seconds (headroom for
  // step-to-step noise): every decode runs, prompt chunks take the time
  // left, so a running stream waits at most about one target for someone
  // else's prompt. The model is corrected by
  // each step's measured time (StepCostTracker). options() then reports
  // the rows a step takes at short context. A non-zero budget is a plain
  // token budget (no time target), as before.
  SchedulerOptions scheduler;
  // 0: auto, 1.5x a full decode step (max_num_seqs rows), at least 20 ms.
  double step_target_seconds = 0;
  int max_waiting = 256;            // queued jobs beyond which Submit refuses
  int64_t kv_cache_bytes = 0;       // 0: kDefaultKvCacheBytes
  int block_size = 16;
  bool prefix_caching = true;
  AdapterGate* adapters = nullptr;  // required for jobs with an adapter; outlives the engine
  EngineObserver* observer = nullptr;  // optional; outlives the engine
  // Called (on the engine thread) when the model can never step again (its
  // tensor-parallel group failed); the worker ends the process. Without it
  // every later step's requests fail with the model's status.
  std::function<void(const absl::Status&)> on_model_failure;
};

struct EngineStats {
  int running = 0;
  int waiting = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_total = 0;
  uint64_t prefix_query_tokens = 0;
  uint64_t prefix_hit_tokens = 0;
  uint64_t preemptions = 0;
  uint64_t steps = 0;
};

class Engine {
 public:
  // REQUIRES: `bundle` outlives the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(ModelBundle& bundle, const EngineOptions& options);
  ~Engine();

  // Whether a request of `prompt_tokens` + `max_tokens` could ever run (KV
  // capacity and context). InvalidArgument with the numbers if not.
  absl::Status CanEverFit(int64_t prompt_tokens, int64_t max_tokens) const;
  // Queues a job. ResourceExhausted when the queue is full, Unavailable
  // after Stop. The job's sink hears nothing if Submit fails.
  absl::Status Submit(std::shared_ptr<EngineJob> job);
  // Refuses new jobs, lets running and queued ones finish, joins.
  void Stop();

  EngineStats stats() const;
  // The options in effect: a 0 max_num_batched_tokens or step target
  // replaced by what Create chose.
  const EngineOptions& options() const { return options_; }
  int tensor_parallel_size() const;
  // The measured step cost, if Create measured it (auto budget).
  const std::optional<StepCost>& step_cost() const { return step_cost_; }

 private:
  struct Sequence;
  Engine(ModelBundle& b, const EngineOptions& o);
  void Loop();
  // One schedule -> forward -> apply iteration. Returns false when idle.
  bool Step();
  void Admit(std::shared_ptr<EngineJob> job);
  void FinishSequence(Sequence* seq, const absl::StatusOr<GenerateResult>& result);

  ModelBundle& bundle_;
  EngineOptions options_;
  std::optional<StepCost> step_cost_;
  // With an automatic budget: the measured cost, corrected step by step
  // (engine thread only).
  std::optional<StepCostTracker> step_cost_tracker_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<BlockManager> blocks_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::unique_ptr<Sequence>> sequences_;  // engine thread only
  uint64_t next_id_ = 1;
  std::vector<float> logits_;
  std::vector<const LoraView*> row_adapters_;

  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<EngineJob>> inbox_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;  // inbox + scheduler's waiting
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

uint64_t MonotonicNanos();

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_ENGINE_H_
