// OpenAI request bodies -> a validated CompletionRequest.
//
// Every limit is decided here, before any work: types (wrong types are 400
// naming the parameter; unknown fields are ignored as OpenAI does), both
// bounds of every number, n, stop count, message count and size, JSON nesting
// depth.
#ifndef TESSERA_GATEWAY_OPENAI_REQUEST_H_
#define TESSERA_GATEWAY_OPENAI_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::gateway {

struct ChatTurn {
  std::string role;
  std::string content;
};

// Structured output asked for by response_format (OpenAI) or guided_json,
// guided_regex, guided_choice (vLLM); the worker compiles and enforces it.
struct StructuredOutputSpec {
  enum class Kind { kNone, kJsonSchema, kJsonObject, kRegex, kChoice };
  Kind kind = Kind::kNone;
  std::string text;                  // kJsonSchema: the schema as JSON text; kRegex: the pattern
  std::vector<std::string> choices;  // kChoice
  std::string param;                 // the parameter it came from, for errors
};

struct CompletionRequest {
  enum class Kind { kChat, kText };
  Kind kind = Kind::kChat;
  std::string model;
  std::string adapter;  // the X-Lora-Adapter header (an adapter of `model`); not part of the body
  std::vector<ChatTurn> messages;                   // chat
  std::vector<std::string> prompts;                 // text: one choice set per prompt
  std::vector<std::vector<int32_t>> prompt_ids;     // text prompts given as token ids
  int max_tokens = 0;                               // chat: 0 is unset; text: 0 only with echo (the prompt alone)
  float temperature = 1.f;
  float top_p = 1.f;
  int n = 1;
  std::vector<std::string> stop;
  std::optional<int64_t> seed;
  float presence_penalty = 0.f;
  float frequency_penalty = 0.f;
  std::vector<std::pair<int32_t, float>> logit_bias;
  bool logprobs = false;   // chat: logprobs; text: logprobs != null
  int top_logprobs = 0;    // chat: top_logprobs; text: the logprobs integer
  // Text: the choice's text starts with the prompt; with logprobs, the
  // prompt's tokens lead the logprobs too (the first with a null logprob).
  bool echo = false;
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;  // vLLM extension, for benchmarks
  std::string user;
  StructuredOutputSpec structured;

  size_t prompt_count() const { return kind == Kind::kChat ? 1 : std::max(prompts.size(), prompt_ids.size()); }
};

struct RequestLimits {
  int max_n = 16;
  int max_depth = 32;
  size_t max_messages = 2048;
  size_t max_prompts = 64;
  size_t max_stop = 4;
  size_t max_stop_bytes = 256;
  int max_tokens_cap = 1 << 20;  // further bounded by the model's context at the worker
  size_t max_structured_bytes = 1 << 20;  // a schema's JSON text, a pattern, or all choices
  size_t max_choices = 1024;
};

absl::StatusOr<CompletionRequest> ParseChatCompletionRequest(std::string_view body, const RequestLimits& limits);
absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body, const RequestLimits& limits);

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_OPENAI_REQUEST_H_
