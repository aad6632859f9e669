#include "gateway/completion_call.h"

#include "absl/strings/str_cat.h"

namespace tessera::gateway {
namespace {

namespace wv1 = tessera::worker::v1;

// One Generate stream. Deletes itself when gRPC is done with it; the call
// it reports to stays alive through the shared_ptr it holds.
class ChoiceStream final : public grpc::ClientReadReactor<wv1::GenerateResponse> {
 public:
  ChoiceStream(std::shared_ptr<CompletionCall> call, int choice, Worker* worker, grpc::ClientContext* ctx,
               wv1::GenerateRequest request)
      : call_(std::move(call)), choice_(choice), worker_(worker), request_(std::move(request)) {
    worker_->in_flight.fetch_add(1);
    worker_->stub->async()->Generate(ctx, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    call_->OnResponse(choice_, response_);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& s) override {
    worker_->in_flight.fetch_sub(1);
    call_->OnChoiceDone(choice_, s);
    delete this;
  }

 private:
  std::shared_ptr<CompletionCall> call_;
  int choice_;
  Worker* worker_;
  wv1::GenerateRequest request_;
  wv1::GenerateResponse response_;
};

wv1::GenerateRequest WireRequest(const CompletionRequest& r, const std::string& adapter, size_t prompt_index,
                                 int sample_index) {
  wv1::GenerateRequest w;
  w.set_adapter(adapter);
  if (r.kind == CompletionRequest::Kind::kChat) {
    auto* chat = w.mutable_chat();
    chat->set_add_generation_prompt(true);
    for (const ChatTurn& t : r.messages) {
      auto* m = chat->add_messages();
      m->set_role(t.role);
      m->set_content(t.content);
    }
  } else if (!r.prompts.empty()) {
    w.set_text(r.prompts[prompt_index]);
  } else {
    for (int32_t id : r.prompt_ids[prompt_index]) w.mutable_token_ids()->add_ids(id);
  }
  w.set_max_new_tokens(static_cast<uint32_t>(r.max_tokens));
  auto* s = w.mutable_sampling();
  s->set_temperature(r.temperature);
  s->set_top_p(r.top_p);
  s->set_presence_penalty(r.presence_penalty);
  s->set_frequency_penalty(r.frequency_penalty);
  // n samples with one seed must still differ, and stay reproducible.
  if (r.seed) s->set_seed(static_cast<uint64_t>(*r.seed) + static_cast<uint64_t>(sample_index));
  for (const auto& [id, bias] : r.logit_bias) (*s->mutable_logit_bias())[id] = bias;
  s->set_logprobs(r.logprobs);
  s->set_top_logprobs(static_cast<uint32_t>(r.top_logprobs));
  for (const std::string& stop : r.stop) w.add_stop(stop);
  w.set_ignore_eos(r.ignore_eos);
  return w;
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(static_cast<int>(s.error_code())), s.error_message());
}

std::shared_ptr<CompletionCall> CompletionCall::Start(WorkerPool& pool, const CompletionRequest& request,
                                                      std::shared_ptr<CompletionSink> sink,
                                                      const CompletionOptions& options) {
  std::shared_ptr<CompletionCall> call(new CompletionCall());
  call->sink_ = std::move(sink);
  auto route = pool.Pick(request.model, request.adapter);
  if (!route.ok()) {
    absl::MutexLock lock(&call->mu_);
    call->FinishLocked(route.status());
    return call;
  }
  call->worker_ = route->worker;
  const size_t prompts = request.prompt_count();
  const int choices = static_cast<int>(prompts) * request.n;
  {
    absl::MutexLock lock(&call->mu_);
    call->remaining_ = choices;
    call->n_ = request.n;
    call->prompt_tokens_per_prompt_.assign(prompts, 0);
  }
  const auto deadline = std::chrono::system_clock::now() + options.timeout;
  for (int c = 0; c < choices; ++c) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(deadline);
    call->contexts_.push_back(std::move(ctx));
  }
  for (int c = 0; c < choices; ++c) {
    new ChoiceStream(call, c, call->worker_, call->contexts_[c].get(),
                     WireRequest(request, route->adapter, static_cast<size_t>(c / request.n), c % request.n));
  }
  return call;
}

void CompletionCall::Cancel() {
  for (auto& ctx : contexts_) ctx->TryCancel();
}

void CompletionCall::OnResponse(int choice, const wv1::GenerateResponse& r) {
  absl::MutexLock lock(&mu_);
  if (done_) return;
  if (!first_output_sent_) {
    first_output_sent_ = true;
    sink_->OnFirstOutput();
  }
  if (!r.text().empty() || r.logprobs_size() > 0) {
    std::vector<TokenLogprobs> lps;
    for (const auto& lp : r.logprobs()) {
      TokenLogprobs t;
      t.token = lp.token();
      t.logprob = lp.logprob();
      for (const auto& top : lp.top_logprobs()) t.top.emplace_back(top.token(), top.logprob());
      lps.push_back(std::move(t));
    }
    sink_->OnDelta(choice, r.text(), lps);
  }
  if (r.finish_reason() != wv1::FINISH_REASON_UNSPECIFIED) {
    // The n samples of a prompt share it: OpenAI counts its tokens once.
    completion_tokens_ += static_cast<int>(r.usage().completion_tokens());
    prompt_tokens_per_prompt_[choice / n_] = static_cast<int>(r.usage().prompt_tokens());
    sink_->OnChoiceFinished(choice, r.finish_reason() == wv1::FINISH_REASON_STOP ? "stop" : "length");
    // The finish response is the worker's last word on a choice: once every
    // choice has one, the call is complete without waiting for the streams'
    // trailing status.
    if (++finished_choices_ == static_cast<int>(contexts_.size())) FinishLocked(absl::OkStatus());
  }
}

void CompletionCall::OnChoiceDone(int choice, const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  --remaining_;
  if (!status.ok() && error_.ok()) {
    error_ = FromGrpc(status);
    // One choice failed: the others are of no use to the client.
    for (auto& ctx : contexts_) ctx->TryCancel();
  }
  if (remaining_ == 0) FinishLocked(error_);
}

void CompletionCall::FinishLocked(const absl::Status& s) {
  if (done_) return;
  done_ = true;
  int prompt_tokens = 0;
  for (int t : prompt_tokens_per_prompt_) prompt_tokens += t;
  sink_->OnDone(s, prompt_tokens, completion_tokens_);
}

}  // namespace tessera::gateway
