// WorkerPool: the gateway's soft state about workers. Membership comes from
// a static list and from DNS names (a Kubernetes headless Service),
// re-resolved periodically. Each worker has one long-lived channel with
// keepalive; a background thread probes every worker through
// grpc.health.v1 and GetModelInfo (its catalog of adapters) and keeps a
// WatchLoad stream open to it, whose reports give the routing policy each
// worker's load and adapter residency.
//
// A worker is routable when its last probe passed, it is not ejected and its
// circuit is closed (fewer than max_in_flight_per_worker requests). Request
// outcomes feed back: a transport failure marks it unhealthy until a probe
// passes again; a worker that does not answer within the first-response
// timeout, or fails consecutive requests, is ejected for a growing time and
// re-admitted only by a passing probe.
//
// Workers are shared_ptrs: one removed from DNS stays alive while requests
// and streams still use it.
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
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gateway/call_router.h"
#include "gateway/discovery/dns_resolver.h"
#include "gateway/pool/retry_budget.h"
#include "gateway/pool/runtime_adapters.h"
#include "gateway/pool/worker_health.h"
#include "gateway/routing/routing_policy.h"
#include "gateway/worker_connection.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tessera/worker/v1/worker.grpc.pb.h"

namespace tessera::gateway {

class LoadWatch;

struct Worker {
  std::string address;
  bool from_dns = false;
  std::shared_ptr<grpc::Channel> channel;
  std::shared_ptr<tessera::worker::v1::Worker::Stub> stub;
  // Generate streams (CompletionCall's seam); over `stub` in production.
  std::unique_ptr<WorkerConnection> connection;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub;
  WorkerHealth health;  // serving / ejected, from probes and request outcomes
  std::atomic<bool> removed{false};  // gone from discovery; finishing what it has
  std::atomic<int> in_flight{0};  // Generate streams open (counted by CompletionCall)
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
  RestoreThrottle restoring ABSL_GUARDED_BY(mu);  // runtime adapters being restored here

  explicit Worker(const WorkerHealthOptions& health_options) : health(health_options) {}
};

class GatewayMetrics;
class CompletionCall;

struct WorkerPoolOptions {
  GatewayMetrics* metrics = nullptr;  // optional; outlives the pool
  std::vector<std::string> dns_names;  // NAME:PORT, each re-resolved every dns_refresh_interval
  DnsOptions dns;
  std::chrono::milliseconds dns_refresh_interval{5000};
  std::chrono::milliseconds refresh_interval{1000};  // health probes
  std::chrono::milliseconds probe_timeout{1000};
  // Bounds a connection attempt (gRPC's minimum connect timeout).
  std::chrono::milliseconds connect_timeout{2000};
  std::string routing_policy = "adapter-affinity";
  bool log_routing = false;  // one line per routing decision, with its reason
  // Outlier ejection: this many consecutive failed requests eject a worker
  // for base_ejection x (its consecutive ejections), at most max_ejection;
  // at most half of the workers (and at least one) are ejected at once.
  int outlier_consecutive_failures = 3;
  std::chrono::milliseconds base_ejection{5000};
  std::chrono::milliseconds max_ejection{60000};
  // Circuit breaking: a worker with this many streams in flight takes no more.
  int max_in_flight_per_worker = 256;
  // Retry budget: retries in progress at most max(min_retry_concurrency,
  // retry_budget_ratio x requests in flight), so that failover never
  // multiplies load during a wide outage.
  double retry_budget_ratio = 0.2;
  int min_retry_concurrency = 3;
};

class WorkerPool final : public CallRouter {
 public:
  // `addresses`: static workers (HOST:PORT). At least one of them or of
  // options.dns_names is required.
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(const std::vector<std::string>& addresses,
                                                            const WorkerPoolOptions& options = {});
  ~WorkerPool();
  std::string_view policy_name() const { return policy_->name(); }
  const WorkerPoolOptions& options() const { return options_; }
  GatewayMetrics* metrics() const override { return options_.metrics; }
  // Sets the per-worker gauges (at scrape time).
  void ExportWorkerMetrics();

  // CallRouter. Pick: the routing policy decides among the candidates.
  // CanRoute has none of Pick's effects (no route is logged or counted, no
  // load is attributed, nothing is prefetched).
  absl::StatusOr<Route> Pick(const std::string& model, const std::string& adapter = "",
                             const std::vector<const Worker*>& exclude = {}) override;
  absl::Status CanRoute(const std::string& model, const std::string& adapter,
                        const std::vector<const Worker*>& exclude) override;
  void ReportSuccess(Worker& w) override;
  void ReportFailure(Worker& w, const grpc::Status& status) override;
  void ReportHung(Worker& w, std::chrono::milliseconds waited) override;

  // Adapters loaded at run time through this gateway (the admin routes):
  // a worker that serves without one of them (restarted, or newly
  // discovered) gets it loaded again when a probe sees its catalog.
  // Gateways are stateless, so each replica restores what it loaded itself.
  void RememberRuntimeAdapter(const std::string& name, const std::string& path);
  void ForgetRuntimeAdapter(const std::string& name);
  // A worker confirmed loading (or unloading) an adapter: its catalog
  // follows at once, before the next probe.
  void NoteAdapterChange(Worker& w, const std::string& name, bool loaded);

  // Requests in flight through the gateway (for the retry budget and the
  // drain). A tracked call must be untracked before it is destroyed.
  void TrackCall(const std::shared_ptr<CompletionCall>& call) override;
  void UntrackCall(const CompletionCall* call) override;
  int requests_in_flight() const { return requests_in_flight_.load(); }
  // Graceful drain: new requests are refused (Unavailable) and /ready fails;
  // AbortAll ends the calls still running with `status` (in-band for
  // streams that have begun).
  void StartDrain() { draining_.store(true); }
  bool Draining() const override { return draining_.load(); }
  void AbortAll(const absl::Status& status);
  // A retry may start if the budget allows; pair with EndRetry.
  bool TryStartRetry() override { return retry_budget_.TryStart(requests_in_flight_.load()); }
  void EndRetry() override { retry_budget_.End(); }

  // One entry of /v1/models: a base model (parent empty) or an adapter.
  struct Listing {
    std::string id;
    std::string parent;
    uint64_t created_unix_s = 0;
    uint32_t context_length = 0;
    std::string weight_type;   // base models: the checkpoint's encoding (e.g. awq-int4-g128)
  };
  // The distinct base models and adapters served by healthy workers.
  std::vector<Listing> Models();
  std::vector<std::shared_ptr<Worker>> Healthy();
  bool AnyHealthy();
  // Resolves DNS names and probes every worker once now (used at start so
  // that /ready is accurate early).
  void RefreshNow();
  // Asks the background prober to refresh soon (after adapter changes or a
  // failed request).
  void RequestRefresh();

 private:
  explicit WorkerPool(const WorkerPoolOptions& options);
  friend class LoadWatch;
  std::vector<std::shared_ptr<Worker>> Snapshot();
  std::shared_ptr<Worker> NewWorker(const std::string& address, bool from_dns) const;
  void ResolveDns() ABSL_EXCLUSIVE_LOCKS_REQUIRED(refresh_mu_);
  void ProbeAll();
  void OnProbed(const std::shared_ptr<Worker>& w, const grpc::Status& status,
                const tessera::worker::v1::ModelInfo* info);
  void Eject(Worker& w, const std::string& reason, std::string_view kind);
  void RestoreRuntimeAdapters(const std::shared_ptr<Worker>& w, const tessera::worker::v1::ModelInfo& info);
  void StartWatch(const std::shared_ptr<Worker>& w);
  void Prefetch(const std::shared_ptr<Worker>& w, const std::string& adapter);
  static bool Routable(const Worker& w, int max_in_flight);
  // The workers a request may go to, for Pick and CanRoute; the same
  // errors as Pick when there are none.
  struct Candidates {
    std::vector<RouteCandidate> candidates;
    std::vector<std::shared_ptr<Worker>> workers;
    std::string use;  // the adapter the request runs with
  };
  absl::StatusOr<Candidates> CollectCandidates(const std::string& model, const std::string& adapter,
                                               const std::vector<const Worker*>& exclude);

  const WorkerPoolOptions options_;
  const WorkerHealthOptions health_options_;
  std::vector<DnsTarget> dns_targets_;
  absl::Mutex refresh_mu_;  // one refresh (DNS + probes) at a time
  absl::Time next_dns_ ABSL_GUARDED_BY(refresh_mu_) = absl::InfinitePast();
  absl::Mutex workers_mu_;
  std::vector<std::shared_ptr<Worker>> workers_ ABSL_GUARDED_BY(workers_mu_);
  // Workers removed from discovery, held until nothing else uses them, so
  // that the last reference (and the channel) is never dropped inside a gRPC
  // callback of that channel. Refresher thread only.
  std::vector<std::shared_ptr<Worker>> retired_ ABSL_GUARDED_BY(refresh_mu_);
  std::unique_ptr<RoutingPolicy> policy_;
  std::atomic<int> requests_in_flight_{0};
  std::atomic<bool> draining_{false};
  RuntimeAdapters runtime_adapters_;
  absl::Mutex calls_mu_;
  absl::flat_hash_map<const CompletionCall*, std::weak_ptr<CompletionCall>> calls_ ABSL_GUARDED_BY(calls_mu_);
  RetryBudget retry_budget_;
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
