#include "gateway/http_frontend.h"

#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/escape.h"
#include "gateway/completion_call.h"
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
  // A full queue is transient: tell clients when to come back.
  if (s.code() == absl::StatusCode::kResourceExhausted) headers.emplace_back("retry-after", "1");
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
    const bool ready = pool_.AnyHealthy();
    return ex->Respond(ready ? 200 : 503, "application/json",
                       ready ? R"({"status":"ready"})" : R"({"status":"no healthy worker"})", IdHeader(request_id));
  }
  if (!config_.api_keys.empty()) {
    const std::string auth = r.Header("authorization");
    bool ok = false;
    if (absl::StartsWith(auth, "Bearer ")) {
      const std::string key = auth.substr(7);
      for (const auto& k : config_.api_keys) {
        // Compare every key in full so timing does not reveal a prefix.
        bool same = k.size() == key.size();
        unsigned char diff = 0;
        for (size_t i = 0; i < std::min(k.size(), key.size()); ++i) diff |= static_cast<unsigned char>(k[i] ^ key[i]);
        ok |= same && diff == 0;
      }
    }
    if (!ok) {
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
  auto to_json = [](const tessera::worker::v1::ModelInfo& m) {
    return Json{{"id", m.model_id()}, {"object", "model"}, {"created", m.created_unix_s()}, {"owned_by", "tessera"},
                {"root", m.model_id()}, {"parent", nullptr}, {"max_model_len", m.context_length()}};
  };
  if (model_id.empty()) {
    Json data = Json::array();
    for (const auto& m : models) data.push_back(to_json(m));
    return ex->Respond(200, "application/json", Dump(Json{{"object", "list"}, {"data", data}}), IdHeader(request_id));
  }
  for (const auto& m : models) {
    if (m.model_id() == model_id) return ex->Respond(200, "application/json", Dump(to_json(m)), IdHeader(request_id));
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
  if (!req.ok()) return RespondError(*ex, req.status(), request_id);
  if (!req->prompt_ids.empty() && req->echo) {
    return RespondError(*ex, ParamError("echo", "'echo' is supported for text prompts only"), request_id);
  }
  auto renderer = std::make_shared<CompletionRenderer>(std::make_shared<HttpOutput>(ex, request_id), *req, request_id);
  CompletionOptions options;
  options.timeout = std::chrono::seconds(config_.request_timeout_s);
  auto call = CompletionCall::Start(pool_, *req, renderer, options);
  // A client that goes away cancels its generations on the workers.
  ex->OnDisconnect([weak = std::weak_ptr<CompletionCall>(call)] {
    if (auto c = weak.lock()) c->Cancel();
  });
}

}  // namespace tessera::gateway
