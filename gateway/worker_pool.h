// WorkerPool: the gateway's soft state about workers (a static list for
// now). Each worker has one long-lived channel; a background thread
// refreshes every worker's model info (its catalog of adapters, and a health
// check) and keeps a WatchLoad stream open to it, whose reports give the
// routing policy each worker's load and adapter residency.
//
// Thread-safety: all methods are thread-safe.
#ifndef TESSERA_GATEWAY_WORKER_POOL_H_
#define TESSERA_GATEWAY_WORKER_POOL_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/routing/routing_policy.h"
#include "absl/synchronization/mutex.h"
#include "tessera/worker/v1/worker.grpc.pb.h"

namespace tessera::gateway {

class LoadWatch;

struct Worker {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tessera::worker::v1::Worker::Stub> stub;
  std::atomic<bool> healthy{false};
  std::atomic<int> in_flight{0};
  // Requests routed here since its last load report: the report cannot know
  // them yet, so a burst does not herd onto one worker.
  std::atomic<int> sent_since_report{0};
  absl::Mutex mu;
  tessera::worker::v1::ModelInfo info ABSL_GUARDED_BY(mu);
  bool have_report ABSL_GUARDED_BY(mu) = false;
  tessera::worker::v1::LoadReport report ABSL_GUARDED_BY(mu);
  absl::flat_hash_set<std::string> device_adapters ABSL_GUARDED_BY(mu);
  absl::flat_hash_set<std::string> host_adapters ABSL_GUARDED_BY(mu);
  LoadWatch* watch ABSL_GUARDED_BY(mu) = nullptr;  // the open WatchLoad stream
  // Last prefetch request per adapter (rate limit).
  absl::flat_hash_map<std::string, absl::Time> prefetched ABSL_GUARDED_BY(mu);
};

struct WorkerPoolOptions {
  std::chrono::milliseconds refresh_interval{1000};
  std::chrono::milliseconds probe_timeout{1000};
  std::string routing_policy = "adapter-affinity";
  bool log_routing = false;  // one line per routing decision, with its reason
};

class WorkerPool {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(const std::vector<std::string>& addresses,
                                                            const WorkerPoolOptions& options = {});
  ~WorkerPool();
  std::string_view policy_name() const { return policy_->name(); }

  // Where a request goes: a worker, and the LoRA adapter it runs with.
  struct Route {
    Worker* worker = nullptr;
    std::string adapter;  // empty: the base model
  };
  // `model` names a base model or an adapter; `adapter` (the X-Lora-Adapter
  // header, may be empty) names an adapter of the base model `model`.
  // Among healthy workers that serve it, the routing policy decides.
  // NotFound (code model_not_found) if healthy workers exist but none serves
  // it; Unavailable if no worker is healthy.
  absl::StatusOr<Route> Pick(const std::string& model, const std::string& adapter = "");
  // One entry of /v1/models: a base model (parent empty) or an adapter.
  struct Listing {
    std::string id;
    std::string parent;
    uint64_t created_unix_s = 0;
    uint32_t context_length = 0;
  };
  // The distinct base models and adapters served by healthy workers.
  std::vector<Listing> Models();
  std::vector<Worker*> Healthy();
  bool AnyHealthy() const;
  // Probes every worker once now (used at start so /ready is accurate early).
  void RefreshNow();
  // Asks the background prober to refresh soon (after adapter changes).
  void RequestRefresh();

 private:
  WorkerPool() = default;
  friend class LoadWatch;
  void Probe(Worker& w);
  void StartWatch(Worker& w);
  void Prefetch(Worker& w, const std::string& adapter);

  WorkerPoolOptions options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<RoutingPolicy> policy_;
  absl::Mutex watch_mu_;
  int open_watches_ ABSL_GUARDED_BY(watch_mu_) = 0;
  bool stopping_watches_ ABSL_GUARDED_BY(watch_mu_) = false;
  absl::Mutex stop_mu_;
  bool stop_ ABSL_GUARDED_BY(stop_mu_) = false;
  bool refresh_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread refresher_;
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_WORKER_POOL_H_
