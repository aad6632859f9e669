// Generate: runs one sequence to completion (prefill in chunks, then decode)
// on a LlamaModel. This is the single-sequence path used by tessera-generate
// and the oracle tests; the batching engine shares its building blocks.
#ifndef TESSERA_WORKER_ENGINE_GENERATE_H_
#define TESSERA_WORKER_ENGINE_GENERATE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/llama_model.h"
#include "worker/sampling/sampler.h"
#include "worker/structured/constraint.h"
#include "worker/tokenizer/tokenizer.h"

namespace tessera {

enum class FinishReason { kLength, kStop, kCancelled };

struct GenerateRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int max_tokens = 16;  // 0: run the prompt only (the engine; for prompt_logprobs)
  std::vector<std::string> stop;
  bool ignore_eos = false;
  // Engine only: report every prompt token's logprob with this many
  // alternatives (JobSink::OnPromptLogprobs); unset: none.
  std::optional<int> prompt_logprobs;
  // Engine only: structured output. Each sampled token must keep the output
  // inside the constraint's language (the row's logits are masked); the
  // sequence ends (kStop) as soon as the output is complete and nothing can
  // follow. Null: free generation.
  std::shared_ptr<const structured::Constraint> constraint;
};

struct GenerateResult {
  std::vector<int32_t> tokens;
  std::vector<SampledToken> sampled;
  std::string text;
  FinishReason finish = FinishReason::kLength;
};

// One streaming event: a generated token (token != nullptr) with the text it
// completed (possibly empty: bytes of a partial character or of a possible
// stop string are held back), or the final flush of held-back text
// (token == nullptr).
struct StreamEvent {
  std::string_view text;
  const SampledToken* token = nullptr;
};
// Return false to cancel generation (FinishReason::kCancelled).
using StreamCallback = std::function<bool(const StreamEvent&)>;

// REQUIRES: the cache has room for prompt + max_tokens positions (checked:
// InvalidArgument otherwise, before any work). `adapter`: a LoRA adapter in
// backend memory, or nullptr for the base model.
absl::StatusOr<GenerateResult> Generate(LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                                        const GenerateRequest& request, const StreamCallback& on_event = {},
                                        const LoraView* adapter = nullptr);

// Runs the prompt through the model and returns the logits of its last token.
absl::StatusOr<std::vector<float>> PromptLogits(LlamaModel& model, KvCache& cache,
                                                const std::vector<int32_t>& prompt,
                                                const LoraView* adapter = nullptr);

// Generation's view of a fixed sequence: tokens [0, first) run as one
// prompt, then the rest one at a time, as Generate would have fed them.
// Returns tokens.size() - first + 1 rows of logits; row j follows the prefix
// tokens[0, first + j). For oracles that compare every generated position.
absl::StatusOr<std::vector<std::vector<float>>> SequenceLogits(LlamaModel& model, KvCache& cache,
                                                               const std::vector<int32_t>& tokens, size_t first,
                                                               const LoraView* adapter = nullptr);

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_GENERATE_H_
