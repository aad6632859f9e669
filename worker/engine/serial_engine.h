// SerialEngine: runs queued generation jobs on one engine thread, one at a
// time, each to completion or cancellation.
//
// This is the worker's engine until continuous batching replaces the loop
// body (the batching issue); the interface (submit a job with a sink,
// cancel by flag) is what the batching engine keeps.
//
// Thread-safety: Submit, Stop and the stats are thread-safe. Sinks are
// called on the engine thread.
#ifndef TESSERA_WORKER_ENGINE_SERIAL_ENGINE_H_
#define TESSERA_WORKER_ENGINE_SERIAL_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "worker/engine/generate.h"
#include "worker/engine/kv_cache.h"
#include "worker/model/model_bundle.h"

namespace tessera {

// Receives a job's output on the engine thread.
class JobSink {
 public:
  virtual ~JobSink() = default;
  // Prefill is done; generation starts.
  virtual void OnStarted(uint64_t queue_ns, uint64_t prefill_ns) {}
  // A generated token (or the final flush). Return false to cancel.
  virtual bool OnEvent(const StreamEvent& event) = 0;
  // Exactly once, last: the result, or the error that ended the job.
  virtual void OnFinished(const absl::StatusOr<GenerateResult>& result) = 0;
};

struct EngineJob {
  GenerateRequest request;
  std::shared_ptr<JobSink> sink;
  std::atomic<bool> cancelled{false};
  uint64_t enqueued_ns = 0;
};

struct SerialEngineOptions {
  int max_waiting = 256;        // queued jobs beyond which Submit refuses
  int64_t kv_cache_tokens = 0;  // 0: the model's context length
};

class SerialEngine {
 public:
  // REQUIRES: `bundle` outlives the engine.
  static absl::StatusOr<std::unique_ptr<SerialEngine>> Create(ModelBundle& bundle,
                                                             const SerialEngineOptions& options);
  ~SerialEngine();

  // Queues a job. ResourceExhausted when the queue is full, Unavailable
  // after Stop. The job's sink hears nothing if Submit fails.
  absl::Status Submit(std::shared_ptr<EngineJob> job);
  // Refuses new jobs, lets the running and queued jobs finish, joins.
  void Stop();

  int waiting() const;
  bool running() const { return busy_.load(); }

 private:
  SerialEngine(ModelBundle& b, const SerialEngineOptions& o) : bundle_(b), options_(o) {}
  void Loop();
  void Run(EngineJob& job);

  ModelBundle& bundle_;
  SerialEngineOptions options_;
  std::unique_ptr<KvCache> cache_;
  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<EngineJob>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> busy_{false};
  std::thread thread_;
};

uint64_t MonotonicNanos();

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_SERIAL_ENGINE_H_
