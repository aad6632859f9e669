#include "gateway/worker_pool.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "gateway/completion_call.h"
#include "gateway/gateway_metrics.h"
#include "gateway/openai/errors.h"
#include "gateway/pool/membership.h"

namespace tessera::gateway {

namespace wv1 = tessera::worker::v1;
namespace hv1 = grpc::health::v1;

namespace {

void Log(const std::string& line) { std::fprintf(stderr, "tessera-gateway: %s\n", line.c_str()); }

// What a request's final status says about its worker.
RequestFault FaultOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
      return RequestFault::kUnreachable;
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::DATA_LOSS:
      return RequestFault::kWorkerFault;
    default:
      return RequestFault::kNotTheWorkers;
  }
}

WorkerHealthOptions HealthOptions(const WorkerPoolOptions& o) {
  return {.outlier_consecutive_failures = o.outlier_consecutive_failures,
          .base_ejection = absl::FromChrono(o.base_ejection),
          .max_ejection = absl::FromChrono(o.max_ejection)};
}

}  // namespace

// A worker's WatchLoad stream: every report replaces the worker's view of
// its load and adapter residency. Deletes itself when the stream ends; the
// pool's refresher opens a new one while the worker is healthy.
class LoadWatch final : public grpc::ClientReadReactor<wv1::LoadReport> {
 public:
  LoadWatch(WorkerPool* pool, std::shared_ptr<Worker> w) : pool_(pool), w_(std::move(w)) {
    request_.set_max_interval_ms(200);
    w_->stub->async()->WatchLoad(&ctx_, &request_, this);
    StartRead(&report_);
    StartCall();
  }
  void Cancel() { ctx_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    {
      absl::MutexLock lock(&w_->mu);
      w_->report = report_;
      w_->have_report = true;
      w_->device_adapters.clear();
      w_->host_adapters.clear();
      for (const auto& a : report_.device_adapters()) w_->device_adapters.insert(a);
      for (const auto& a : report_.host_adapters()) w_->host_adapters.insert(a);
    }
    w_->sent_since_report.store(0);
    StartRead(&report_);
  }

  void OnDone(const grpc::Status&) override {
    {
      absl::MutexLock lock(&w_->mu);
      if (w_->watch == this) w_->watch = nullptr;
      w_->have_report = false;  // stale from now on: route on in-flight counts
    }
    {
      absl::MutexLock lock(&pool_->watch_mu_);
      --pool_->open_watches_;
    }
    delete this;
  }

 private:
  WorkerPool* pool_;
  std::shared_ptr<Worker> w_;
  grpc::ClientContext ctx_;
  wv1::WatchLoadRequest request_;
  wv1::LoadReport report_;
};

std::shared_ptr<Worker> WorkerPool::NewWorker(const std::string& address, bool from_dns) const {
  auto w = std::make_shared<Worker>(health_options_);
  w->address = address;
  w->from_dns = from_dns;
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(options_.connect_timeout.count()));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetMaxReceiveMessageSize(64 << 20);
  w->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  w->stub = wv1::Worker::NewStub(w->channel);
  w->connection = NewGrpcWorkerConnection(w->stub);
  w->health_stub = hv1::Health::NewStub(w->channel);
  return w;
}

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const std::vector<std::string>& addresses,
                                                               const WorkerPoolOptions& options) {
  if (addresses.empty() && options.dns_names.empty()) {
    return absl::InvalidArgumentError("no workers configured (--worker HOST:PORT or --worker-dns NAME:PORT)");
  }
  auto members = StaticMembers(addresses);
  if (!members.ok()) return members.status();
  std::unique_ptr<WorkerPool> p(new WorkerPool(options));
  auto policy = CreateRoutingPolicy(options.routing_policy);
  if (!policy.ok()) return policy.status();
  p->policy_ = std::move(*policy);
  for (const std::string& name : options.dns_names) {
    auto t = ParseDnsTarget(name);
    if (!t.ok()) return t.status();
    p->dns_targets_.push_back(*t);
  }
  {
    absl::MutexLock lock(&p->workers_mu_);
    for (const std::string& a : *members) p->workers_.push_back(p->NewWorker(a, false));
  }
  p->refresher_ = std::thread([raw = p.get()] {
    while (true) {
      raw->RefreshNow();
      for (const auto& w : raw->Snapshot()) {
        if (w->health.serving()) raw->StartWatch(w);
      }
      absl::MutexLock lock(&raw->stop_mu_);
      raw->stop_mu_.AwaitWithTimeout(
          absl::Condition(
              +[](WorkerPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->stop_mu_) { return p->stop_ || p->refresh_; }, raw),
          absl::Milliseconds(raw->options_.refresh_interval.count()));
      if (raw->stop_) return;
      raw->refresh_ = false;
    }
  });
  return p;
}

WorkerPool::WorkerPool(const WorkerPoolOptions& options)
    : options_(options),
      health_options_(HealthOptions(options)),
      retry_budget_(options.retry_budget_ratio, options.min_retry_concurrency) {}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&stop_mu_);
    stop_ = true;
  }
  if (refresher_.joinable()) refresher_.join();
  {
    absl::MutexLock lock(&watch_mu_);
    stopping_watches_ = true;
  }
  for (const auto& w : Snapshot()) {
    absl::MutexLock lock(&w->mu);
    if (w->watch != nullptr) w->watch->Cancel();
  }
  absl::MutexLock lock(&watch_mu_);
  watch_mu_.Await(absl::Condition(
      +[](WorkerPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->watch_mu_) { return p->open_watches_ == 0; }, this));
}

std::vector<std::shared_ptr<Worker>> WorkerPool::Snapshot() {
  absl::MutexLock lock(&workers_mu_);
  return workers_;
}

void WorkerPool::ResolveDns() {
  std::erase_if(retired_, [](const std::shared_ptr<Worker>& w) { return w.use_count() == 1; });
  if (dns_targets_.empty() || absl::Now() < next_dns_) return;
  next_dns_ = absl::Now() + absl::Milliseconds(options_.dns_refresh_interval.count());
  absl::flat_hash_set<std::string> found;
  for (const DnsTarget& t : dns_targets_) {
    auto addresses = ResolveWorkers(t, options_.dns);
    if (!addresses.ok()) {
      // No answer is not "no workers": keep the current set until DNS answers.
      Log(absl::StrCat("worker discovery: ", addresses.status().message(), "; keeping the current workers"));
      return;
    }
    found.insert(addresses->begin(), addresses->end());
  }
  std::vector<std::shared_ptr<Worker>> gone;
  {
    absl::MutexLock lock(&workers_mu_);
    std::vector<Member> members;
    for (const auto& w : workers_) members.push_back({w->address, w->from_dns});
    const MembershipChange change = DiffMembership(members, found);
    const absl::flat_hash_set<std::string> removed(change.removed.begin(), change.removed.end());
    std::vector<std::shared_ptr<Worker>> keep;
    for (auto& w : workers_) (w->from_dns && removed.contains(w->address) ? gone : keep).push_back(w);
    for (const std::string& a : change.added) {
      keep.push_back(NewWorker(a, true));
      Log(absl::StrCat("worker discovery: added ", a));
    }
    workers_ = std::move(keep);
  }
  for (const auto& w : gone) {
    Log(absl::StrCat("worker discovery: removed ", w->address, " (", w->in_flight.load(),
                     " streams in flight finish there)"));
    w->removed.store(true);
    w->health.OnProbe(/*passed=*/false, absl::Now());
    {
      absl::MutexLock lock(&w->mu);
      if (w->watch != nullptr) w->watch->Cancel();
    }
    retired_.push_back(w);
  }
}

void WorkerPool::StartWatch(const std::shared_ptr<Worker>& w) {
  {
    absl::MutexLock lock(&watch_mu_);
    if (stopping_watches_) return;
  }
  absl::MutexLock lock(&w->mu);
  if (w->watch != nullptr || w->removed.load()) return;
  {
    absl::MutexLock wl(&watch_mu_);
    ++open_watches_;
  }
  w->watch = new LoadWatch(this, w);
}

void WorkerPool::Prefetch(const std::shared_ptr<Worker>& w, const std::string& adapter) {
  {
    absl::MutexLock lock(&w->mu);
    absl::Time& last = w->prefetched[adapter];
    const absl::Time now = absl::Now();
    if (now - last < absl::Seconds(5)) return;
    last = now;
  }
  struct Call {
    std::shared_ptr<Worker> worker;  // keeps the stub alive
    grpc::ClientContext ctx;
    wv1::PrefetchAdapterRequest request;
    wv1::PrefetchAdapterResponse response;
  };
  auto* call = new Call();
  call->worker = w;
  call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  call->request.set_name(adapter);
  w->stub->async()->PrefetchAdapter(&call->ctx, &call->request, &call->response,
                                    [call](grpc::Status) { delete call; });
}

void WorkerPool::ProbeAll() {
  std::vector<std::shared_ptr<Worker>> workers = Snapshot();
  // Probes run in parallel, so one hung worker delays no other's probe.
  struct Probe {
    std::shared_ptr<Worker> worker;
    grpc::ClientContext health_ctx, info_ctx;
    hv1::HealthCheckRequest health_request;
    hv1::HealthCheckResponse health_response;
    wv1::GetModelInfoRequest info_request;
    wv1::ModelInfo info;
  };
  absl::BlockingCounter pending(static_cast<int>(workers.size()));
  std::vector<std::unique_ptr<Probe>> probes;
  const auto deadline = std::chrono::system_clock::now() + options_.probe_timeout;
  for (const auto& w : workers) {
    if (!w->health.ProbeDue(absl::Now())) {  // ejected, not yet due for re-admission
      pending.DecrementCount();
      continue;
    }
    auto p = std::make_unique<Probe>();
    p->worker = w;
    p->health_ctx.set_deadline(deadline);
    p->info_ctx.set_deadline(deadline);
    Probe* raw = p.get();
    probes.push_back(std::move(p));
    w->health_stub->async()->Check(
        &raw->health_ctx, &raw->health_request, &raw->health_response, [this, raw, &pending](grpc::Status s) {
          if (s.ok() && raw->health_response.status() != hv1::HealthCheckResponse::SERVING) {
            s = grpc::Status(grpc::StatusCode::UNAVAILABLE, "health check: not serving");
          }
          if (!s.ok()) {
            OnProbed(raw->worker, s, nullptr);
            pending.DecrementCount();
            return;
          }
          raw->worker->stub->async()->GetModelInfo(&raw->info_ctx, &raw->info_request, &raw->info,
                                                   [this, raw, &pending](grpc::Status s2) {
                                                     OnProbed(raw->worker, s2, s2.ok() ? &raw->info : nullptr);
                                                     pending.DecrementCount();
                                                   });
        });
  }
  pending.Wait();
}

void WorkerPool::OnProbed(const std::shared_ptr<Worker>& wp, const grpc::Status& status, const wv1::ModelInfo* info) {
  Worker& w = *wp;
  if (w.removed.load()) return;
  if (!status.ok()) {
    if (w.health.OnProbe(/*passed=*/false, absl::Now()).became_not_serving) {
      Log(absl::StrCat("worker ", w.address, " is not serving: ", status.error_message()));
    }
    return;
  }
  {
    absl::MutexLock lock(&w.mu);
    w.info = *info;
  }
  const WorkerHealth::ProbeTransition t = w.health.OnProbe(/*passed=*/true, absl::Now());
  if (t.readmitted) Log(absl::StrCat("worker ", w.address, " re-admitted after a passing probe"));
  if (t.became_serving) Log(absl::StrCat("worker ", w.address, " is serving"));
  RestoreRuntimeAdapters(wp, *info);
}

void WorkerPool::RememberRuntimeAdapter(const std::string& name, const std::string& path) {
  runtime_adapters_.Remember(name, path);
}

void WorkerPool::NoteAdapterChange(Worker& w, const std::string& name, bool loaded) {
  absl::MutexLock lock(&w.mu);
  auto* adapters = w.info.mutable_adapters();
  for (int i = 0; i < adapters->size(); ++i) {
    if (adapters->Get(i).name() != name) continue;
    if (!loaded) adapters->DeleteSubrange(i, 1);
    return;
  }
  if (loaded) {
    wv1::AdapterInfo* a = adapters->Add();
    a->set_name(name);
    a->set_tier(wv1::ADAPTER_TIER_DISK);
  }
}

void WorkerPool::ForgetRuntimeAdapter(const std::string& name) { runtime_adapters_.Forget(name); }

void WorkerPool::RestoreRuntimeAdapters(const std::shared_ptr<Worker>& w, const wv1::ModelInfo& info) {
  absl::flat_hash_set<std::string> catalog;
  for (const auto& a : info.adapters()) catalog.insert(a.name());
  const absl::Time now = absl::Now();
  for (auto& [name, path] : runtime_adapters_.MissingFrom(catalog)) {
    {
      absl::MutexLock lock(&w->mu);
      if (!w->restoring.TryBegin(name, now)) continue;
    }
    Log(absl::StrCat("worker ", w->address, " lacks runtime adapter '", name, "': loading it from ", path));
    struct Call {
      std::shared_ptr<Worker> worker;
      grpc::ClientContext ctx;
      wv1::LoadAdapterRequest request;
      wv1::LoadAdapterResponse response;
    };
    auto* call = new Call();
    call->worker = w;
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    call->request.set_name(name);
    call->request.set_path(path);
    w->stub->async()->LoadAdapter(&call->ctx, &call->request, &call->response, [this, call](grpc::Status s) {
      if (s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
        RequestRefresh();
      } else {
        Log(absl::StrCat("restoring adapter '", call->request.name(), "' on ", call->worker->address,
                         " failed: ", s.error_message()));
      }
      delete call;
    });
  }
}

void WorkerPool::Eject(Worker& w, const std::string& reason, std::string_view kind) {
  const std::vector<std::shared_ptr<Worker>> all = Snapshot();
  int ejected = 0;
  for (const auto& o : all) ejected += o->health.ejected();
  if (ejected >= std::max<int>(1, static_cast<int>(all.size()) / 2)) {
    Log(absl::StrCat("worker ", w.address, " not ejected (", reason, "): ", ejected,
                     " of ", all.size(), " workers are ejected already"));
    return;
  }
  const std::optional<absl::Duration> duration = w.health.Eject(absl::Now());
  if (!duration) return;  // ejected already
  if (options_.metrics != nullptr) options_.metrics->Ejected(w.address, kind);
  Log(absl::StrCat("worker ", w.address, " ejected for ", absl::ToInt64Milliseconds(*duration), " ms: ", reason));
}

void WorkerPool::ReportSuccess(Worker& w) { w.health.OnRequestSucceeded(); }

void WorkerPool::ReportFailure(Worker& w, const grpc::Status& status) {
  switch (w.health.OnRequestFailed(FaultOf(status.error_code()))) {
    case WorkerHealth::Verdict::kNothing:
      return;
    case WorkerHealth::Verdict::kNowNotServing:
      // Unreachable or shutting down: out of rotation until a probe passes.
      Log(absl::StrCat("worker ", w.address, " is unavailable: ", status.error_message()));
      [[fallthrough]];
    case WorkerHealth::Verdict::kStillNotServing:
      RequestRefresh();
      return;
    case WorkerHealth::Verdict::kEject:
      Eject(w, absl::StrCat(w.health.consecutive_failures(), " consecutive failed requests, the last: ",
                            status.error_message()), "failures");
      return;
  }
}

void WorkerPool::ReportHung(Worker& w, std::chrono::milliseconds waited) {
  Eject(w, absl::StrCat("accepted no request within ", waited.count(), " ms"), "hung");
}

void WorkerPool::TrackCall(const std::shared_ptr<CompletionCall>& call) {
  requests_in_flight_.fetch_add(1);
  absl::MutexLock lock(&calls_mu_);
  calls_[call.get()] = call;
}

void WorkerPool::UntrackCall(const CompletionCall* call) {
  requests_in_flight_.fetch_sub(1);
  absl::MutexLock lock(&calls_mu_);
  calls_.erase(call);
}

void WorkerPool::AbortAll(const absl::Status& status) {
  std::vector<std::shared_ptr<CompletionCall>> live;
  {
    absl::MutexLock lock(&calls_mu_);
    for (auto& [raw, weak] : calls_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  for (auto& c : live) c->Abort(status);  // outside calls_mu_: Abort untracks
}

void WorkerPool::RefreshNow() {
  absl::MutexLock lock(&refresh_mu_);  // the refresher and start-up may both refresh
  ResolveDns();
  ProbeAll();
}

bool WorkerPool::AnyHealthy() {
  for (const auto& w : Snapshot()) {
    if (w->health.serving() && !w->health.ejected()) return true;
  }
  return false;
}

void WorkerPool::RequestRefresh() {
  absl::MutexLock lock(&stop_mu_);
  refresh_ = true;
}

std::vector<std::shared_ptr<Worker>> WorkerPool::Healthy() {
  std::vector<std::shared_ptr<Worker>> out;
  for (auto& w : Snapshot()) {
    if (w->health.serving()) out.push_back(w);
  }
  return out;
}

bool WorkerPool::Routable(const Worker& w, int max_in_flight) {
  return w.health.serving() && !w.health.ejected() && !w.removed.load() && w.in_flight.load() < max_in_flight;
}

absl::StatusOr<WorkerPool::Candidates> WorkerPool::CollectCandidates(const std::string& model,
                                                                     const std::string& adapter,
                                                                     const std::vector<const Worker*>& exclude) {
  Candidates out;
  std::vector<RouteCandidate>& candidates = out.candidates;
  std::vector<std::shared_ptr<Worker>>& workers = out.workers;
  std::string& use = out.use;
  const std::vector<std::shared_ptr<Worker>> all = Snapshot();
  bool any_routable = false, any_open_circuit = false;
  absl::Status conflict;
  for (const auto& w : all) {
    if (std::find(exclude.begin(), exclude.end(), w.get()) != exclude.end()) continue;
    if (!Routable(*w, options_.max_in_flight_per_worker)) {
      any_open_circuit |= w->health.serving() && !w->health.ejected() && !w->removed.load();
      continue;
    }
    any_routable = true;
    absl::MutexLock lock(&w->mu);
    auto in_catalog = [&](const std::string& name) {
      for (const auto& a : w->info.adapters()) {
        if (a.name() == name) return &a;
      }
      return static_cast<const wv1::AdapterInfo*>(nullptr);
    };
    std::string here;
    const wv1::AdapterInfo* entry = nullptr;
    if (w->info.model_id() == model) {
      here = adapter;
      if (!adapter.empty() && (entry = in_catalog(adapter)) == nullptr) continue;
    } else if ((entry = in_catalog(model)) != nullptr) {
      if (!adapter.empty() && adapter != model) {
        conflict = absl::InvalidArgumentError(absl::StrCat("'model' names the adapter '", model,
                                                           "' but X-Lora-Adapter names '", adapter, "'"));
        continue;
      }
      here = model;
    } else {
      continue;
    }
    use = here;
    RouteCandidate c;
    c.address = w->address;
    if (here.empty()) {
      c.residency = kOnDevice;
    } else if (w->have_report) {
      c.residency = w->device_adapters.contains(here) ? kOnDevice : w->host_adapters.contains(here) ? kInHost : kOnDisk;
    } else {
      c.residency = entry->tier() == wv1::ADAPTER_TIER_DEVICE ? kOnDevice
                    : entry->tier() == wv1::ADAPTER_TIER_HOST ? kInHost
                                                              : kOnDisk;
    }
    if (w->have_report) {
      c.load = w->report.running() + w->report.waiting() + w->sent_since_report.load();
      c.capacity = std::max<uint32_t>(1, w->report.max_num_seqs());
    } else {
      c.load = w->in_flight.load();
    }
    candidates.push_back(c);
    workers.push_back(w);
  }
  if (candidates.empty()) {
    if (!conflict.ok()) return WithCode(conflict, "invalid_request_error");
    if (!any_routable) {
      if (any_open_circuit) {
        return absl::UnavailableError(absl::StrCat("every worker is at its limit of ",
                                                   options_.max_in_flight_per_worker, " requests in flight"));
      }
      return absl::UnavailableError(exclude.empty() ? "no healthy worker is available"
                                                    : "no other healthy worker is available");
    }
    const std::string& missing = adapter.empty() ? model : adapter;
    return WithCode(absl::NotFoundError(absl::StrCat("The model '", missing, "' does not exist")), "model_not_found");
  }
  return out;
}

absl::Status WorkerPool::CanRoute(const std::string& model, const std::string& adapter,
                                  const std::vector<const Worker*>& exclude) {
  return CollectCandidates(model, adapter, exclude).status();
}

absl::StatusOr<WorkerPool::Route> WorkerPool::Pick(const std::string& model, const std::string& adapter,
                                                   const std::vector<const Worker*>& exclude) {
  absl::StatusOr<Candidates> found = CollectCandidates(model, adapter, exclude);
  if (!found.ok()) return found.status();
  const std::vector<RouteCandidate>& candidates = found->candidates;
  const std::vector<std::shared_ptr<Worker>>& workers = found->workers;
  const std::string& use = found->use;
  const RouteDecision d = policy_->Pick(use, candidates);
  const std::shared_ptr<Worker>& chosen = workers[d.chosen];
  chosen->sent_since_report.fetch_add(1);
  if (options_.metrics != nullptr) {
    const int r = candidates[d.chosen].residency;
    options_.metrics->Routed(policy_->name(), use.empty()         ? "base"
                                              : r == kOnDevice ? "device"
                                              : r == kInHost   ? "host"
                                                               : "disk");
  }
  if (options_.log_routing) {
    Log(absl::StrCat("route model=", model, " adapter=", use.empty() ? "-" : use, " -> ", chosen->address, " (",
                     std::string(policy_->name()), ": ", d.reason, ")"));
  }
  if (d.prefetch >= 0 && !use.empty()) Prefetch(workers[d.prefetch], use);
  return Route{chosen, use};
}

void WorkerPool::ExportWorkerMetrics() {
  if (options_.metrics == nullptr) return;
  std::vector<GatewayMetrics::WorkerState> states;
  for (const auto& w : Snapshot()) {
    GatewayMetrics::WorkerState s;
    s.address = w->address;
    s.healthy = w->health.serving();
    s.ejected = w->health.ejected();
    s.in_flight = w->in_flight.load();
    absl::MutexLock lock(&w->mu);
    if (w->have_report) {
      s.running = static_cast<int>(w->report.running());
      s.waiting = static_cast<int>(w->report.waiting());
    }
    states.push_back(std::move(s));
  }
  options_.metrics->SetWorkers(states);
}

std::vector<WorkerPool::Listing> WorkerPool::Models() {
  std::vector<Listing> out;
  auto add = [&](Listing l) {
    for (const auto& m : out) {
      if (m.id == l.id) return;
    }
    out.push_back(std::move(l));
  };
  for (auto& w : Snapshot()) {
    if (!w->health.serving()) continue;
    absl::MutexLock lock(&w->mu);
    add({w->info.model_id(), "", w->info.created_unix_s(), w->info.context_length(), w->info.weight_type()});
    for (const auto& a : w->info.adapters()) {
      add({a.name(), w->info.model_id(), w->info.created_unix_s(), w->info.context_length()});
    }
  }
  return out;
}

}  // namespace tessera::gateway
