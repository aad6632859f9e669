#include "gateway/worker_pool.h"

#include "absl/strings/str_cat.h"
#include "gateway/openai/errors.h"

namespace tessera::gateway {

namespace wv1 = tessera::worker::v1;

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const std::vector<std::string>& addresses,
                                                               const WorkerPoolOptions& options) {
  if (addresses.empty()) return absl::InvalidArgumentError("no workers configured (--worker HOST:PORT)");
  std::unique_ptr<WorkerPool> p(new WorkerPool());
  p->options_ = options;
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
      for (auto& w : raw->workers_) raw->Probe(*w);
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
  Route best;
  int best_tier = -1;
  bool any_healthy = false;
  absl::Status conflict;
  const uint64_t start = rr_.fetch_add(1);
  for (size_t k = 0; k < workers_.size(); ++k) {
    Worker* w = workers_[(start + k) % workers_.size()].get();
    if (!w->healthy.load()) continue;
    any_healthy = true;
    std::string use;  // the adapter this worker would run
    int tier = 0;     // residency of what it would run: 3 base, 2 device, 1 host, 0 disk
    {
      absl::MutexLock lock(&w->mu);
      auto tier_of = [&](const std::string& name) {
        for (const auto& a : w->info.adapters()) {
          if (a.name() == name) {
            return a.tier() == wv1::ADAPTER_TIER_DEVICE ? 2 : a.tier() == wv1::ADAPTER_TIER_HOST ? 1 : 0;
          }
        }
        return -1;
      };
      if (w->info.model_id() == model) {
        use = adapter;
        tier = adapter.empty() ? 3 : tier_of(adapter);
      } else if ((tier = tier_of(model)) >= 0) {
        if (!adapter.empty() && adapter != model) {
          conflict = absl::InvalidArgumentError(absl::StrCat("'model' names the adapter '", model,
                                                             "' but X-Lora-Adapter names '", adapter, "'"));
          continue;
        }
        use = model;
      } else {
        continue;
      }
      if (tier < 0) continue;  // serves the base model but not this adapter
    }
    if (best.worker == nullptr || tier > best_tier ||
        (tier == best_tier && w->in_flight.load() < best.worker->in_flight.load())) {
      best = Route{w, use};
      best_tier = tier;
    }
  }
  if (best.worker) return best;
  if (!conflict.ok()) return WithCode(conflict, "invalid_request_error");
  if (!any_healthy) return absl::UnavailableError("no healthy worker is available");
  const std::string& missing = adapter.empty() ? model : adapter;
  return WithCode(absl::NotFoundError(absl::StrCat("The model '", missing, "' does not exist")), "model_not_found");
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
