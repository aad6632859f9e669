#include "worker/engine/serial_engine.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tessera {

uint64_t MonotonicNanos() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

absl::StatusOr<std::unique_ptr<SerialEngine>> SerialEngine::Create(ModelBundle& bundle,
                                                                   const SerialEngineOptions& options) {
  if (options.max_waiting < 0) return absl::InvalidArgumentError("max_waiting must be >= 0");
  std::unique_ptr<SerialEngine> e(new SerialEngine(bundle, options));
  const LlamaConfig& c = bundle.model->config();
  const int64_t tokens = options.kv_cache_tokens > 0 ? options.kv_cache_tokens : c.n_ctx_train;
  KvCacheOptions kv;
  kv.num_blocks = (tokens + kv.block_size - 1) / kv.block_size;
  TESSERA_ASSIGN_OR_RETURN(e->cache_, KvCache::Create(*bundle.backend, c.n_layers, c.kv_dim(), kv));
  e->thread_ = std::thread([raw = e.get()] { raw->Loop(); });
  return e;
}

SerialEngine::~SerialEngine() { Stop(); }

absl::Status SerialEngine::Submit(std::shared_ptr<EngineJob> job) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the worker is shutting down");
  if (static_cast<int>(queue_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat("the worker's queue is full (", options_.max_waiting,
                                                     " waiting requests)"));
  }
  job->enqueued_ns = MonotonicNanos();
  queue_.push_back(std::move(job));
  return absl::OkStatus();
}

void SerialEngine::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

int SerialEngine::waiting() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void SerialEngine::Loop() {
  while (true) {
    std::shared_ptr<EngineJob> job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](SerialEngine* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) { return e->stopping_ || !e->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // stopping and drained
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    busy_.store(true);
    Run(*job);
    busy_.store(false);
  }
}

void SerialEngine::Run(EngineJob& job) {
  if (job.cancelled.load()) {
    job.sink->OnFinished(absl::CancelledError("cancelled while queued"));
    return;
  }
  const uint64_t start = MonotonicNanos();
  bool started = false;
  auto result = Generate(*bundle_.model, *bundle_.tokenizer, *cache_, job.request, [&](const StreamEvent& e) {
    if (!started) {
      started = true;
      job.sink->OnStarted(start - job.enqueued_ns, MonotonicNanos() - start);
    }
    if (job.cancelled.load()) return false;
    return job.sink->OnEvent(e);
  });
  if (result.ok() && !started) job.sink->OnStarted(start - job.enqueued_ns, MonotonicNanos() - start);
  job.sink->OnFinished(result);
}

}  // namespace tessera
