#include "gateway/completion_call.h"

#include "common/grpc/status_conversion.h"
#include "common/status_fields.h"

#include <algorithm>
#include <cstdio>

#include <grpcpp/alarm.h>

#include "absl/strings/str_cat.h"
#include "gateway/gateway_metrics.h"
#include "gateway/openai/errors.h"

namespace tessera::gateway {
namespace {

namespace wv1 = tessera::worker::v1;

// One Generate stream of one attempt, as the call hears it. The stream
// keeps it (and through it the call and the worker) alive until its OnDone.
class ChoiceObserver final : public GenerateObserver {
 public:
  ChoiceObserver(std::shared_ptr<CompletionCall> call, int attempt, int choice, std::shared_ptr<Worker> worker)
      : call_(std::move(call)), attempt_(attempt), choice_(choice), worker_(std::move(worker)) {
    worker_->in_flight.fetch_add(1);
  }
  void OnAccepted() override { call_->OnAccepted(attempt_, choice_); }
  void OnResponse(const wv1::GenerateResponse& r) override { call_->OnResponse(attempt_, choice_, r); }
  void OnDone(const grpc::Status& s) override {
    worker_->in_flight.fetch_sub(1);
    call_->OnChoiceDone(attempt_, choice_, s);
  }

 private:
  std::shared_ptr<CompletionCall> call_;
  int attempt_;
  int choice_;
  std::shared_ptr<Worker> worker_;
};

// OpenAI's echo (text completions only): a choice's text starts with its
// prompt.
bool Echoes(const CompletionRequest& r) { return r.kind == CompletionRequest::Kind::kText && r.echo; }

// Echo with logprobs: the prompt's tokens lead the logprobs.
bool WantsPromptLogprobs(const CompletionRequest& r) { return Echoes(r) && r.logprobs; }

// A prompt given as token ids is echoed as the worker decodes it.
bool WantsPromptText(const CompletionRequest& r) { return Echoes(r) && r.prompts.empty(); }

TokenLogprobs FromWire(const wv1::TokenLogprob& lp) {
  TokenLogprobs t;
  t.token = lp.token();
  t.logprob = lp.logprob();
  for (const auto& top : lp.top_logprobs()) t.top.emplace_back(top.token(), top.logprob());
  return t;
}

bool Retryable(grpc::StatusCode code) {
  // The worker is unreachable, shutting down or crashed (UNAVAILABLE), or
  // its queue is full (RESOURCE_EXHAUSTED): another worker may well serve it.
  // gRPC also reports a stream its transport dropped, e.g. when the worker
  // process dies mid-call, as UNKNOWN "Stream removed" (grpc/grpc#34076);
  // the worker never sends UNKNOWN itself (kWorkerReplyOptions), so it is a
  // connection failure like UNAVAILABLE. Callers retry only before output.
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         code == grpc::StatusCode::UNKNOWN;
}

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
  if (r.kind == CompletionRequest::Kind::kText && r.max_tokens == 0) {
    // The echoed prompt alone. max_new_tokens 1 bounds a worker that
    // predates prompt_only (it would take 0 as "up to the context").
    w.set_prompt_only(true);
    w.set_max_new_tokens(1);
  } else {
    w.set_max_new_tokens(static_cast<uint32_t>(r.max_tokens));
  }
  if (WantsPromptLogprobs(r)) w.set_prompt_logprobs(static_cast<uint32_t>(r.top_logprobs));
  w.set_return_prompt_text(WantsPromptText(r));
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
  if (r.structured.kind != StructuredOutputSpec::Kind::kNone) {
    auto* so = w.mutable_structured_output();
    so->set_param(r.structured.param);
    switch (r.structured.kind) {
      case StructuredOutputSpec::Kind::kJsonSchema: so->set_json_schema(r.structured.text); break;
      case StructuredOutputSpec::Kind::kJsonObject: so->set_json_object(true); break;
      case StructuredOutputSpec::Kind::kRegex: so->set_regex(r.structured.text); break;
      case StructuredOutputSpec::Kind::kChoice:
        for (const std::string& c : r.structured.choices) so->mutable_choice()->add_choices(c);
        break;
      case StructuredOutputSpec::Kind::kNone: break;
    }
  }
  return w;
}

}  // namespace

struct CompletionCall::Attempt {
  int index = 0;
  std::shared_ptr<Worker> worker;
  std::string adapter;
  std::vector<std::shared_ptr<GenerateStream>> streams;  // one per choice, once launched
  int accepted = 0;   // choices whose stream the worker accepted
  int remaining = 0;  // streams not yet done
  bool failed = false;
  grpc::Alarm accept_alarm;
};

CompletionCall::~CompletionCall() = default;

std::shared_ptr<CompletionCall> CompletionCall::Start(CallRouter& pool, const CompletionRequest& request,
                                                      std::shared_ptr<CompletionSink> sink,
                                                      const CompletionOptions& options) {
  std::shared_ptr<CompletionCall> call(new CompletionCall());
  call->pool_ = &pool;
  call->request_ = request;
  call->options_ = options;
  call->deadline_ = std::chrono::system_clock::now() + options.timeout;
  if (options.client_deadline && *options.client_deadline < call->deadline_) call->deadline_ = *options.client_deadline;
  call->choices_ = static_cast<int>(request.prompt_count()) * request.n;
  call->sink_ = std::move(sink);
  call->start_ = std::chrono::steady_clock::now();
  pool.TrackCall(call);
  if (pool.metrics() != nullptr) pool.metrics()->RequestStarted();
  Attempt* first = nullptr;
  {
    absl::MutexLock lock(&call->mu_);
    call->prompt_tokens_per_prompt_.assign(request.prompt_count(), 0);
    call->choice_started_.assign(static_cast<size_t>(call->choices_), false);
    if (pool.Draining()) {
      call->FinishLocked(absl::UnavailableError("the gateway is shutting down"));
    } else {
      first = call->NextAttemptLocked(absl::OkStatus());
    }
  }
  if (first != nullptr) call->Launch(first);
  return call;
}

CompletionCall::Attempt* CompletionCall::NextAttemptLocked(const absl::Status& last_error) {
  auto route = pool_->Pick(request_.model, request_.adapter, tried_);
  if (!route.ok()) {
    // After a failed attempt, the worker's own error says more than "no
    // other worker".
    const absl::Status s = last_error.ok() ? route.status() : last_error;
    if (s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kResourceExhausted) {
      ShedLocked(s, s.code() == absl::StatusCode::kResourceExhausted ? "queue_full" : "unavailable");
    } else {
      FinishLocked(s);
    }
    return nullptr;
  }
  auto a = std::make_unique<Attempt>();
  a->index = static_cast<int>(attempts_.size());
  a->worker = route->worker;
  a->adapter = route->adapter;
  a->remaining = choices_;
  tried_.push_back(a->worker.get());
  served_model_ = request_.model;
  attempts_.push_back(std::move(a));
  return attempts_.back().get();
}

void CompletionCall::Launch(Attempt* a) {
  // `a` stays valid: attempts are never removed while the call lives.
  const int n = request_.n;
  std::vector<std::shared_ptr<GenerateStream>> streams;
  for (int c = 0; c < choices_; ++c) {
    streams.push_back(a->worker->connection->Generate(
        WireRequest(request_, a->adapter, static_cast<size_t>(c / n), c % n), deadline_,
        std::make_shared<ChoiceObserver>(shared_from_this(), a->index, c, a->worker)));
  }
  const auto accept_by = std::min(deadline_, std::chrono::system_clock::now() + options_.first_response_timeout);
  // Never cancelled: when it fires after the streams were accepted (or the
  // call ended) OnAcceptTimeout finds nothing to do; a call freed earlier
  // cancels it in the Alarm's destructor.
  a->accept_alarm.Set(accept_by, [weak = weak_from_this(), index = a->index](bool fired) {
    if (!fired) return;
    if (auto call = weak.lock()) call->OnAcceptTimeout(index);
  });
  absl::MutexLock lock(&mu_);
  a->streams = std::move(streams);
  // Cancel() may have run, or the attempt failed or the call ended (a
  // stream can finish before this line), before the streams were known.
  if (cancelled_ || a->failed || done_) {
    for (auto& stream : a->streams) stream->Cancel();
  }
}

void CompletionCall::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (auto& a : attempts_) {
    for (auto& stream : a->streams) stream->Cancel();
  }
}

void CompletionCall::Abort(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  FinishLocked(status);
  for (auto& a : attempts_) {
    for (auto& stream : a->streams) stream->Cancel();
  }
}

void CompletionCall::OnAccepted(int attempt, int) {
  absl::MutexLock lock(&mu_);
  Attempt& a = *attempts_[attempt];
  if (++a.accepted == choices_) pool_->ReportSuccess(*a.worker);
}

void CompletionCall::OnAcceptTimeout(int attempt) {
  Attempt* next = nullptr;
  {
    absl::MutexLock lock(&mu_);
    Attempt& a = *attempts_[attempt];
    if (done_ || a.failed || a.accepted == choices_) return;
    next = FailAttemptLocked(a, grpc::Status(grpc::StatusCode::UNAVAILABLE, "no response"), /*hung=*/true);
  }
  if (next != nullptr) Launch(next);
}

void CompletionCall::OnResponse(int attempt, int choice, const wv1::GenerateResponse& r) {
  absl::MutexLock lock(&mu_);
  if (done_ || attempts_[attempt]->failed) return;  // a superseded attempt
  const bool first_of_choice = !choice_started_[choice];
  choice_started_[choice] = true;
  // A worker that predates a field this request relies on ignores it: the
  // answer would lack the prompt or hold tokens nobody asked for. That is an
  // error, not a short or long answer.
  const char* ignored = nullptr;
  if (first_of_choice && WantsPromptLogprobs(request_) && r.prompt_logprobs_size() == 0) {
    ignored = "the prompt's logprobs (echo with logprobs)";
  } else if (first_of_choice && WantsPromptText(request_) && !r.has_prompt_text()) {
    ignored = "the prompt's text (echo of a token-id prompt)";
  } else if (request_.kind == CompletionRequest::Kind::kText && request_.max_tokens == 0 && r.token_ids_size() > 0) {
    ignored = "prompt_only (max_tokens 0): it generated tokens";
  }
  if (ignored != nullptr) {
    FinishLocked(absl::UnimplementedError(
        absl::StrCat("worker ", attempts_[attempt]->worker->address, " does not support ", ignored)));
    for (auto& stream : attempts_[attempt]->streams) stream->Cancel();
    return;
  }
  if (!first_output_sent_) {
    first_output_sent_ = true;
    first_output_at_ = std::chrono::steady_clock::now();
    sink_->OnFirstOutput();
  }
  if (first_of_choice && Echoes(request_)) {
    std::vector<TokenLogprobs> prompt;
    if (WantsPromptLogprobs(request_)) {
      prompt.reserve(static_cast<size_t>(r.prompt_logprobs_size()));
      for (const auto& lp : r.prompt_logprobs()) prompt.push_back(FromWire(lp));
    }
    sink_->OnEcho(choice, WantsPromptText(request_) ? r.prompt_text() : request_.prompts[choice / request_.n],
                  prompt);
  }
  if (!r.text().empty() || r.logprobs_size() > 0) {
    std::vector<TokenLogprobs> lps;
    for (const auto& lp : r.logprobs()) lps.push_back(FromWire(lp));
    sink_->OnDelta(choice, r.text(), lps);
  }
  if (r.finish_reason() != wv1::FINISH_REASON_UNSPECIFIED) {
    // The n samples of a prompt share it: OpenAI counts its tokens once.
    completion_tokens_ += static_cast<int>(r.usage().completion_tokens());
    prompt_tokens_per_prompt_[choice / request_.n] = static_cast<int>(r.usage().prompt_tokens());
    sink_->OnChoiceFinished(choice, r.finish_reason() == wv1::FINISH_REASON_STOP ? "stop" : "length");
    // The finish response is the worker's last word on a choice: once every
    // choice has one, the call is complete without waiting for the streams'
    // trailing status.
    if (++finished_choices_ == choices_) FinishLocked(absl::OkStatus());
  }
}

void CompletionCall::OnChoiceDone(int attempt, int, const grpc::Status& status) {
  Attempt* next = nullptr;
  {
    absl::MutexLock lock(&mu_);
    Attempt& a = *attempts_[attempt];
    --a.remaining;
    if (done_ || a.failed) return;  // settled, or superseded by a retry
    if (!status.ok()) {
      next = FailAttemptLocked(a, status, /*hung=*/false);
    } else if (a.remaining == 0) {
      FinishLocked(absl::InternalError(
          absl::StrCat("worker ", a.worker->address, " ended a generation without finishing it")));
    }
  }
  if (next != nullptr) Launch(next);
}

CompletionCall::Attempt* CompletionCall::FailAttemptLocked(Attempt& a, const grpc::Status& status, bool hung) {
  a.failed = true;
  for (auto& stream : a.streams) stream->Cancel();  // the other choices are of no use now
  absl::Status error = FromGrpcStatus(status);
  if (hung) {
    pool_->ReportHung(*a.worker, options_.first_response_timeout);
    error = absl::UnavailableError(absl::StrCat("worker ", a.worker->address, " did not accept the request within ",
                                                options_.first_response_timeout.count(), " ms"));
  } else {
    pool_->ReportFailure(*a.worker, status);
  }
  const bool can_retry = (hung || Retryable(status.error_code())) && !cancelled_ &&
                         static_cast<int>(attempts_.size()) < options_.max_attempts &&
                         std::chrono::system_clock::now() < deadline_;
  // The sink refuses once output reached the client: the error then travels
  // in-band.
  if (!can_retry) {
    const bool overload = !hung && (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                                    status.error_code() == grpc::StatusCode::UNAVAILABLE);
    if (overload && !first_output_sent_) {
      ShedLocked(error, status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ? "queue_full" : "unavailable");
    } else {
      FinishLocked(error);
    }
    return nullptr;
  }
  if (!sink_->Restart()) {
    FinishLocked(error);
    return nullptr;
  }
  const std::string_view reason = hung ? "hung"
                                  : status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ? "queue_full"
                                                                                                : "unavailable";
  // A retry is only a retry if another worker can take it: with none left
  // the refusal goes to the client (shed), never counted as a retry.
  if (!pool_->CanRoute(request_.model, request_.adapter, tried_).ok()) {
    ShedLocked(error, reason == "hung" ? "unavailable" : reason);
    return nullptr;
  }
  if (!holds_retry_) {
    if (!pool_->TryStartRetry()) {
      if (pool_->metrics() != nullptr) pool_->metrics()->RetryBudgetExhausted();
      ShedLocked(absl::Status(error.code(), absl::StrCat(error.message(), " (not retried: retry budget exhausted)")),
                 "retry_budget");
      return nullptr;
    }
    holds_retry_ = true;
  }
  first_output_sent_ = false;
  first_output_at_.reset();
  finished_choices_ = 0;
  choice_started_.assign(choice_started_.size(), false);
  completion_tokens_ = 0;
  prompt_tokens_per_prompt_.assign(prompt_tokens_per_prompt_.size(), 0);
  Attempt* next = NextAttemptLocked(error);
  if (next != nullptr) {
    std::fprintf(stderr, "tessera-gateway: retrying a request that failed on %s before any output, on %s: %s\n",
                 a.worker->address.c_str(), next->worker->address.c_str(), std::string(error.message()).c_str());
    if (pool_->metrics() != nullptr) pool_->metrics()->Retried(reason);
  }
  return next;
}

void CompletionCall::ShedLocked(const absl::Status& s, std::string_view reason) {
  if (pool_->metrics() != nullptr && !done_) pool_->metrics()->Shed(reason);
  FinishLocked(s);
}

void CompletionCall::FinishLocked(const absl::Status& s) {
  if (done_) return;
  done_ = true;
  if (holds_retry_) pool_->EndRetry();
  pool_->UntrackCall(this);
  int prompt_tokens = 0;
  for (int t : prompt_tokens_per_prompt_) prompt_tokens += t;
  if (GatewayMetrics* m = pool_->metrics()) {
    GatewayMetrics::Finished f;
    f.model = served_model_;
    f.adapter = attempts_.empty() ? "" : attempts_.back()->adapter;
    f.http_status = s.ok() ? 200 : MapStatus(s.code()).http_status;
    const auto now = std::chrono::steady_clock::now();
    f.e2e_s = std::chrono::duration<double>(now - start_).count();
    if (first_output_at_) f.ttft_s = std::chrono::duration<double>(*first_output_at_ - start_).count();
    f.prompt_tokens = prompt_tokens;
    f.completion_tokens = completion_tokens_;
    m->RequestFinished(f);
  }
  sink_->OnDone(s, prompt_tokens, completion_tokens_);
}

}  // namespace tessera::gateway
