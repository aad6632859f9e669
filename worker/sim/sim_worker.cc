#include "worker/sim/sim_worker.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/grpc/queued_server_writer.h"
#include "worker/lora/lora_adapter.h"

namespace tessera {

namespace wv1 = tessera::worker::v1;

class SimWorker::Stream final : public QueuedServerWriter<wv1::GenerateResponse> {
 public:
  static std::shared_ptr<Stream> Create() {
    std::shared_ptr<Stream> s(new Stream());
    s->Adopt(s);
    return s;
  }
  std::atomic<bool> cancelled{false};
  double enqueued_ms = 0;
  double admitted_ms = 0;

 private:
  Stream() = default;
  void OnClientGone() override { cancelled.store(true); }
};

namespace {

int64_t PromptTokens(const wv1::GenerateRequest& r) {
  switch (r.prompt_case()) {
    case wv1::GenerateRequest::kTokenIds: return r.token_ids().ids_size();
    case wv1::GenerateRequest::kText: return std::max<int64_t>(1, static_cast<int64_t>(r.text().size() / 4));
    case wv1::GenerateRequest::kChat: {
      int64_t bytes = 0;
      for (const auto& m : r.chat().messages()) bytes += static_cast<int64_t>(m.content().size() + 8);
      return std::max<int64_t>(1, bytes / 4);
    }
    default: return 0;
  }
}

grpc::Status Err(grpc::StatusCode code, std::string message) { return grpc::Status(code, std::move(message)); }

}  // namespace

SimWorker::SimWorker(const SimWorkerOptions& options)
    : options_(options),
      created_unix_s_(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
              .count())) {
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < options_.adapters; ++i) adapters_[absl::StrCat("a", i)] = Adapter{};
  }
  thread_ = std::thread([this] { Loop(); });
  reporter_ = std::make_unique<LoadReporter>([this] { return Snapshot(); });
}

SimWorker::~SimWorker() {
  reporter_->Stop();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void SimWorker::StartDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

int SimWorker::ActiveGenerations() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(running_.size() + waiting_.size());
}

void SimWorker::AbortGenerations(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  for (auto& s : running_) Finish(*s, status);
  for (auto& s : waiting_) Finish(*s, status);
  running_.clear();
  waiting_.clear();
}

double SimWorker::NowMs() const {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void SimWorker::Finish(Seq& seq, const grpc::Status& status) { seq.stream->Finish(status); }

grpc::ServerWriteReactor<wv1::GenerateResponse>* SimWorker::Generate(grpc::CallbackServerContext*,
                                                                     const wv1::GenerateRequest* request) {
  std::shared_ptr<Stream> stream = Stream::Create();
  auto seq = std::make_shared<Seq>();
  seq->stream = stream;
  seq->prompt_tokens = PromptTokens(*request);
  seq->max_tokens = request->prompt_only() ? 0 : request->max_new_tokens() == 0 ? 16 : request->max_new_tokens();
  seq->adapter = request->adapter();
  if (seq->prompt_tokens == 0) {
    stream->Finish(Err(grpc::StatusCode::INVALID_ARGUMENT, "the request has no prompt"));
    return stream.get();
  }
  if (request->has_prompt_logprobs() || request->return_prompt_text()) {
    // No model and no tokenizer here: made-up logprobs or text would pass
    // for real ones.
    stream->Finish(Err(grpc::StatusCode::UNIMPLEMENTED,
                       "the simulated worker cannot score or decode a prompt (prompt_logprobs, return_prompt_text)"));
    return stream.get();
  }
  if (seq->prompt_tokens + seq->max_tokens > options_.context_length) {
    stream->Finish(Err(grpc::StatusCode::INVALID_ARGUMENT,
                       absl::StrCat("prompt (", seq->prompt_tokens, " tokens) plus max_tokens (", seq->max_tokens,
                                    ") exceeds the model's context of ", options_.context_length, " tokens")));
    return stream.get();
  }
  absl::MutexLock lock(&mu_);
  if (!seq->adapter.empty() && !adapters_.contains(seq->adapter)) {
    stream->Finish(Err(grpc::StatusCode::NOT_FOUND, absl::StrCat("the model '", seq->adapter, "' does not exist")));
  } else if (stopping_ || draining_) {
    stream->Finish(Err(grpc::StatusCode::UNAVAILABLE, stopping_ ? "the worker is shutting down" : "the worker is draining"));
  } else if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    stream->Finish(Err(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       absl::StrCat("the worker's queue is full (", options_.max_waiting, " waiting requests)")));
  } else {
    if (!seq->adapter.empty()) {
      ++adapter_requests_;
      device_hits_ += adapters_[seq->adapter].on_device;
      RequestLoadLocked(seq->adapter, NowMs());  // overlaps the wait for a batch slot
    }
    stream->enqueued_ms = NowMs();
    stream->SendHeadersNow();
    waiting_.push_back(std::move(seq));
  }
  return stream.get();
}

void SimWorker::RequestLoadLocked(const std::string& name, double now) {
  Adapter& a = adapters_[name];
  if (a.on_device || a.ready_at_ms >= 0) return;
  a.ready_at_ms = now + (a.on_host ? options_.adapter_load_ms / 4 : options_.adapter_load_ms);
}

void SimWorker::AdvanceLoadsLocked(double now) {
  for (auto& [name, a] : adapters_) {
    if (a.ready_at_ms < 0 || a.ready_at_ms > now) continue;
    int on_device = 0;
    Adapter* victim = nullptr;
    for (auto& [n, b] : adapters_) {
      if (!b.on_device) continue;
      ++on_device;
      if (b.pins == 0 && (victim == nullptr || b.last_used < victim->last_used)) victim = &b;
    }
    if (on_device >= options_.max_loras) {
      if (victim == nullptr) continue;  // every slot pinned: the load waits
      victim->on_device = false;
      ++evictions_;
    }
    a.on_device = a.on_host = true;
    a.ready_at_ms = -1;
    a.last_used = ++tick_;
    ++loads_;
    // Host memory holds at most max_cpu_loras (device copies included).
    while (true) {
      int on_host = 0;
      Adapter* drop = nullptr;
      for (auto& [n, b] : adapters_) {
        if (!b.on_host) continue;
        ++on_host;
        if (!b.on_device && (drop == nullptr || b.last_used < drop->last_used)) drop = &b;
      }
      if (on_host <= options_.max_cpu_loras || drop == nullptr) break;
      drop->on_host = false;
    }
  }
}

void SimWorker::Loop() {
  while (true) {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      for (auto& s : running_) Finish(*s, Err(grpc::StatusCode::UNAVAILABLE, "the worker is shutting down"));
      for (auto& s : waiting_) Finish(*s, Err(grpc::StatusCode::UNAVAILABLE, "the worker is shutting down"));
      running_.clear();
      waiting_.clear();
      return;
    }
    const double now = NowMs();
    AdvanceLoadsLocked(now);
    int64_t prefill = 0;
    for (auto it = waiting_.begin(); it != waiting_.end() && static_cast<int>(running_.size()) < options_.max_num_seqs;) {
      Seq& s = **it;
      if (s.stream->cancelled.load()) {
        Finish(s, Err(grpc::StatusCode::CANCELLED, "cancelled while queued"));
        it = waiting_.erase(it);
        continue;
      }
      if (!s.adapter.empty()) {
        auto a = adapters_.find(s.adapter);
        if (a == adapters_.end()) {
          Finish(s, Err(grpc::StatusCode::NOT_FOUND, absl::StrCat("the adapter '", s.adapter, "' was unloaded")));
          it = waiting_.erase(it);
          continue;
        }
        if (!a->second.on_device) {
          RequestLoadLocked(s.adapter, now);
          ++it;
          continue;
        }
        ++a->second.pins;
        a->second.last_used = ++tick_;
      }
      s.stream->admitted_ms = now;
      prefill += s.prompt_tokens;
      running_.push_back(*it);
      it = waiting_.erase(it);
    }
    if (running_.empty()) {
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](SimWorker* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) {
                                 return w->stopping_ || !w->waiting_.empty();
                               },
                               this),
                           absl::Milliseconds(waiting_.empty() ? 100 : 2));
      continue;
    }
    const double step_ms = options_.step_ms + prefill * options_.prefill_us_per_token / 1000 +
                           static_cast<double>(running_.size()) * options_.decode_us_per_seq / 1000;
    mu_.Unlock();
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(step_ms));
    mu_.Lock();
    const double done = NowMs();
    for (size_t i = 0; i < running_.size();) {
      Seq& s = *running_[i];
      bool finished = false;
      if (s.stream->cancelled.load()) {
        Finish(s, Err(grpc::StatusCode::CANCELLED, "cancelled"));
        finished = true;
      } else {
        wv1::GenerateResponse r;
        if (!s.prefilled) {
          s.prefilled = true;
          r.set_queue_ns(static_cast<uint64_t>((s.stream->admitted_ms - s.stream->enqueued_ms) * 1e6));
          r.set_prefill_ns(static_cast<uint64_t>((done - s.stream->admitted_ms) * 1e6));
        }
        if (s.produced < s.max_tokens) {  // a prompt-only request generates nothing
          r.set_text(" tok");
          r.add_token_ids(1);
          ++s.produced;
        }
        s.stream->Write(std::move(r));
        if (s.produced >= s.max_tokens) {
          wv1::GenerateResponse last;
          last.set_finish_reason(wv1::FINISH_REASON_LENGTH);
          last.mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(s.prompt_tokens));
          last.mutable_usage()->set_completion_tokens(static_cast<uint32_t>(s.produced));
          s.stream->Write(std::move(last));
          Finish(s, grpc::Status::OK);
          finished = true;
        }
      }
      if (finished) {
        if (auto a = adapters_.find(s.adapter); !s.adapter.empty() && a != adapters_.end()) --a->second.pins;
        running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }
}

wv1::LoadReport SimWorker::Snapshot() const {
  wv1::LoadReport r;
  absl::MutexLock lock(&mu_);
  r.set_model_id(options_.model_id);
  r.set_running(static_cast<uint32_t>(running_.size()));
  r.set_waiting(static_cast<uint32_t>(waiting_.size()));
  int64_t tokens = 0;
  for (const auto& s : running_) tokens += s->prompt_tokens + s->produced;
  r.set_kv_blocks_used(static_cast<uint64_t>((tokens + 15) / 16));
  r.set_kv_blocks_total(static_cast<uint64_t>(options_.kv_tokens / 16));
  std::vector<std::string> device, host;
  for (const auto& [name, a] : adapters_) {
    if (a.on_device) {
      device.push_back(name);
    } else if (a.on_host) {
      host.push_back(name);
    }
  }
  std::sort(device.begin(), device.end());
  std::sort(host.begin(), host.end());
  for (auto& n : device) r.add_device_adapters(std::move(n));
  for (auto& n : host) r.add_host_adapters(std::move(n));
  r.set_max_num_seqs(static_cast<uint32_t>(options_.max_num_seqs));
  r.set_max_waiting(static_cast<uint32_t>(options_.max_waiting));
  r.set_max_loras(static_cast<uint32_t>(options_.max_loras));
  r.set_max_cpu_loras(static_cast<uint32_t>(options_.max_cpu_loras));
  return r;
}

grpc::ServerUnaryReactor* SimWorker::GetModelInfo(grpc::CallbackServerContext* context,
                                                  const wv1::GetModelInfoRequest*, wv1::ModelInfo* info) {
  info->set_model_id(options_.model_id);
  info->set_architecture("sim");
  info->set_context_length(options_.context_length);
  info->set_vocab_size(32000);
  info->set_created_unix_s(created_unix_s_);
  info->set_max_loras(static_cast<uint32_t>(options_.max_loras));
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::pair<std::string, const Adapter*>> all;
    for (const auto& [name, a] : adapters_) all.emplace_back(name, &a);
    std::sort(all.begin(), all.end());
    for (const auto& [name, a] : all) {
      wv1::AdapterInfo* out = info->add_adapters();
      out->set_name(name);
      out->set_tier(a->on_device ? wv1::ADAPTER_TIER_DEVICE
                    : a->on_host ? wv1::ADAPTER_TIER_HOST
                                 : wv1::ADAPTER_TIER_DISK);
    }
    info->set_adapter_loads(loads_);
    info->set_adapter_device_evictions(evictions_);
    info->set_adapter_requests(adapter_requests_);
    info->set_adapter_device_hits(device_hits_);
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SimWorker::Tokenize(grpc::CallbackServerContext* context,
                                              const wv1::TokenizeRequest* request, wv1::TokenizeResponse* response) {
  for (size_t i = 0; i < std::max<size_t>(1, request->text().size() / 4); ++i) response->add_ids(1);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SimWorker::LoadAdapter(grpc::CallbackServerContext* context,
                                                 const wv1::LoadAdapterRequest* request, wv1::LoadAdapterResponse*) {
  auto* reactor = context->DefaultReactor();
  absl::MutexLock lock(&mu_);
  if (!IsValidAdapterName(request->name())) {
    reactor->Finish(Err(grpc::StatusCode::INVALID_ARGUMENT, "invalid adapter name"));
  } else if (adapters_.contains(request->name())) {
    reactor->Finish(Err(grpc::StatusCode::ALREADY_EXISTS,
                        absl::StrCat("the adapter '", request->name(), "' is already loaded")));
  } else {
    adapters_[request->name()] = Adapter{};
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerUnaryReactor* SimWorker::UnloadAdapter(grpc::CallbackServerContext* context,
                                                   const wv1::UnloadAdapterRequest* request,
                                                   wv1::UnloadAdapterResponse*) {
  auto* reactor = context->DefaultReactor();
  absl::MutexLock lock(&mu_);
  auto it = adapters_.find(request->name());
  if (it == adapters_.end()) {
    reactor->Finish(Err(grpc::StatusCode::NOT_FOUND, absl::StrCat("the adapter '", request->name(), "' is not loaded")));
  } else {
    // Running sequences finish with it, as on the real worker; queued ones
    // get NOT_FOUND when their turn comes.
    adapters_.erase(it);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<wv1::LoadReport>* SimWorker::WatchLoad(grpc::CallbackServerContext*,
                                                                const wv1::WatchLoadRequest* request) {
  return reporter_->Watch(*request);
}

grpc::ServerUnaryReactor* SimWorker::PrefetchAdapter(grpc::CallbackServerContext* context,
                                                     const wv1::PrefetchAdapterRequest* request,
                                                     wv1::PrefetchAdapterResponse*) {
  auto* reactor = context->DefaultReactor();
  absl::MutexLock lock(&mu_);
  if (!adapters_.contains(request->name())) {
    reactor->Finish(Err(grpc::StatusCode::NOT_FOUND, absl::StrCat("the adapter '", request->name(), "' does not exist")));
  } else {
    RequestLoadLocked(request->name(), NowMs());
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

}  // namespace tessera
