#include "worker/service/worker_service.h"

#include "absl/strings/match.h"
#include "common/status_fields.h"

#include <chrono>
#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/grpc/queued_server_writer.h"
#include "common/grpc/status_conversion.h"
#include "common/status_macros.h"

namespace tessera {

namespace wv1 = tessera::worker::v1;

// A Generate call's stream: the engine job writes to it; a client that
// goes away cancels the job.
class GenerateStream final : public QueuedServerWriter<wv1::GenerateResponse>, public JobSink {
 public:
  static std::shared_ptr<GenerateStream> Create(WorkerService* service) {
    std::shared_ptr<GenerateStream> s(new GenerateStream());
    s->service_ = service;
    s->Adopt(s);
    return s;
  }

  void OnDone() override {
    service_->StreamDone(this);
    QueuedServerWriter::OnDone();  // may release the last reference
  }

  // Ends the stream now with `status` (after what it already queued) and
  // stops its job.
  void Abort(const grpc::Status& status) {
    {
      absl::MutexLock lock(&job_mu_);
      if (job_) job_->cancelled.store(true);
    }
    Finish(status);
  }

  void set_job(std::shared_ptr<EngineJob> job) {
    absl::MutexLock lock(&job_mu_);
    job_ = std::move(job);
  }

  // Before the job is submitted (Submit orders it before the engine thread).
  void Configure(const Tokenizer* tokenizer, bool want_logprobs, uint32_t prompt_tokens,
                 std::optional<std::string> prompt_text) {
    tokenizer_ = tokenizer;
    want_logprobs_ = want_logprobs;
    prompt_tokens_ = prompt_tokens;
    prompt_text_ = std::move(prompt_text);
  }

  // JobSink (engine thread).
  void OnStarted(uint64_t queue_ns, uint64_t prefill_ns) override {
    queue_ns_ = queue_ns;
    prefill_ns_ = prefill_ns;
    have_first_timing_ = true;
  }

  // Held until the next response goes out (the first token's, or the last
  // one when nothing is generated), so it rides with the first timing.
  void OnPromptLogprobs(std::vector<SampledToken> prompt) override {
    prompt_logprobs_.Clear();
    for (size_t p = 0; p < prompt.size(); ++p) {
      // Entry 0 has no logprob: only its token goes out.
      FillLogprob(p == 0 ? SampledToken{prompt[p].id, 0.f, {}} : prompt[p], prompt_logprobs_.Add());
    }
  }

  bool OnEvent(const StreamEvent& e) override {
    wv1::GenerateResponse r;
    AddFirstResponseParts(r);
    r.set_text(std::string(e.text));
    if (e.token != nullptr) {
      r.add_token_ids(e.token->id);
      if (want_logprobs_) FillLogprob(*e.token, r.add_logprobs());
    }
    return Write(std::move(r));
  }

  void OnFinished(const absl::StatusOr<GenerateResult>& result) override {
    if (!result.ok()) return Finish(ToGrpcStatus(result.status(), kWorkerReplyOptions));
    if (result->finish == FinishReason::kCancelled) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    wv1::GenerateResponse last;
    AddFirstResponseParts(last);
    last.set_finish_reason(result->finish == FinishReason::kStop ? wv1::FINISH_REASON_STOP
                                                                 : wv1::FINISH_REASON_LENGTH);
    last.mutable_usage()->set_prompt_tokens(prompt_tokens_);
    last.mutable_usage()->set_completion_tokens(static_cast<uint32_t>(result->tokens.size()));
    Write(std::move(last));
    Finish(grpc::Status::OK);
  }

 private:
  GenerateStream() = default;

  void OnClientGone() override {
    absl::MutexLock lock(&job_mu_);
    if (job_) job_->cancelled.store(true);
  }

  void FillLogprob(const SampledToken& t, wv1::TokenLogprob* lp) const {
    lp->set_token_id(t.id);
    lp->set_token(std::string(tokenizer_->TokenBytes(t.id)));
    lp->set_logprob(t.logprob);
    for (const auto& [id, logprob] : t.top) {
      wv1::TopLogprob* top = lp->add_top_logprobs();
      top->set_token_id(id);
      top->set_token(std::string(tokenizer_->TokenBytes(id)));
      top->set_logprob(logprob);
    }
  }

  // Timing, prompt logprobs and prompt text go out once, on the first
  // response.
  void AddFirstResponseParts(wv1::GenerateResponse& r) {
    if (have_first_timing_) {
      r.set_queue_ns(queue_ns_);
      r.set_prefill_ns(prefill_ns_);
      have_first_timing_ = false;
    }
    if (!prompt_logprobs_.empty()) r.mutable_prompt_logprobs()->Swap(&prompt_logprobs_);
    if (prompt_text_.has_value()) {
      r.set_prompt_text(std::move(*prompt_text_));
      prompt_text_.reset();
    }
  }

  WorkerService* service_ = nullptr;
  absl::Mutex job_mu_;
  std::shared_ptr<EngineJob> job_ ABSL_GUARDED_BY(job_mu_);
  // Engine-thread state.
  const Tokenizer* tokenizer_ = nullptr;
  bool want_logprobs_ = false;
  uint32_t prompt_tokens_ = 0;
  uint64_t queue_ns_ = 0, prefill_ns_ = 0;
  bool have_first_timing_ = false;
  google::protobuf::RepeatedPtrField<wv1::TokenLogprob> prompt_logprobs_;
  std::optional<std::string> prompt_text_;  // GenerateRequest.return_prompt_text
};

namespace {

absl::Status Invalid(std::string_view field, std::string_view bound, double value) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), " must be ", std::string(bound), "; got ", value));
}

}  // namespace


absl::StatusOr<GenerateRequest> ToEngineRequest(const ModelBundle& bundle, const wv1::GenerateRequest& wire) {
  GenerateRequest req;
  const Tokenizer& tok = *bundle.tokenizer;
  switch (wire.prompt_case()) {
    case wv1::GenerateRequest::kText:
      req.prompt = tok.Encode(wire.text(), {.add_special = true, .parse_special = false});
      break;
    case wv1::GenerateRequest::kChat: {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      for (const auto& m : wire.chat().messages()) messages.push_back({{"role", m.role()}, {"content", m.content()}});
      TESSERA_ASSIGN_OR_RETURN(req.prompt, bundle.EncodeChat(messages, wire.chat().add_generation_prompt()));
      break;
    }
    case wv1::GenerateRequest::kTokenIds:
      for (int32_t id : wire.token_ids().ids()) {
        if (id < 0 || id >= tok.vocab_size()) {
          return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ",
                                                         tok.vocab_size(), ")"));
        }
        req.prompt.push_back(id);
      }
      break;
    default:
      return absl::InvalidArgumentError("the request has no prompt");
  }
  if (req.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  const int64_t ctx = bundle.model->config().n_ctx_train;
  const int64_t prompt = static_cast<int64_t>(req.prompt.size());
  // OpenAI's shape for a context overflow: the parameter and this code.
  const std::string_view prompt_param = wire.prompt_case() == wv1::GenerateRequest::kChat ? "messages" : "prompt";
  if (prompt >= ctx) {
    return WithCode(WithParam(absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt,
                                                                      " tokens; the model's context is ", ctx, " tokens")),
                              prompt_param),
                    "context_length_exceeded");
  }
  // prompt_only: nothing is generated, whatever max_new_tokens says.
  const int64_t max_new = wire.prompt_only()              ? 0
                          : wire.max_new_tokens() == 0 ? ctx - prompt
                                                       : wire.max_new_tokens();
  if (prompt + max_new > ctx) {
    return WithCode(WithParam(absl::InvalidArgumentError(absl::StrCat("prompt (", prompt, " tokens) plus max_tokens (",
                                                                      max_new, ") exceeds the model's context of ",
                                                                      ctx, " tokens")),
                              prompt_param),
                    "context_length_exceeded");
  }
  req.max_tokens = static_cast<int>(max_new);
  const wv1::SamplingParams& s = wire.sampling();
  SamplingParams& p = req.sampling;
  p.temperature = s.temperature();
  p.top_p = s.top_p() == 0.f ? 1.f : s.top_p();
  p.top_k = static_cast<int>(std::min<uint32_t>(s.top_k(), 1u << 20));
  p.min_p = s.min_p();
  p.presence_penalty = s.presence_penalty();
  p.frequency_penalty = s.frequency_penalty();
  p.repetition_penalty = s.repetition_penalty() == 0.f ? 1.f : s.repetition_penalty();
  if (s.has_seed()) p.seed = s.seed();
  for (const auto& [id, bias] : s.logit_bias()) p.logit_bias.emplace_back(id, bias);
  p.logprobs = s.logprobs();
  if (s.top_logprobs() > 20) return Invalid("top_logprobs", "in [0, 20]", s.top_logprobs());
  p.top_logprobs = static_cast<int>(s.top_logprobs());
  if (wire.has_prompt_logprobs()) {
    if (wire.prompt_logprobs() > 20) return Invalid("prompt_logprobs", "in [0, 20]", wire.prompt_logprobs());
    req.prompt_logprobs = static_cast<int>(wire.prompt_logprobs());
  }
  if (absl::Status v = p.Validate(tok.vocab_size()); !v.ok()) {
    // Name the parameter where the message does (out-of-vocabulary bias).
    return absl::StrContains(v.message(), "logit_bias") ? WithParam(v, "logit_bias") : v;
  }
  if (wire.stop_size() > 16) return Invalid("stop", "at most 16 strings; count", wire.stop_size());
  for (const std::string& stop : wire.stop()) {
    if (stop.size() > 1024) return Invalid("each stop string", "at most 1024 bytes; length", stop.size());
    req.stop.push_back(stop);
  }
  req.ignore_eos = wire.ignore_eos();
  return req;
}

std::shared_ptr<const structured::TokenIndex> MakeTokenIndex(const Tokenizer& tokenizer) {
  std::vector<std::string> pieces(tokenizer.vocab_size());
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (tokenizer.token_type(id) != TokenType::kControl) pieces[id] = std::string(tokenizer.TokenBytes(id));
  }
  const std::span<const int32_t> eog = tokenizer.end_of_generation_ids();
  return std::make_shared<const structured::TokenIndex>(std::move(pieces), std::vector<int32_t>(eog.begin(), eog.end()));
}

absl::StatusOr<std::shared_ptr<const structured::Constraint>> CompileStructuredOutput(
    structured::ConstraintCache& cache, const wv1::GenerateRequest& wire) {
  if (!wire.has_structured_output()) return nullptr;
  const wv1::StructuredOutput& so = wire.structured_output();
  const std::string param = so.param().empty() ? "structured_output" : so.param();
  if (wire.ignore_eos()) {
    return WithParam(absl::InvalidArgumentError("ignore_eos cannot be combined with structured output"), "ignore_eos");
  }
  structured::ConstraintSpec spec;
  switch (so.kind_case()) {
    case wv1::StructuredOutput::kJsonSchema:
      spec.kind = structured::ConstraintSpec::Kind::kJsonSchema;
      spec.text = so.json_schema();
      break;
    case wv1::StructuredOutput::kJsonObject:
      spec.kind = structured::ConstraintSpec::Kind::kJsonObject;
      break;
    case wv1::StructuredOutput::kRegex:
      spec.kind = structured::ConstraintSpec::Kind::kRegex;
      spec.text = so.regex();
      break;
    case wv1::StructuredOutput::kChoice:
      spec.kind = structured::ConstraintSpec::Kind::kChoice;
      spec.choices.assign(so.choice().choices().begin(), so.choice().choices().end());
      break;
    default:
      return WithParam(absl::InvalidArgumentError("structured_output names no constraint"), param);
  }
  auto c = cache.Get(spec);
  if (!c.ok()) {
    return WithParam(absl::Status(c.status().code(), absl::StrCat("'", param, "': ", c.status().message())), param);
  }
  return *c;
}

WorkerService::WorkerService(ModelBundle& bundle, Engine& engine, AdapterManager& adapters,
                             WorkerServiceOptions options)
    : bundle_(bundle),
      engine_(engine),
      adapters_(adapters),
      options_(std::move(options)),
      created_unix_s_(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
              .count())),
      constraints_(std::make_unique<structured::ConstraintCache>(MakeTokenIndex(*bundle.tokenizer))),
      reporter_(std::make_unique<LoadReporter>([this] { return Snapshot(); })) {
  if (options_.on_constraint_compiled) constraints_->set_compile_observer(options_.on_constraint_compiled);
}

wv1::LoadReport WorkerService::Snapshot() const {
  wv1::LoadReport r;
  const EngineStats st = engine_.stats();
  r.set_model_id(options_.model_id);
  r.set_running(static_cast<uint32_t>(st.running));
  r.set_waiting(static_cast<uint32_t>(st.waiting));
  r.set_kv_blocks_used(static_cast<uint64_t>(st.kv_blocks_used));
  r.set_kv_blocks_total(static_cast<uint64_t>(st.kv_blocks_total));
  r.set_prefix_cache_hit_rate(st.prefix_query_tokens == 0 ? 0.0
                                                          : static_cast<double>(st.prefix_hit_tokens) /
                                                                static_cast<double>(st.prefix_query_tokens));
  std::vector<std::string> device, host;
  adapters_.Residency(&device, &host);
  for (auto& n : device) r.add_device_adapters(std::move(n));
  for (auto& n : host) r.add_host_adapters(std::move(n));
  r.set_max_num_seqs(static_cast<uint32_t>(engine_.options().scheduler.max_num_seqs));
  r.set_max_waiting(static_cast<uint32_t>(engine_.options().max_waiting));
  r.set_max_loras(static_cast<uint32_t>(adapters_.options().max_loras));
  r.set_max_cpu_loras(static_cast<uint32_t>(adapters_.options().max_cpu_loras));
  r.set_tensor_parallel_size(static_cast<uint32_t>(engine_.tensor_parallel_size()));
  return r;
}

grpc::ServerWriteReactor<wv1::LoadReport>* WorkerService::WatchLoad(grpc::CallbackServerContext*,
                                                                    const wv1::WatchLoadRequest* request) {
  return reporter_->Watch(*request);
}

grpc::ServerUnaryReactor* WorkerService::PrefetchAdapter(grpc::CallbackServerContext* context,
                                                         const wv1::PrefetchAdapterRequest* request,
                                                         wv1::PrefetchAdapterResponse*) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(adapters_.Prefetch(request->name()), kWorkerReplyOptions));
  return reactor;
}

grpc::ServerWriteReactor<wv1::GenerateResponse>* WorkerService::Generate(grpc::CallbackServerContext* context,
                                                                         const wv1::GenerateRequest* request) {
  std::shared_ptr<GenerateStream> stream = GenerateStream::Create(this);
  {
    absl::MutexLock lock(&streams_mu_);
    streams_[stream.get()] = stream;
  }
  if (draining_.load()) {
    stream->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is draining"));
    return stream.get();
  }
  auto req = ToEngineRequest(bundle_, *request);
  if (!req.ok()) {
    stream->Finish(ToGrpcStatus(req.status(), kWorkerReplyOptions));
    return stream.get();
  }
  if (absl::Status fits = engine_.CanEverFit(static_cast<int64_t>(req->prompt.size()), req->max_tokens); !fits.ok()) {
    stream->Finish(ToGrpcStatus(fits, kWorkerReplyOptions));
    return stream.get();
  }
  // Structured output compiles here, on this gRPC thread, so a slow spec
  // never holds up the engine's steps (bounded by the compile deadline).
  auto constraint = CompileStructuredOutput(*constraints_, *request);
  if (!constraint.ok()) {
    stream->Finish(ToGrpcStatus(constraint.status(), kWorkerReplyOptions));
    return stream.get();
  }
  req->constraint = std::move(*constraint);
  auto job = std::make_shared<EngineJob>();
  if (!request->adapter().empty()) {
    auto id = adapters_.Resolve(request->adapter());
    if (!id.ok()) {
      stream->Finish(ToGrpcStatus(id.status(), kWorkerReplyOptions));
      return stream.get();
    }
    adapters_.NoteRequest(*id);
    job->adapter = *id;
    job->prefix_salt = *id;  // adapters never share KV blocks with each other or the base
  }
  std::optional<std::string> prompt_text;
  if (request->return_prompt_text()) prompt_text = bundle_.tokenizer->Decode(req->prompt);
  if (req->max_tokens == 0 && !req->prompt_logprobs.has_value()) {
    // Nothing to compute: the prompt (its length, and its text if asked) is
    // all the answer holds, so the engine never sees it.
    wv1::GenerateResponse last;
    if (prompt_text.has_value()) last.set_prompt_text(std::move(*prompt_text));
    last.set_finish_reason(wv1::FINISH_REASON_LENGTH);
    last.mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(req->prompt.size()));
    stream->Write(std::move(last));
    stream->Finish(grpc::Status::OK);
    return stream.get();
  }
  stream->Configure(bundle_.tokenizer.get(), req->sampling.logprobs || req->sampling.top_logprobs > 0,
                    static_cast<uint32_t>(req->prompt.size()), std::move(prompt_text));
  job->request = std::move(*req);
  job->sink = stream;
  stream->set_job(job);
  absl::Status s = engine_.Submit(job);
  if (!s.ok()) {
    stream->Finish(ToGrpcStatus(s, kWorkerReplyOptions));
  } else {
    stream->SendHeadersNow();  // accepted: lets the gateway tell a queued request from a hung worker
  }
  return stream.get();
}

void WorkerService::StreamDone(const GenerateStream* stream) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(stream);
}

int WorkerService::ActiveGenerations() const {
  absl::MutexLock lock(&streams_mu_);
  return static_cast<int>(streams_.size());
}

void WorkerService::AbortGenerations(const grpc::Status& status) {
  std::vector<std::shared_ptr<GenerateStream>> live;
  {
    absl::MutexLock lock(&streams_mu_);
    for (auto& [raw, weak] : streams_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->Abort(status);
}

grpc::ServerUnaryReactor* WorkerService::GetModelInfo(grpc::CallbackServerContext* context,
                                                      const wv1::GetModelInfoRequest*, wv1::ModelInfo* info) {
  const LlamaConfig& c = bundle_.model->config();
  info->set_model_id(options_.model_id);
  info->set_architecture(c.architecture);
  info->set_context_length(static_cast<uint32_t>(c.n_ctx_train));
  info->set_vocab_size(static_cast<uint32_t>(c.n_vocab));
  info->set_has_chat_template(bundle_.chat_template != nullptr);
  if (bundle_.checkpoint != nullptr) {
    const CheckpointInfo& ci = bundle_.checkpoint->info();
    info->set_checkpoint_format(ci.format);
    info->set_weight_type(ci.weight_type);
    info->set_quantization(ci.quantization);
    info->set_bits(static_cast<uint32_t>(ci.bits));
  }
  info->set_created_unix_s(created_unix_s_);
  info->set_max_loras(static_cast<uint32_t>(adapters_.options().max_loras));
  const AdapterStats as = adapters_.stats();
  info->set_adapter_loads(as.loads);
  info->set_adapter_device_evictions(as.device_evictions);
  info->set_adapter_last_load_s(as.last_load_seconds);
  info->set_adapter_requests(as.requests);
  info->set_adapter_device_hits(as.device_hits);
  for (const AdapterInfo& a : adapters_.List()) {
    wv1::AdapterInfo* out = info->add_adapters();
    out->set_name(a.name);
    out->set_tier(a.tier == AdapterTier::kDevice ? wv1::ADAPTER_TIER_DEVICE
                  : a.tier == AdapterTier::kHost ? wv1::ADAPTER_TIER_HOST
                                                 : wv1::ADAPTER_TIER_DISK);
    out->set_rank(static_cast<uint32_t>(a.rank));
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::Tokenize(grpc::CallbackServerContext* context,
                                                  const wv1::TokenizeRequest* request, wv1::TokenizeResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (request->text().size() > (16u << 20)) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text longer than 16 MiB"));
    return reactor;
  }
  for (int32_t id : bundle_.tokenizer->Encode(request->text(), {})) response->add_ids(id);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

// Adapter administration reads and validates files on the calling gRPC
// thread, never on the engine thread.
grpc::ServerUnaryReactor* WorkerService::LoadAdapter(grpc::CallbackServerContext* context,
                                                     const wv1::LoadAdapterRequest* request,
                                                     wv1::LoadAdapterResponse*) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(adapters_.Load(request->name(), request->path()), kWorkerReplyOptions));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::UnloadAdapter(grpc::CallbackServerContext* context,
                                                       const wv1::UnloadAdapterRequest* request,
                                                       wv1::UnloadAdapterResponse*) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(adapters_.Unload(request->name()), kWorkerReplyOptions));
  return reactor;
}

}  // namespace tessera
