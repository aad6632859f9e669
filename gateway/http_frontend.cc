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
#include "nlohmann/json.hpp"

namespace tessera::gateway {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string NewId() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%016x%08x", rng(), static_cast<uint32_t>(rng()));
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<std::pair<std::string, std::string>> IdHeader(const std::string& id) { return {{"x-request-id", id}}; }

void RespondError(HttpExchange& ex, const absl::Status& s, const std::string& request_id,
                  std::vector<std::pair<std::string, std::string>> extra = {}) {
  auto headers = IdHeader(request_id);
  for (auto& h : extra) headers.push_back(std::move(h));
  ex.Respond(MapStatus(s.code()).http_status, "application/json", ErrorBody(s), std::move(headers));
}

Json BytesOf(const std::string& s) {
  Json a = Json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

// Accumulates or streams one CompletionCall. Events arrive serialized.
class CompletionRenderer final : public CompletionSink {
 public:
  CompletionRenderer(std::shared_ptr<HttpExchange> ex, CompletionRequest req, std::string request_id)
      : ex_(std::move(ex)), req_(std::move(req)), request_id_(std::move(request_id)), start_(Clock::now()) {
    const bool chat = req_.kind == CompletionRequest::Kind::kChat;
    id_ = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", NewId());
    created_ = UnixSeconds();
    const size_t choices = req_.prompt_count() * static_cast<size_t>(req_.n);
    texts_.resize(choices);
    finish_.resize(choices);
    chat_logprobs_.assign(choices, Json::array());
    text_lp_.resize(choices);
  }

  void OnFirstOutput() override {
    first_output_ = Clock::now();
    if (!req_.stream) return;
    ex_->StartStream(200, "text/event-stream", IdHeader(request_id_));
    if (req_.kind == CompletionRequest::Kind::kChat) {
      for (size_t c = 0; c < texts_.size(); ++c) {
        Json delta{{"role", "assistant"}, {"content", ""}};
        SendChunk(Json::array({Json{{"index", c}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}}}));
      }
    }
  }

  void OnDelta(int choice, const std::string& text, const std::vector<TokenLogprobs>& logprobs) override {
    const bool chat = req_.kind == CompletionRequest::Kind::kChat;
    Json lp = nullptr;
    if (req_.logprobs && !logprobs.empty()) lp = chat ? ChatLogprobs(logprobs) : TextLogprobs(choice, logprobs, text);
    if (!req_.stream) {
      texts_[choice] += text;
      if (chat && lp.is_object()) for (auto& e : lp["content"]) chat_logprobs_[choice].push_back(e);
      return;
    }
    if (text.empty() && lp.is_null()) return;
    Json c;
    c["index"] = choice;
    if (chat) c["delta"] = Json{{"content", text}};
    else c["text"] = text;
    c["logprobs"] = lp;
    c["finish_reason"] = nullptr;
    SendChunk(Json::array({c}));
  }

  void OnChoiceFinished(int choice, const std::string& reason) override {
    finish_[choice] = reason;
    if (!req_.stream) return;
    Json c;
    c["index"] = choice;
    if (req_.kind == CompletionRequest::Kind::kChat) c["delta"] = Json::object();
    else c["text"] = "";
    c["logprobs"] = nullptr;
    c["finish_reason"] = reason;
    SendChunk(Json::array({c}));
  }

  void OnDone(const absl::Status& status, int prompt_tokens, int completion_tokens) override {
    const auto end = Clock::now();
    Json usage{{"prompt_tokens", prompt_tokens},
               {"completion_tokens", completion_tokens},
               {"total_tokens", prompt_tokens + completion_tokens}};
    int http_status = 200;
    if (!status.ok()) {
      http_status = MapStatus(status.code()).http_status;
      if (req_.stream && first_output_.has_value()) {
        // Headers are out: the error travels in-band and the stream ends.
        ex_->Write(absl::StrCat("data: ", ErrorBody(status), "\n\n"));
        ex_->Write("data: [DONE]\n\n");
        ex_->Close();
      } else {
        RespondError(*ex_, status, request_id_);
      }
    } else if (req_.stream) {
      if (req_.include_usage) {
        Json chunk = Base(req_.kind == CompletionRequest::Kind::kChat ? "chat.completion.chunk" : "text_completion");
        chunk["choices"] = Json::array();
        chunk["usage"] = usage;
        ex_->Write(absl::StrCat("data: ", Dump(chunk), "\n\n"));
      }
      ex_->Write("data: [DONE]\n\n");
      ex_->Close();
    } else {
      ex_->Respond(200, "application/json", Dump(WholeResponse(usage)), IdHeader(request_id_));
    }
    const double ttft_ms = first_output_ ? std::chrono::duration<double, std::milli>(*first_output_ - start_).count() : -1;
    const double total_ms = std::chrono::duration<double, std::milli>(end - start_).count();
    std::fprintf(stderr,
                 "request id=%s model=%s prompt_tokens=%d completion_tokens=%d ttft_ms=%.1f total_ms=%.1f status=%d%s\n",
                 request_id_.c_str(), EscapeForMessage(req_.model, 64).c_str(), prompt_tokens, completion_tokens,
                 ttft_ms, total_ms, http_status,
                 status.ok() ? "" : absl::StrCat(" error=\"", EscapeForMessage(std::string(status.message()), 120), "\"").c_str());
  }

 private:
  Json Base(const char* object) const {
    Json j;
    j["id"] = id_;
    j["object"] = object;
    j["created"] = created_;
    j["model"] = req_.model;
    j["system_fingerprint"] = nullptr;
    return j;
  }

  void SendChunk(Json choices) {
    Json chunk = Base(req_.kind == CompletionRequest::Kind::kChat ? "chat.completion.chunk" : "text_completion");
    chunk["choices"] = std::move(choices);
    if (req_.include_usage) chunk["usage"] = nullptr;
    ex_->Write(absl::StrCat("data: ", Dump(chunk), "\n\n"));
  }

  Json ChatLogprobs(const std::vector<TokenLogprobs>& lps) const {
    Json content = Json::array();
    for (const auto& t : lps) {
      Json top = Json::array();
      for (const auto& [tok, lp] : t.top) top.push_back({{"token", tok}, {"logprob", lp}, {"bytes", BytesOf(tok)}});
      content.push_back({{"token", t.token}, {"logprob", t.logprob}, {"bytes", BytesOf(t.token)}, {"top_logprobs", top}});
    }
    return Json{{"content", content}};
  }

  struct TextLp {
    Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(), offsets = Json::array();
    size_t offset = 0;
  };

  Json TextLogprobs(int choice, const std::vector<TokenLogprobs>& lps, const std::string& text) {
    TextLp& acc = text_lp_[choice];
    Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(), offsets = Json::array();
    for (const auto& t : lps) {
      tokens.push_back(t.token);
      token_logprobs.push_back(t.logprob);
      Json alt = Json::object();
      for (const auto& [tok, lp] : t.top) alt[tok] = lp;
      top.push_back(alt);
      offsets.push_back(acc.offset);
      acc.offset += t.token.size();
    }
    for (auto& x : tokens) acc.tokens.push_back(x);
    for (auto& x : token_logprobs) acc.token_logprobs.push_back(x);
    for (auto& x : top) acc.top.push_back(x);
    for (auto& x : offsets) acc.offsets.push_back(x);
    return Json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
  }

  Json WholeResponse(const Json& usage) {
    const bool chat = req_.kind == CompletionRequest::Kind::kChat;
    Json j = Base(chat ? "chat.completion" : "text_completion");
    Json choices = Json::array();
    for (size_t c = 0; c < texts_.size(); ++c) {
      Json choice;
      choice["index"] = c;
      if (chat) {
        choice["message"] = Json{{"role", "assistant"}, {"content", texts_[c]}};
        choice["logprobs"] = req_.logprobs ? Json{{"content", chat_logprobs_[c]}} : Json(nullptr);
      } else {
        const std::string prefix = req_.echo && !req_.prompts.empty() ? req_.prompts[c / req_.n] : "";
        choice["text"] = prefix + texts_[c];
        if (req_.logprobs) {
          const TextLp& t = text_lp_[c];
          choice["logprobs"] = Json{{"tokens", t.tokens}, {"token_logprobs", t.token_logprobs},
                                    {"top_logprobs", t.top}, {"text_offset", t.offsets}};
        } else {
          choice["logprobs"] = nullptr;
        }
      }
      choice["finish_reason"] = finish_[c].empty() ? Json(nullptr) : Json(finish_[c]);
      choices.push_back(choice);
    }
    j["choices"] = choices;
    j["usage"] = usage;
    return j;
  }

  std::shared_ptr<HttpExchange> ex_;
  CompletionRequest req_;
  std::string request_id_;
  std::string id_;
  int64_t created_;
  Clock::time_point start_;
  std::optional<Clock::time_point> first_output_;
  std::vector<std::string> texts_;
  std::vector<std::string> finish_;
  std::vector<Json> chat_logprobs_;
  std::vector<TextLp> text_lp_;
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
  if (!ValidRequestId(request_id)) request_id = NewId();
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
  auto renderer = std::make_shared<CompletionRenderer>(ex, *req, request_id);
  CompletionOptions options;
  options.timeout = std::chrono::seconds(config_.request_timeout_s);
  auto call = CompletionCall::Start(pool_, *req, renderer, options);
  // A client that goes away cancels its generations on the workers.
  ex->OnDisconnect([weak = std::weak_ptr<CompletionCall>(call)] {
    if (auto c = weak.lock()) c->Cancel();
  });
}

}  // namespace tessera::gateway
