// CompletionRenderer: turns a CompletionCall's events into OpenAI response
// objects (whole, or chunk by chunk when streaming) and hands them to a
// transport (HTTP/SSE or the public gRPC API), so both transports share the
// exact same response shapes. Also writes the request's log line.
#ifndef TESSERA_GATEWAY_OPENAI_RENDERER_H_
#define TESSERA_GATEWAY_OPENAI_RENDERER_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/completion_call.h"
#include "gateway/openai/request.h"
#include "nlohmann/json.hpp"

namespace tessera::gateway {

// Where rendered responses go. Called one at a time.
class ResponseOutput {
 public:
  virtual ~ResponseOutput() = default;
  virtual void StartStream() = 0;                          // before the first chunk
  virtual void StreamChunk(const nlohmann::json& chunk) = 0;
  virtual void EndStream() = 0;                            // after the last chunk
  virtual void StreamError(const absl::Status& status) = 0;  // in-band error; ends the stream
  virtual void Whole(const nlohmann::json& body) = 0;      // a non-streamed response
  virtual void Error(const absl::Status& status) = 0;      // an error before any output
};

class CompletionRenderer final : public CompletionSink {
 public:
  CompletionRenderer(std::shared_ptr<ResponseOutput> out, CompletionRequest req, std::string request_id);

  void OnFirstOutput() override;
  void OnEcho(int choice, const std::string& prompt_text, const std::vector<TokenLogprobs>& prompt_logprobs) override;
  void OnDelta(int choice, const std::string& text, const std::vector<TokenLogprobs>& logprobs) override;
  void OnChoiceFinished(int choice, const std::string& reason) override;
  void OnDone(const absl::Status& status, int prompt_tokens, int completion_tokens) override;
  bool Restart() override;

 private:
  // A text choice's logprobs so far. text_offset counts characters (code
  // points) of the choice's text, as OpenAI's does: the echoed prompt's
  // tokens from 0, generated ones from the end of the echoed prompt.
  struct TextLp {
    nlohmann::json tokens = nlohmann::json::array(), token_logprobs = nlohmann::json::array(),
                   top = nlohmann::json::array(), offsets = nlohmann::json::array();
    int64_t prompt_chars = 0;     // characters begun by the prompt tokens so far
    int64_t generated_chars = 0;  // where the next generated token's bytes begin
  };
  nlohmann::json Base(const char* object) const;
  void SendChunk(nlohmann::json choices);
  void ResetChoices();
  nlohmann::json ChatLogprobs(const std::vector<TokenLogprobs>& lps) const;
  // Renders `lps` as OpenAI text logprobs and appends them to the choice's
  // (prompt tokens: the first has null logprob and alternatives).
  nlohmann::json TextLogprobs(int choice, const std::vector<TokenLogprobs>& lps, bool prompt);
  nlohmann::json WholeResponse(const nlohmann::json& usage);

  std::shared_ptr<ResponseOutput> out_;
  CompletionRequest req_;
  std::string request_id_;
  std::string id_;
  int64_t created_;
  std::chrono::steady_clock::time_point start_;
  std::optional<std::chrono::steady_clock::time_point> first_output_;
  std::vector<std::string> texts_;
  std::vector<std::string> finish_;
  std::vector<nlohmann::json> chat_logprobs_;
  std::vector<TextLp> text_lp_;
};

// The index, in characters (code points) of a text whose first
// `chars_before` characters have begun, of the character where `token`'s
// bytes begin (a token that starts inside a multi-byte character points at
// that character); adds the characters `token` begins to `chars_before`.
int64_t TextOffset(const std::string& token, int64_t& chars_before);

std::string NewRequestId();

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_OPENAI_RENDERER_H_
