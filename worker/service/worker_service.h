// WorkerService: the tessera.worker.v1.Worker gRPC service over a
// the batching Engine. Requests are validated and tokenized on the gRPC thread, so
// bad input fails at once with INVALID_ARGUMENT; valid ones are queued.
// Cancellation (client gone, deadline) stops generation at the next token.
//
// Thread-safety: gRPC calls it from its own threads; all shared state is in
// the engine (thread-safe) or immutable.
#ifndef TESSERA_WORKER_SERVICE_WORKER_SERVICE_H_
#define TESSERA_WORKER_SERVICE_WORKER_SERVICE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "tessera/worker/v1/worker.grpc.pb.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "worker/engine/engine.h"
#include "worker/service/drainable.h"
#include "worker/lora/adapter_manager.h"
#include "worker/service/load_reporter.h"
#include "worker/model/model_bundle.h"
#include "worker/structured/constraint.h"

namespace tessera {

struct WorkerServiceOptions {
  std::string model_id;  // the name clients use for the base model
  // Structured output: called after each constraint compile (a cache miss
  // or a refused spec) with its seconds, on the compiling gRPC thread.
  std::function<void(double seconds, bool ok)> on_constraint_compiled;
};

// Converts a wire request into an engine request: validates every field,
// renders chat prompts, tokenizes, and checks prompt + max_new_tokens against
// the context. Exposed for tests.
absl::StatusOr<GenerateRequest> ToEngineRequest(const ModelBundle& bundle,
                                                const tessera::worker::v1::GenerateRequest& wire);

// The vocabulary index structured output walks: each token's output bytes
// (none for control and unused tokens) and the end-of-generation ids.
std::shared_ptr<const structured::TokenIndex> MakeTokenIndex(const Tokenizer& tokenizer);

// Compiles a request's structured_output (when set) with `cache`: the
// constraint, or InvalidArgument carrying the spec's param.
absl::StatusOr<std::shared_ptr<const structured::Constraint>> CompileStructuredOutput(
    structured::ConstraintCache& cache, const tessera::worker::v1::GenerateRequest& wire);

class GenerateStream;

class WorkerService final : public tessera::worker::v1::Worker::CallbackService, public DrainableService {
 public:
  // REQUIRES: bundle, engine and adapters outlive the service.
  WorkerService(ModelBundle& bundle, Engine& engine, AdapterManager& adapters, WorkerServiceOptions options);

  grpc::ServerWriteReactor<tessera::worker::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const tessera::worker::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const tessera::worker::v1::GetModelInfoRequest* request,
                                         tessera::worker::v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const tessera::worker::v1::TokenizeRequest* request,
                                     tessera::worker::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* context,
                                        const tessera::worker::v1::LoadAdapterRequest* request,
                                        tessera::worker::v1::LoadAdapterResponse* response) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* context,
                                          const tessera::worker::v1::UnloadAdapterRequest* request,
                                          tessera::worker::v1::UnloadAdapterResponse* response) override;
  grpc::ServerWriteReactor<tessera::worker::v1::LoadReport>* WatchLoad(
      grpc::CallbackServerContext* context, const tessera::worker::v1::WatchLoadRequest* request) override;
  grpc::ServerUnaryReactor* PrefetchAdapter(grpc::CallbackServerContext* context,
                                            const tessera::worker::v1::PrefetchAdapterRequest* request,
                                            tessera::worker::v1::PrefetchAdapterResponse* response) override;
  // DrainableService.
  void StartDrain() override { draining_.store(true); }
  int ActiveGenerations() const override;
  void AbortGenerations(const grpc::Status& status) override;
  void StopLoadReports() override { reporter_->Stop(); }
  // Streams report here when gRPC is done with them.
  void StreamDone(const GenerateStream* stream);
  // The current load report (what WatchLoad streams).
  tessera::worker::v1::LoadReport Snapshot() const;
  // Structured output's compiled-constraint cache (its stats for metrics).
  const structured::ConstraintCache& constraint_cache() const { return *constraints_; }

 private:
  ModelBundle& bundle_;
  Engine& engine_;
  AdapterManager& adapters_;
  WorkerServiceOptions options_;
  uint64_t created_unix_s_;
  std::atomic<bool> draining_{false};
  mutable absl::Mutex streams_mu_;
  absl::flat_hash_map<const GenerateStream*, std::weak_ptr<GenerateStream>> streams_ ABSL_GUARDED_BY(streams_mu_);
  // Structured output: compiled constraints over this model's vocabulary,
  // shared by all requests (compiled on the gRPC thread that takes them).
  std::unique_ptr<structured::ConstraintCache> constraints_;
  std::unique_ptr<LoadReporter> reporter_;  // last: stops before the rest goes
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SERVICE_WORKER_SERVICE_H_
