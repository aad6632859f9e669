#include "gateway/worker_pool.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "gateway/openai/errors.h"

namespace tessera::gateway {

namespace wv1 = tessera::worker::v1;

// A worker's WatchLoad stream: every report replaces the worker's view of
// its load and adapter residency. Deletes itself when the stream ends; the
// pool's refresher opens a new one while the worker is healthy.
class LoadWatch final : public grpc::ClientReadReactor<wv1::LoadReport> {
 public:
  LoadWatch(WorkerPool* pool, Worker* w) : pool_(pool), w_(w) {
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
  Worker* w_;
  grpc::ClientContext ctx_;
  wv1::WatchLoadRequest request_;
  wv1::LoadReport report_;
};

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const std::vector<std::string>& addresses,
                                                               const WorkerPoolOptions& options) {
  if (addresses.empty()) return absl::InvalidArgumentError("no workers configured (--worker HOST:PORT)");
  std::unique_ptr<WorkerPool> p(new WorkerPool());
  p->options_ = options;
  auto policy = CreateRoutingPolicy(options.routing_policy);
  if (!policy.ok()) return policy.status();
  p->policy_ = std::move(*policy);
  for (const std::string& a : addresses) {
    if (a.empty() || a.find(':') == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("worker address '", a, "' is not HOST:PORT"));
    }
    auto w = std::make_unique<Worker>();
    w->address = a;
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    args.SetMaxReceiveMessageSize(64 << 20);
    w->channel = grpc::CreateCustomChannel(a, grpc::InsecureChannelCredentials(), args);
    w->stub = wv1::Worker::NewStub(w->channel);
    p->workers_.push_back(std::move(w));
  }
  p->refresher_ = std::thread([raw = p.get()] {
    while (true) {
      for (auto& w : raw->workers_) {
        raw->Probe(*w);
        if (w->healthy.load()) raw->StartWatch(*w);
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
  for (auto& w : workers_) {
    absl::MutexLock lock(&w->mu);
    if (w->watch != nullptr) w->watch->Cancel();
  }
  absl::MutexLock lock(&watch_mu_);
  watch_mu_.Await(absl::Condition(
      +[](WorkerPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->watch_mu_) { return p->open_watches_ == 0; }, this));
}

void WorkerPool::StartWatch(Worker& w) {
  {
    absl::MutexLock lock(&watch_mu_);
    if (stopping_watches_) return;
  }
  absl::MutexLock lock(&w.mu);
  if (w.watch != nullptr) return;
  {
    absl::MutexLock wl(&watch_mu_);
    ++open_watches_;
  }
  w.watch = new LoadWatch(this, &w);
}

void WorkerPool::Prefetch(Worker& w, const std::string& adapter) {
  {
    absl::MutexLock lock(&w.mu);
    absl::Time& last = w.prefetched[adapter];
    const absl::Time now = absl::Now();
    if (now - last < absl::Seconds(5)) return;
    last = now;
  }
  struct Call {
    grpc::ClientContext ctx;
    wv1::PrefetchAdapterRequest request;
    wv1::PrefetchAdapterResponse response;
  };
  auto* call = new Call();
  call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  call->request.set_name(adapter);
  w.stub->async()->PrefetchAdapter(&call->ctx, &call->request, &call->response,
                                   [call](grpc::Status) { delete call; });
}

void WorkerPool::Probe(Worker& w) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.probe_timeout);
  wv1::ModelInfo info;
  grpc::Status s = w.stub->GetModelInfo(&ctx, wv1::GetModelInfoRequest(), &info);
  if (s.ok()) {
    absl::MutexLock lock(&w.mu);
    w.info = info;
  }
  w.healthy.store(s.ok());
}

void WorkerPool::RefreshNow() {
  for (auto& w : workers_) Probe(*w);
}

bool WorkerPool::AnyHealthy() const {
  for (const auto& w : workers_) {
    if (w->healthy.load()) return true;
  }
  return false;
}

void WorkerPool::RequestRefresh() {
  absl::MutexLock lock(&stop_mu_);
  refresh_ = true;
}

std::vector<Worker*> WorkerPool::Healthy() {
  std::vector<Worker*> out;
  for (auto& w : workers_) {
    if (w->healthy.load()) out.push_back(w.get());
  }
  return out;
}

absl::StatusOr<WorkerPool::Route> WorkerPool::Pick(const std::string& model, const std::string& adapter) {
  std::vector<RouteCandidate> candidates;
  std::vector<Worker*> workers;
  std::string use;  // the adapter the request runs with
  bool any_healthy = false;
  absl::Status conflict;
  for (auto& wp : workers_) {
    Worker* w = wp.get();
    if (!w->healthy.load()) continue;
    any_healthy = true;
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
    if (!any_healthy) return absl::UnavailableError("no healthy worker is available");
    const std::string& missing = adapter.empty() ? model : adapter;
    return WithCode(absl::NotFoundError(absl::StrCat("The model '", missing, "' does not exist")), "model_not_found");
  }
  const RouteDecision d = policy_->Pick(use, candidates);
  Worker* chosen = workers[d.chosen];
  chosen->sent_since_report.fetch_add(1);
  if (options_.log_routing) {
    std::fprintf(stderr, "tessera-gateway: route model=%s adapter=%s -> %s (%s: %s)\n", model.c_str(),
                 use.empty() ? "-" : use.c_str(), chosen->address.c_str(), std::string(policy_->name()).c_str(),
                 d.reason.c_str());
  }
  if (d.prefetch >= 0 && !use.empty()) Prefetch(*workers[d.prefetch], use);
  return Route{chosen, use};
}

std::vector<WorkerPool::Listing> WorkerPool::Models() {
  std::vector<Listing> out;
  auto add = [&](Listing l) {
    for (const auto& m : out) {
      if (m.id == l.id) return;
    }
    out.push_back(std::move(l));
  };
  for (auto& w : workers_) {
    if (!w->healthy.load()) continue;
    absl::MutexLock lock(&w->mu);
    add({w->info.model_id(), "", w->info.created_unix_s(), w->info.context_length()});
    for (const auto& a : w->info.adapters()) {
      add({a.name(), w->info.model_id(), w->info.created_unix_s(), w->info.context_length()});
    }
  }
  return out;
}

}  // namespace tessera::gateway
