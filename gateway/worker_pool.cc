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
      const bool* stop = &raw->stop_;
      if (raw->stop_mu_.AwaitWithTimeout(absl::Condition(stop),
                                         absl::Milliseconds(raw->options_.refresh_interval.count()))) {
        return;
      }
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

absl::StatusOr<Worker*> WorkerPool::Pick(const std::string& model) {
  Worker* best = nullptr;
  bool any_healthy = false;
  const uint64_t start = rr_.fetch_add(1);
  for (size_t k = 0; k < workers_.size(); ++k) {
    Worker* w = workers_[(start + k) % workers_.size()].get();
    if (!w->healthy.load()) continue;
    any_healthy = true;
    {
      absl::MutexLock lock(&w->mu);
      if (w->info.model_id() != model) continue;
    }
    if (best == nullptr || w->in_flight.load() < best->in_flight.load()) best = w;
  }
  if (best) return best;
  if (!any_healthy) return absl::UnavailableError("no healthy worker is available");
  return WithCode(absl::NotFoundError(absl::StrCat("The model '", model, "' does not exist")), "model_not_found");
}

std::vector<wv1::ModelInfo> WorkerPool::Models() {
  std::vector<wv1::ModelInfo> out;
  for (auto& w : workers_) {
    if (!w->healthy.load()) continue;
    absl::MutexLock lock(&w->mu);
    bool seen = false;
    for (const auto& m : out) seen |= m.model_id() == w->info.model_id();
    if (!seen) out.push_back(w->info);
  }
  return out;
}

}  // namespace tessera::gateway
