#include "worker/engine/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/output_processor.h"

namespace tessera {
namespace {

// Releases the sequence's KV blocks on every exit path.
struct SequenceBlocks {
  KvCache& cache;
  std::vector<int32_t> table;
  ~SequenceBlocks() { cache.Release(table); }
};

absl::Status CheckFits(const LlamaModel& model, const KvCache& cache, size_t prompt, int max_tokens) {
  const int64_t need = static_cast<int64_t>(prompt) + std::max(max_tokens, 0);
  const int64_t ctx = model.config().n_ctx_train;
  if (prompt == 0) return absl::InvalidArgumentError("the prompt is empty");
  if (need > ctx) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt, " tokens) plus max_tokens (", max_tokens,
                                                   ") exceeds the model's context of ", ctx, " tokens"));
  }
  const int64_t capacity = cache.num_blocks() * cache.block_size();
  if (need > capacity) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt, " tokens) plus max_tokens (", max_tokens,
                                                   ") exceeds the KV cache of ", capacity, " tokens"));
  }
  return absl::OkStatus();
}

// Feeds tokens [from, to) of `tokens` at positions from.., in chunks of the
// model's batch size; writes the last row's logits to `logits` if non-null.
absl::Status Feed(LlamaModel& model, KvCache& cache, SequenceBlocks& seq, const std::vector<int32_t>& tokens,
                  size_t from, size_t to, float* logits, const LoraView* adapter) {
  TESSERA_RETURN_IF_ERROR(cache.Reserve(seq.table, static_cast<int64_t>(to)));
  const std::span<const int32_t> table(seq.table);
  const std::span<const int32_t> tables[1] = {table};
  std::vector<int32_t> positions, row_seq;
  std::vector<const LoraView*> row_adapters;
  for (size_t start = from; start < to; start += model.max_batch_tokens()) {
    const size_t end = std::min(to, start + model.max_batch_tokens());
    positions.clear();
    for (size_t p = start; p < end; ++p) positions.push_back(static_cast<int32_t>(p));
    row_seq.assign(end - start, 0);
    if (adapter != nullptr) row_adapters.assign(end - start, adapter);
    BatchLayout layout{positions, row_seq, tables};
    const int32_t last = static_cast<int32_t>(end - start - 1);
    const bool want = logits != nullptr && end == to;
    TESSERA_RETURN_IF_ERROR(model.Forward(std::span(tokens).subspan(start, end - start), layout, cache,
                                          want ? std::span<const int32_t>(&last, 1) : std::span<const int32_t>(),
                                          logits, row_adapters));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<float>> PromptLogits(LlamaModel& model, KvCache& cache,
                                                const std::vector<int32_t>& prompt, const LoraView* adapter) {
  TESSERA_RETURN_IF_ERROR(CheckFits(model, cache, prompt.size(), 0));
  SequenceBlocks seq{cache, {}};
  std::vector<float> logits(model.config().n_vocab);
  TESSERA_RETURN_IF_ERROR(Feed(model, cache, seq, prompt, 0, prompt.size(), logits.data(), adapter));
  return logits;
}

absl::StatusOr<std::vector<std::vector<float>>> SequenceLogits(LlamaModel& model, KvCache& cache,
                                                               const std::vector<int32_t>& tokens, size_t first,
                                                               const LoraView* adapter) {
  if (first < 1 || first > tokens.size()) return absl::InvalidArgumentError("the prefix must hold 1..all tokens");
  TESSERA_RETURN_IF_ERROR(CheckFits(model, cache, tokens.size(), 0));
  SequenceBlocks seq{cache, {}};
  std::vector<std::vector<float>> rows;
  rows.emplace_back(model.config().n_vocab);
  TESSERA_RETURN_IF_ERROR(Feed(model, cache, seq, tokens, 0, first, rows.back().data(), adapter));
  for (size_t i = first; i < tokens.size(); ++i) {
    rows.emplace_back(model.config().n_vocab);
    TESSERA_RETURN_IF_ERROR(Feed(model, cache, seq, tokens, i, i + 1, rows.back().data(), adapter));
  }
  return rows;
}

absl::StatusOr<GenerateResult> Generate(LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                                        const GenerateRequest& req, const StreamCallback& on_event,
                                        const LoraView* adapter) {
  const int n_vocab = model.config().n_vocab;
  if (req.max_tokens < 0) return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0; got ", req.max_tokens));
  TESSERA_RETURN_IF_ERROR(req.sampling.Validate(n_vocab));
  TESSERA_RETURN_IF_ERROR(CheckFits(model, cache, req.prompt.size(), req.max_tokens));

  GenerateResult result;
  if (req.max_tokens == 0) return result;
  SequenceBlocks seq{cache, {}};
  std::vector<int32_t> all = req.prompt;
  std::vector<float> logits(n_vocab);
  Sampler sampler(req.sampling, n_vocab, req.prompt);
  OutputProcessor out(tokenizer, req);
  TESSERA_RETURN_IF_ERROR(Feed(model, cache, seq, all, 0, all.size(), logits.data(), adapter));
  while (true) {
    SampledToken t = sampler.Sample(logits.data());
    OutputProcessor::Step step = out.Accept(t);
    if (step.accepted) sampler.Accept(t.id);
    result.text += step.text;
    const bool silent = !step.accepted && step.text.empty();
    const bool keep_going =
        silent || !on_event || on_event(StreamEvent{step.text, step.accepted ? &out.sampled().back() : nullptr});
    if (step.finished) {
      result.finish = step.reason;
      break;
    }
    if (!keep_going) {
      result.finish = FinishReason::kCancelled;
      break;
    }
    all.push_back(t.id);
    TESSERA_RETURN_IF_ERROR(Feed(model, cache, seq, all, all.size() - 1, all.size(), logits.data(), adapter));
  }
  result.tokens = out.tokens();
  result.sampled = out.sampled();
  return result;
}

}  // namespace tessera
