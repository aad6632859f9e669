// Fuzz target: the gateway's OpenAI request parser, on the bytes a client
// sends as the body. The first byte picks the endpoint (even: chat
// completions, odd: completions); the rest is the body. Any bytes parse or
// fail with a Status carrying a message (never an exception, crash or hang),
// and a parsed request is within the limits it was parsed under.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "gateway/openai/request.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  tessera::gateway::RequestLimits limits;
  limits.max_messages = 64;
  limits.max_prompts = 16;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto r = (data[0] & 1) != 0 ? tessera::gateway::ParseCompletionRequest(body, limits)
                              : tessera::gateway::ParseChatCompletionRequest(body, limits);
  if (!r.ok()) {
    Check(!r.status().message().empty());
    return 0;
  }
  Check(!r->model.empty() && r->model.size() <= 256);
  Check(r->n >= 1 && r->n <= limits.max_n);
  Check(r->max_tokens >= 0 && r->max_tokens <= limits.max_tokens_cap);
  Check(std::isfinite(r->temperature) && r->temperature >= 0 && r->temperature <= 2);
  Check(std::isfinite(r->top_p) && r->top_p > 0 && r->top_p <= 1);
  Check(r->presence_penalty >= -2 && r->presence_penalty <= 2);
  Check(r->frequency_penalty >= -2 && r->frequency_penalty <= 2);
  Check(r->stop.size() <= limits.max_stop);
  for (const auto& s : r->stop) Check(!s.empty() && s.size() <= limits.max_stop_bytes);
  for (const auto& [id, bias] : r->logit_bias) Check(id >= 0 && bias >= -100 && bias <= 100);
  if (r->kind == tessera::gateway::CompletionRequest::Kind::kChat) {
    Check(!r->messages.empty() && r->messages.size() <= limits.max_messages);
  } else {
    Check(r->prompt_count() >= 1 && r->prompt_count() <= limits.max_prompts);
  }
  return 0;
}
