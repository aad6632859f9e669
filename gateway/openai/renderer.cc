#include "gateway/openai/renderer.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/escape.h"
#include "gateway/openai/errors.h"

namespace tessera::gateway {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Json BytesOf(const std::string& s) {
  Json a = Json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

bool IsContinuationByte(unsigned char c) { return (c & 0xC0) == 0x80; }

int64_t CharactersBegun(const std::string& bytes) {
  int64_t n = 0;
  for (unsigned char c : bytes) n += !IsContinuationByte(c);
  return n;
}

}  // namespace

int64_t TextOffset(const std::string& token, int64_t& chars_before) {
  const bool inside = !token.empty() && IsContinuationByte(static_cast<unsigned char>(token[0]));
  const int64_t offset = std::max<int64_t>(0, chars_before - (inside ? 1 : 0));
  chars_before += CharactersBegun(token);
  return offset;
}

std::string NewRequestId() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%016x%08x", rng(), static_cast<uint32_t>(rng()));
}

CompletionRenderer::CompletionRenderer(std::shared_ptr<ResponseOutput> out, CompletionRequest req,
                                       std::string request_id)
    : out_(std::move(out)), req_(std::move(req)), request_id_(std::move(request_id)), start_(Clock::now()) {
  const bool chat = req_.kind == CompletionRequest::Kind::kChat;
  id_ = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", NewRequestId());
  created_ = UnixSeconds();
  const size_t choices = req_.prompt_count() * static_cast<size_t>(req_.n);
  texts_.resize(choices);
  ResetChoices();
}

void CompletionRenderer::ResetChoices() {
  const size_t choices = texts_.size();
  texts_.assign(choices, "");
  finish_.assign(choices, "");
  chat_logprobs_.assign(choices, Json::array());
  text_lp_.assign(choices, TextLp{});
}

bool CompletionRenderer::Restart() {
  if (req_.stream && first_output_.has_value()) return false;  // the client has seen chunks
  first_output_.reset();
  ResetChoices();
  return true;
}

void CompletionRenderer::OnEcho(int choice, const std::string& prompt_text,
                                const std::vector<TokenLogprobs>& prompt_logprobs) {
  if (req_.kind != CompletionRequest::Kind::kText || !req_.echo) return;
  // Generated tokens' offsets count on from the end of the echoed prompt.
  text_lp_[choice].generated_chars = CharactersBegun(prompt_text);
  Json lp = req_.logprobs ? TextLogprobs(choice, prompt_logprobs, /*prompt=*/true) : Json(nullptr);
  if (!req_.stream) {
    texts_[choice] = prompt_text;  // before the choice's first OnDelta
    return;
  }
  // Streamed, the echoed prompt is the choice's first chunk (as vLLM sends
  // it), with the prompt's logprobs when asked.
  Json c;
  c["index"] = choice;
  c["text"] = prompt_text;
  c["logprobs"] = std::move(lp);
  c["finish_reason"] = nullptr;
  SendChunk(Json::array({c}));
}

void CompletionRenderer::OnFirstOutput() {
  first_output_ = Clock::now();
  if (!req_.stream) return;
  out_->StartStream();
  if (req_.kind == CompletionRequest::Kind::kChat) {
    for (size_t c = 0; c < texts_.size(); ++c) {
      Json delta{{"role", "assistant"}, {"content", ""}};
      SendChunk(Json::array({Json{{"index", c}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}}}));
    }
  }
}

void CompletionRenderer::OnDelta(int choice, const std::string& text, const std::vector<TokenLogprobs>& logprobs) {
  const bool chat = req_.kind == CompletionRequest::Kind::kChat;
  Json lp = nullptr;
  if (req_.logprobs && !logprobs.empty()) {
    lp = chat ? ChatLogprobs(logprobs) : TextLogprobs(choice, logprobs, /*prompt=*/false);
  }
  if (!req_.stream) {
    texts_[choice] += text;
    if (chat && lp.is_object()) {
      for (auto& e : lp["content"]) chat_logprobs_[choice].push_back(e);
    }
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

void CompletionRenderer::OnChoiceFinished(int choice, const std::string& reason) {
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

void CompletionRenderer::OnDone(const absl::Status& status, int prompt_tokens, int completion_tokens) {
  const auto end = Clock::now();
  Json usage{{"prompt_tokens", prompt_tokens},
             {"completion_tokens", completion_tokens},
             {"total_tokens", prompt_tokens + completion_tokens}};
  int http_status = 200;
  if (!status.ok()) {
    http_status = MapStatus(status.code()).http_status;
    if (req_.stream && first_output_.has_value()) {
      out_->StreamError(status);
    } else {
      out_->Error(status);
    }
  } else if (req_.stream) {
    if (req_.include_usage) {
      Json chunk = Base(req_.kind == CompletionRequest::Kind::kChat ? "chat.completion.chunk" : "text_completion");
      chunk["choices"] = Json::array();
      chunk["usage"] = usage;
      out_->StreamChunk(chunk);
    }
    out_->EndStream();
  } else {
    out_->Whole(WholeResponse(usage));
  }
  const double ttft_ms = first_output_ ? std::chrono::duration<double, std::milli>(*first_output_ - start_).count() : -1;
  const double total_ms = std::chrono::duration<double, std::milli>(end - start_).count();
  const std::string error =
      status.ok() ? "" : absl::StrCat(" error=\"", EscapeForMessage(std::string(status.message()), 120), "\"");
  std::fprintf(stderr,
               "request id=%s model=%s prompt_tokens=%d completion_tokens=%d ttft_ms=%.1f total_ms=%.1f status=%d%s\n",
               request_id_.c_str(), EscapeForMessage(req_.model, 64).c_str(), prompt_tokens, completion_tokens,
               ttft_ms, total_ms, http_status, error.c_str());
}

Json CompletionRenderer::Base(const char* object) const {
  Json j;
  j["id"] = id_;
  j["object"] = object;
  j["created"] = created_;
  j["model"] = req_.model;
  j["system_fingerprint"] = nullptr;
  return j;
}

void CompletionRenderer::SendChunk(Json choices) {
  Json chunk = Base(req_.kind == CompletionRequest::Kind::kChat ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = std::move(choices);
  if (req_.include_usage) chunk["usage"] = nullptr;
  out_->StreamChunk(chunk);
}

Json CompletionRenderer::ChatLogprobs(const std::vector<TokenLogprobs>& lps) const {
  Json content = Json::array();
  for (const auto& t : lps) {
    Json top = Json::array();
    for (const auto& [tok, lp] : t.top) top.push_back({{"token", tok}, {"logprob", lp}, {"bytes", BytesOf(tok)}});
    content.push_back({{"token", t.token}, {"logprob", t.logprob}, {"bytes", BytesOf(t.token)}, {"top_logprobs", top}});
  }
  return Json{{"content", content}};
}

Json CompletionRenderer::TextLogprobs(int choice, const std::vector<TokenLogprobs>& lps, bool prompt) {
  TextLp& acc = text_lp_[choice];
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(), offsets = Json::array();
  for (size_t i = 0; i < lps.size(); ++i) {
    const TokenLogprobs& t = lps[i];
    tokens.push_back(t.token);
    offsets.push_back(TextOffset(t.token, prompt ? acc.prompt_chars : acc.generated_chars));
    if (prompt && i == 0) {
      // Nothing precedes the first prompt token: OpenAI reports null.
      token_logprobs.push_back(nullptr);
      top.push_back(nullptr);
      continue;
    }
    token_logprobs.push_back(t.logprob);
    // The N most likely tokens, and always the chosen one (OpenAI: "up to
    // logprobs+1 elements").
    Json alt = Json::object();
    for (const auto& [tok, lp] : t.top) alt[tok] = lp;
    if (!alt.contains(t.token)) alt[t.token] = t.logprob;
    top.push_back(alt);
  }
  for (auto& x : tokens) acc.tokens.push_back(x);
  for (auto& x : token_logprobs) acc.token_logprobs.push_back(x);
  for (auto& x : top) acc.top.push_back(x);
  for (auto& x : offsets) acc.offsets.push_back(x);
  return Json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

Json CompletionRenderer::WholeResponse(const Json& usage) {
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
      choice["text"] = texts_[c];  // with echo, OnEcho put the prompt first
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

}  // namespace tessera::gateway
