#include "gateway/http_frontend.h"

#include <chrono>
#include <functional>
#include <cstdio>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/escape.h"
#include "common/grpc/status_conversion.h"
#include "gateway/completion_call.h"
#include "gateway/gateway_metrics.h"
#include "gateway/openai/errors.h"
#include "gateway/openai/renderer.h"
#include "nlohmann/json.hpp"

namespace tessera::gateway {
namespace {

using Json = nlohmann::json;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::vector<std::pair<std::string, std::string>> IdHeader(const std::string& id) { return {{"x-request-id", id}}; }

void RespondError(HttpExchange& ex, const absl::Status& s, const std::string& request_id,
                  std::vector<std::pair<std::string, std::string>> extra = {}) {
  auto headers = IdHeader(request_id);
  for (auto& h : extra) headers.push_back(std::move(h));
  // A full queue or no available worker is transient: tell clients (the
  // OpenAI SDKs read x-should-retry) that a retry can help, and when.
  if (s.code() == absl::StatusCode::kResourceExhausted || s.code() == absl::StatusCode::kUnavailable) {
    headers.emplace_back("x-should-retry", "true");
    headers.emplace_back("retry-after", "1");
  }
  ex.Respond(MapStatus(s.code()).http_status, "application/json", ErrorBody(s), std::move(headers));
}

// Writes rendered responses as JSON bodies or server-sent events.
class HttpOutput final : public ResponseOutput {
 public:
  HttpOutput(std::shared_ptr<HttpExchange> ex, std::string request_id)
      : ex_(std::move(ex)), request_id_(std::move(request_id)) {}
  void StartStream() override { ex_->StartStream(200, "text/event-stream", IdHeader(request_id_)); }
  void StreamChunk(const Json& chunk) override { ex_->Write(absl::StrCat("data: ", Dump(chunk), "\n\n")); }
  void EndStream() override {
    ex_->Write("data: [DONE]\n\n");
    ex_->Close();
  }
  void StreamError(const absl::Status& status) override {
    // Headers are out: the error travels in-band and the stream ends.
    ex_->Write(absl::StrCat("data: ", ErrorBody(status), "\n\n"));
    EndStream();
  }
  void Whole(const Json& body) override { ex_->Respond(200, "application/json", Dump(body), IdHeader(request_id_)); }
  void Error(const absl::Status& status) override { RespondError(*ex_, status, request_id_); }

 private:
  std::shared_ptr<HttpExchange> ex_;
  std::string request_id_;
};

std::string PathOf(const std::string& target) {
  const size_t q = target.find('?');
  return q == std::string::npos ? target : target.substr(0, q);
}

// Whether the request carries 'Authorization: Bearer K' for a K in `keys`.
// Every key is compared in full so that timing does not reveal a prefix.
bool HasKey(const HttpRequestView& r, const std::vector<std::string>& keys) {
  const std::string auth = r.Header("authorization");
  if (!absl::StartsWith(auth, "Bearer ")) return false;
  const std::string key = auth.substr(7);
  bool ok = false;
  for (const auto& k : keys) {
    const bool same = k.size() == key.size();
    unsigned char diff = 0;
    for (size_t i = 0; i < std::min(k.size(), key.size()); ++i) diff |= static_cast<unsigned char>(k[i] ^ key[i]);
    ok |= same && diff == 0;
  }
  return ok;
}

bool ValidRequestId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

}  // namespace

void HttpFrontend::Handle(std::shared_ptr<HttpExchange> ex) {
  const HttpRequestView& r = ex->request();
  std::string request_id = r.Header("x-request-id");
  if (!ValidRequestId(request_id)) request_id = NewRequestId();
  const std::string path = PathOf(r.target);
  const std::string& m = r.method;

  if (path == "/health") {
    if (m != "GET" && m != "HEAD") return RespondError(*ex, absl::InvalidArgumentError("use GET /health"), request_id);
    return ex->Respond(200, "application/json", R"({"status":"ok"})", IdHeader(request_id));
  }
  if (path == "/ready") {
    if (m != "GET" && m != "HEAD") return RespondError(*ex, absl::InvalidArgumentError("use GET /ready"), request_id);
    if (pool_.Draining()) return ex->Respond(503, "application/json", R"({"status":"draining"})", IdHeader(request_id));
    const bool ready = pool_.AnyHealthy();
    return ex->Respond(ready ? 200 : 503, "application/json",
                       ready ? R"({"status":"ready"})" : R"({"status":"no healthy worker"})", IdHeader(request_id));
  }
  if (path == "/v1/load_lora_adapter" || path == "/v1/unload_lora_adapter") {
    if (m != "POST") {
      return ex->Respond(405, "application/json",
                         ErrorBody(absl::InvalidArgumentError(absl::StrCat("method ", m, " not allowed on ", path, "; use POST"))),
                         {{"allow", "POST"}, {"x-request-id", request_id}});
    }
    return HandleAdapterAdmin(ex, path == "/v1/load_lora_adapter", request_id);
  }
  if (!config_.api_keys.empty()) {
    const std::string auth = r.Header("authorization");
    if (!HasKey(r, config_.api_keys)) {
      return RespondError(*ex,
                          WithCode(absl::UnauthenticatedError(auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'"
                                                                           : "incorrect API key provided"),
                                   "invalid_api_key"),
                          request_id, {{"www-authenticate", "Bearer"}});
    }
  }
  const bool is_chat = path == "/v1/chat/completions";
  if (is_chat || path == "/v1/completions") {
    if (m != "POST") {
      return ex->Respond(405, "application/json",
                         ErrorBody(absl::InvalidArgumentError(absl::StrCat("method ", m, " not allowed on ", path, "; use POST"))),
                         {{"allow", "POST"}, {"x-request-id", request_id}});
    }
    return HandleCompletion(ex, is_chat, request_id);
  }
  if (path == "/v1/models" || absl::StartsWith(path, "/v1/models/")) {
    if (m != "GET") {
      return ex->Respond(405, "application/json",
                         ErrorBody(absl::InvalidArgumentError(absl::StrCat("method ", m, " not allowed on ", path, "; use GET"))),
                         {{"allow", "GET"}, {"x-request-id", request_id}});
    }
    return HandleModels(ex, path == "/v1/models" ? "" : path.substr(strlen("/v1/models/")), request_id);
  }
  RespondError(*ex, absl::NotFoundError(absl::StrCat("no route for ", m, " ", EscapeForMessage(path, 128))), request_id);
}

void HttpFrontend::HandleModels(std::shared_ptr<HttpExchange> ex, const std::string& model_id,
                                const std::string& request_id) {
  auto models = pool_.Models();
  auto to_json = [](const WorkerPool::Listing& m) {
    Json j{{"id", m.id},
           {"object", "model"},
           {"created", m.created_unix_s},
           {"owned_by", "tessera"},
           {"root", m.id},
           {"parent", m.parent.empty() ? Json(nullptr) : Json(m.parent)},
           {"max_model_len", m.context_length}};
    if (!m.weight_type.empty()) j["weight_type"] = m.weight_type;
    return j;
  };
  if (model_id.empty()) {
    Json data = Json::array();
    for (const auto& m : models) data.push_back(to_json(m));
    return ex->Respond(200, "application/json", Dump(Json{{"object", "list"}, {"data", data}}), IdHeader(request_id));
  }
  for (const auto& m : models) {
    if (m.id == model_id) return ex->Respond(200, "application/json", Dump(to_json(m)), IdHeader(request_id));
  }
  if (!pool_.AnyHealthy()) return RespondError(*ex, absl::UnavailableError("no healthy worker is available"), request_id);
  RespondError(*ex,
               WithCode(absl::NotFoundError(absl::StrCat("The model '", EscapeForMessage(model_id, 128), "' does not exist")),
                        "model_not_found"),
               request_id);
}

void HttpFrontend::HandleCompletion(std::shared_ptr<HttpExchange> ex, bool chat, const std::string& request_id) {
  auto req = chat ? ParseChatCompletionRequest(ex->request().body, config_.request)
                  : ParseCompletionRequest(ex->request().body, config_.request);
  auto reject = [&](const absl::Status& s) {
    if (GatewayMetrics* m = pool_.metrics()) m->RequestRejected(MapStatus(s.code()).http_status);
    RespondError(*ex, s, request_id);
  };
  if (!req.ok()) return reject(req.status());
  req->adapter = ex->request().Header("x-lora-adapter");
  if (req->adapter.size() > 128) {
    return reject(WithCode(absl::InvalidArgumentError("X-Lora-Adapter is longer than 128 bytes"), "invalid_request_error"));
  }
  auto renderer = std::make_shared<CompletionRenderer>(std::make_shared<HttpOutput>(ex, request_id), *req, request_id);
  CompletionOptions options = config_.CallOptions();
  auto call = CompletionCall::Start(pool_, *req, renderer, options);
  // A client that goes away cancels its generations on the workers.
  ex->OnDisconnect([weak = std::weak_ptr<CompletionCall>(call)] {
    if (auto c = weak.lock()) c->Cancel();
  });
}

namespace {

// One admin request fanned out to several workers; answers the client when
// the last worker has answered: success if all succeeded, else the first
// error.
class AdminFanOut {
 public:
  AdminFanOut(std::shared_ptr<HttpExchange> ex, std::string request_id, std::string adapter, bool load,
              std::string success, int workers, WorkerPool& pool, std::function<void()> on_any_success)
      : ex_(std::move(ex)), request_id_(std::move(request_id)), adapter_(std::move(adapter)), loaded_(load),
        success_(std::move(success)), remaining_(workers), pool_(pool), on_any_success_(std::move(on_any_success)) {}

  void Done(Worker& worker, const grpc::Status& s) {
    absl::MutexLock lock(&mu_);
    if (!s.ok()) {
      std::fprintf(stderr, "tessera-gateway: %s: adapter admin on %s failed: %s\n", request_id_.c_str(),
                   worker.address.c_str(), s.error_message().c_str());
      if (error_.ok()) error_ = FromGrpcStatus(s);
    } else {
      any_success_ = true;
      // Routable as soon as the client hears 200, not at the next probe.
      pool_.NoteAdapterChange(worker, adapter_, loaded_);
    }
    if (--remaining_ > 0) return;
    if (any_success_) on_any_success_();
    pool_.RequestRefresh();
    if (!error_.ok()) return RespondError(*ex_, error_, request_id_);
    ex_->Respond(200, "text/plain; charset=utf-8", success_, IdHeader(request_id_));
  }

 private:
  absl::Mutex mu_;
  std::shared_ptr<HttpExchange> ex_;
  std::string request_id_;
  std::string adapter_;
  bool loaded_;
  std::string success_;
  int remaining_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool any_success_ ABSL_GUARDED_BY(mu_) = false;
  WorkerPool& pool_;
  std::function<void()> on_any_success_;
};

}  // namespace

void HttpFrontend::HandleAdapterAdmin(std::shared_ptr<HttpExchange> ex, bool load, const std::string& request_id) {
  const HttpRequestView& r = ex->request();
  if (config_.admin_api_keys.empty()) {
    return RespondError(*ex,
                        absl::PermissionDeniedError("runtime adapter loading is disabled: configure admin_api_keys "
                                                    "(--admin-api-key) on the gateway"),
                        request_id);
  }
  if (!HasKey(r, config_.admin_api_keys)) {
    return RespondError(*ex, WithCode(absl::UnauthenticatedError("this route needs an admin key"), "invalid_api_key"),
                        request_id, {{"www-authenticate", "Bearer"}});
  }
  const Json body = Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    return RespondError(*ex, absl::InvalidArgumentError("the body must be a JSON object"), request_id);
  }
  auto text_field = [&](const char* key, size_t max, std::string* out) -> absl::Status {
    if (!body.contains(key) || !body[key].is_string() || body[key].get<std::string>().empty()) {
      return ParamError(key, absl::StrCat("'", key, "' is required and must be a non-empty string"));
    }
    *out = body[key].get<std::string>();
    if (out->size() > max) return ParamError(key, absl::StrCat("'", key, "' is longer than ", max, " bytes"));
    return absl::OkStatus();
  };
  std::string name, path;
  if (absl::Status s = text_field("lora_name", 128, &name); !s.ok()) return RespondError(*ex, s, request_id);
  if (load) {
    if (absl::Status s = text_field("lora_path", 4096, &path); !s.ok()) return RespondError(*ex, s, request_id);
  }
  std::vector<std::shared_ptr<Worker>> workers = pool_.Healthy();
  if (workers.empty()) return RespondError(*ex, absl::UnavailableError("no healthy worker is available"), request_id);
  std::fprintf(stderr, "tessera-gateway: %s: %s adapter '%s' on %zu workers\n", request_id.c_str(),
               load ? "loading" : "unloading", EscapeForMessage(name, 128).c_str(), workers.size());
  auto fan = std::make_shared<AdminFanOut>(
      ex, request_id, name, load,
      absl::StrCat("Success: LoRA adapter '", name, "' ", load ? "added" : "removed", " successfully."),
      static_cast<int>(workers.size()), pool_, [this, load, name, path] {
        // Remembered so that workers that come (back) later get it too.
        if (load) {
          pool_.RememberRuntimeAdapter(name, path);
        } else {
          pool_.ForgetRuntimeAdapter(name);
        }
      });
  for (const std::shared_ptr<Worker>& w : workers) {
    auto ctx = std::make_shared<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    if (load) {
      auto req = std::make_shared<tessera::worker::v1::LoadAdapterRequest>();
      auto resp = std::make_shared<tessera::worker::v1::LoadAdapterResponse>();
      req->set_name(name);
      req->set_path(path);
      w->stub->async()->LoadAdapter(ctx.get(), req.get(), resp.get(),
                                    [fan, ctx, req, resp, w](grpc::Status s) { fan->Done(*w, s); });
    } else {
      auto req = std::make_shared<tessera::worker::v1::UnloadAdapterRequest>();
      auto resp = std::make_shared<tessera::worker::v1::UnloadAdapterResponse>();
      req->set_name(name);
      w->stub->async()->UnloadAdapter(ctx.get(), req.get(), resp.get(),
                                      [fan, ctx, req, resp, w](grpc::Status s) { fan->Done(*w, s); });
    }
  }
}

}  // namespace tessera::gateway
