// SimWorker: the tessera.worker.v1 service without a model, for scale tests
// and routing experiments on machines without accelerators
// (`tessera-worker --engine=sim`; never the default).
//
// It keeps the real worker's externally visible behaviour: a bounded queue
// (RESOURCE_EXHAUSTED), continuous batching up to max_num_seqs, adapters
// that must be on one of max_loras device slots to run (least recently used
// evicted among unpinned ones, max_cpu_loras kept in host memory), load
// reports, cancellation. Time is simulated from flags: each step lasts
// step_ms + prefill_us_per_token x (prompt tokens admitted) +
// decode_us_per_seq x (running sequences); a cold adapter takes
// adapter_load_ms from disk, a quarter of that from host memory. Prompts
// count one token per 4 bytes; every generated token is the text " tok".
//
// Thread-safety: gRPC threads call the service; one simulation thread runs
// the steps.
#ifndef TESSERA_WORKER_SIM_SIM_WORKER_H_
#define TESSERA_WORKER_SIM_SIM_WORKER_H_

#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "tessera/worker/v1/worker.grpc.pb.h"
#include "worker/service/drainable.h"
#include "worker/service/load_reporter.h"

namespace tessera {

struct SimWorkerOptions {
  std::string model_id = "sim";
  int max_num_seqs = 32;
  int max_waiting = 256;
  int max_loras = 8;
  int max_cpu_loras = 32;
  int adapters = 0;  // catalog: adapters named a0 .. a<N-1>
  double step_ms = 5;
  double prefill_us_per_token = 100;
  double decode_us_per_seq = 500;
  double adapter_load_ms = 100;
  int64_t kv_tokens = 65536;  // capacity reported as KV blocks of 16 tokens
  uint32_t context_length = 8192;
};

class SimWorker final : public tessera::worker::v1::Worker::CallbackService, public DrainableService {
 public:
  explicit SimWorker(const SimWorkerOptions& options);
  ~SimWorker() override;

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

  void StopLoadReports() override { reporter_->Stop(); }
  void StartDrain() override;
  int ActiveGenerations() const override;
  void AbortGenerations(const grpc::Status& status) override;
  tessera::worker::v1::LoadReport Snapshot() const;

 private:
  class Stream;
  struct Seq {
    std::shared_ptr<Stream> stream;
    int64_t prompt_tokens = 0;
    int64_t max_tokens = 0;
    int64_t produced = 0;
    std::string adapter;
    bool prefilled = false;
  };
  struct Adapter {
    bool on_device = false;
    bool on_host = false;
    int pins = 0;
    uint64_t last_used = 0;
    double ready_at_ms = -1;  // a load in flight completes then; -1: none
  };

  void Loop();
  double NowMs() const;
  // Moves finished loads onto the device, evicting unpinned adapters.
  void AdvanceLoadsLocked(double now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts loading `name` unless it is on the device or loading.
  void RequestLoadLocked(const std::string& name, double now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Seq& seq, const grpc::Status& status);

  const SimWorkerOptions options_;
  const uint64_t created_unix_s_;
  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<Seq>> waiting_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Seq>> running_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Adapter> adapters_ ABSL_GUARDED_BY(mu_);
  uint64_t tick_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t loads_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t adapter_requests_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t device_hits_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
  std::unique_ptr<LoadReporter> reporter_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SIM_SIM_WORKER_H_
