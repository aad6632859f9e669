#include "gateway/grpc_frontend.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc/queued_server_writer.h"
#include "common/grpc/status_conversion.h"
#include "common/status_macros.h"
#include "gateway/completion_call.h"
#include "gateway/gateway_metrics.h"
#include "gateway/openai/errors.h"
#include "gateway/openai/renderer.h"

namespace tessera::gateway {
namespace {

namespace av1 = tessera::api::v1;
using Json = nlohmann::json;

// The request message as the REST API's JSON body.
absl::StatusOr<std::string> RequestJson(const google::protobuf::Message& m, bool stream) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  auto s = google::protobuf::util::MessageToJsonString(m, &json, opts);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("cannot convert the request: ", s.ToString()));
  Json j = Json::parse(json, nullptr, false);
  if (j.is_discarded()) return absl::InternalError("request conversion produced invalid JSON");
  // Proto JSON writes int64 as strings; the REST API takes numbers.
  if (j.contains("seed") && j["seed"].is_string()) j["seed"] = std::stoll(j["seed"].get<std::string>());
  if (stream) j["stream"] = true;
  return j.dump();
}

// Proto repeated fields hold no nulls. A text completion's echoed first
// prompt token has a null logprob and null alternatives (REST); here it is
// NaN and an empty Struct (api/v1/completions.proto).
void NullsForProto(Json& j) {
  if (!j.contains("choices") || !j["choices"].is_array()) return;
  for (Json& c : j["choices"]) {
    if (!c.is_object() || !c.contains("logprobs") || !c["logprobs"].is_object()) continue;
    Json& lp = c["logprobs"];
    if (lp.contains("token_logprobs") && lp["token_logprobs"].is_array()) {
      for (Json& x : lp["token_logprobs"]) {
        if (x.is_null()) x = "NaN";
      }
    }
    if (lp.contains("top_logprobs") && lp["top_logprobs"].is_array()) {
      for (Json& x : lp["top_logprobs"]) {
        if (x.is_null()) x = Json::object();
      }
    }
  }
}

template <typename Proto>
absl::Status FromJson(Json j, Proto* out) {
  NullsForProto(j);
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  auto s = google::protobuf::util::JsonStringToMessage(j.dump(-1, ' ', false, Json::error_handler_t::replace), out, opts);
  if (!s.ok()) return absl::InternalError(absl::StrCat("cannot convert the response: ", s.ToString()));
  return absl::OkStatus();
}

// A unary call whose response arrives later; a cancelled call cancels its
// CompletionCall.
// It deletes itself once gRPC is done with it and set_call has run (the call
// may finish, and gRPC with it, before Start returns).
class PendingUnary final : public grpc::ServerUnaryReactor {
 public:
  // REQUIRES: called exactly once (with nullptr when no call was started).
  void set_call(std::shared_ptr<CompletionCall> call) {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      call_ = std::move(call);
      if (cancelled_ && call_) call_->Cancel();
      call_set_ = true;
      last = done_;
    }
    if (last) delete this;
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (call_) call_->Cancel();
  }
  void OnDone() override {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = call_set_;
    }
    if (last) delete this;
  }

 private:
  absl::Mutex mu_;
  std::shared_ptr<CompletionCall> call_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool call_set_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

template <typename Response>
class UnaryOutput final : public ResponseOutput {
 public:
  UnaryOutput(PendingUnary* reactor, Response* response) : reactor_(reactor), response_(response) {}
  void StartStream() override {}
  void StreamChunk(const Json&) override {}
  void EndStream() override {}
  void StreamError(const absl::Status& s) override { Error(s); }
  void Whole(const Json& body) override {
    reactor_->Finish(ToGrpcStatus(FromJson(body, response_), kPublicApiOptions));
  }
  void Error(const absl::Status& s) override { reactor_->Finish(ToGrpcStatus(s, kPublicApiOptions)); }

 private:
  PendingUnary* reactor_;
  Response* response_;
};

template <typename Chunk>
class StreamOutput final : public QueuedServerWriter<Chunk>, public ResponseOutput {
 public:
  static std::shared_ptr<StreamOutput> Create() {
    std::shared_ptr<StreamOutput> s(new StreamOutput());
    s->Adopt(s);
    return s;
  }
  void set_call(std::shared_ptr<CompletionCall> call) {
    absl::MutexLock lock(&mu_);
    call_ = std::move(call);
    if (gone_ && call_) call_->Cancel();
  }
  void StartStream() override {}
  void StreamChunk(const Json& chunk) override {
    Chunk c;
    absl::Status s = FromJson(chunk, &c);
    if (!s.ok()) return this->Finish(ToGrpcStatus(s, kPublicApiOptions));
    this->Write(std::move(c));
  }
  void EndStream() override { this->Finish(grpc::Status::OK); }
  void StreamError(const absl::Status& s) override { this->Finish(ToGrpcStatus(s, kPublicApiOptions)); }
  void Whole(const Json&) override { this->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "unexpected whole response")); }
  void Error(const absl::Status& s) override { this->Finish(ToGrpcStatus(s, kPublicApiOptions)); }

 private:
  StreamOutput() = default;
  void OnClientGone() override {
    absl::MutexLock lock(&mu_);
    gone_ = true;
    if (call_) call_->Cancel();
  }
  absl::Mutex mu_;
  std::shared_ptr<CompletionCall> call_ ABSL_GUARDED_BY(mu_);
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
};

// Authorization, then the REST API's own parsing of the equivalent JSON.
absl::StatusOr<CompletionRequest> ParseRequest(const GatewayConfig& config, const absl::Status& auth,
                                               const google::protobuf::Message& request, bool stream, bool chat) {
  if (!auth.ok()) return auth;
  TESSERA_ASSIGN_OR_RETURN(std::string json, RequestJson(request, stream));
  return chat ? ParseChatCompletionRequest(json, config.request) : ParseCompletionRequest(json, config.request);
}

std::string RequestIdOf(grpc::CallbackServerContext* ctx) {
  auto it = ctx->client_metadata().find("x-request-id");
  if (it != ctx->client_metadata().end() && it->second.size() <= 128) {
    return std::string(it->second.data(), it->second.size());
  }
  return NewRequestId();
}

// The client's deadline travels on to the workers (the earlier of it and
// the gateway's request timeout).
CompletionOptions CallOptions(const GatewayConfig& config, grpc::CallbackServerContext* ctx) {
  CompletionOptions o = config.CallOptions();
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) o.client_deadline = ctx->deadline();
  return o;
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* StartUnary(const GatewayConfig& config, WorkerPool& pool, absl::Status auth,
                                     grpc::CallbackServerContext* ctx, const Request& request, Response* response,
                                     bool chat) {
  auto* reactor = new PendingUnary();
  absl::StatusOr<CompletionRequest> req = ParseRequest(config, auth, request, /*stream=*/false, chat);
  if (!req.ok()) {
    if (GatewayMetrics* m = pool.metrics()) m->RequestRejected(MapStatus(req.status().code()).http_status);
    reactor->Finish(ToGrpcStatus(req.status(), kPublicApiOptions));
    reactor->set_call(nullptr);
    return reactor;
  }
  const std::string id = RequestIdOf(ctx);
  auto renderer = std::make_shared<CompletionRenderer>(std::make_shared<UnaryOutput<Response>>(reactor, response), *req, id);
  reactor->set_call(CompletionCall::Start(pool, *req, renderer, CallOptions(config, ctx)));
  return reactor;
}

template <typename Request, typename Chunk>
grpc::ServerWriteReactor<Chunk>* StartStreaming(const GatewayConfig& config, WorkerPool& pool, absl::Status auth,
                                                grpc::CallbackServerContext* ctx, const Request& request, bool chat) {
  auto out = StreamOutput<Chunk>::Create();
  absl::StatusOr<CompletionRequest> req = ParseRequest(config, auth, request, /*stream=*/true, chat);
  if (!req.ok()) {
    if (GatewayMetrics* m = pool.metrics()) m->RequestRejected(MapStatus(req.status().code()).http_status);
    out->Finish(ToGrpcStatus(req.status(), kPublicApiOptions));
    return out.get();
  }
  auto renderer = std::make_shared<CompletionRenderer>(out, *req, RequestIdOf(ctx));
  out->set_call(CompletionCall::Start(pool, *req, renderer, CallOptions(config, ctx)));
  return out.get();
}

}  // namespace

absl::Status GrpcFrontend::Authorize(grpc::CallbackServerContext* ctx) const {
  if (config_.api_keys.empty()) return absl::OkStatus();
  auto it = ctx->client_metadata().find("authorization");
  if (it != ctx->client_metadata().end()) {
    const std::string v(it->second.data(), it->second.size());
    for (const auto& k : config_.api_keys) {
      if (v == "Bearer " + k) return absl::OkStatus();
    }
    return absl::UnauthenticatedError("incorrect API key provided");
  }
  return absl::UnauthenticatedError("missing API key: send 'authorization: Bearer KEY' metadata");
}

grpc::ServerUnaryReactor* GrpcFrontend::CreateChatCompletion(grpc::CallbackServerContext* ctx,
                                                             const av1::ChatCompletionRequest* request,
                                                             av1::ChatCompletion* response) {
  return StartUnary(config_, pool_, Authorize(ctx), ctx, *request, response, /*chat=*/true);
}

grpc::ServerWriteReactor<av1::ChatCompletionChunk>* GrpcFrontend::StreamChatCompletion(
    grpc::CallbackServerContext* ctx, const av1::ChatCompletionRequest* request) {
  return StartStreaming<av1::ChatCompletionRequest, av1::ChatCompletionChunk>(config_, pool_, Authorize(ctx), ctx,
                                                                              *request, /*chat=*/true);
}

grpc::ServerUnaryReactor* GrpcFrontend::CreateCompletion(grpc::CallbackServerContext* ctx,
                                                         const av1::CompletionRequest* request,
                                                         av1::Completion* response) {
  return StartUnary(config_, pool_, Authorize(ctx), ctx, *request, response, /*chat=*/false);
}

grpc::ServerWriteReactor<av1::Completion>* GrpcFrontend::StreamCompletion(grpc::CallbackServerContext* ctx,
                                                                          const av1::CompletionRequest* request) {
  return StartStreaming<av1::CompletionRequest, av1::Completion>(config_, pool_, Authorize(ctx), ctx, *request,
                                                                 /*chat=*/false);
}

grpc::ServerUnaryReactor* GrpcFrontend::ListModels(grpc::CallbackServerContext* ctx, const av1::ListModelsRequest*,
                                                   av1::ListModelsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  if (absl::Status s = Authorize(ctx); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s, kPublicApiOptions));
    return reactor;
  }
  response->set_object("list");
  for (const auto& m : pool_.Models()) {
    av1::Model* out = response->add_data();
    out->set_id(m.id);
    out->set_object("model");
    out->set_created(static_cast<int64_t>(m.created_unix_s));
    out->set_owned_by("tessera");
    out->set_max_model_len(static_cast<int32_t>(m.context_length));
    out->set_parent(m.parent);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace tessera::gateway
