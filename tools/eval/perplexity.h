// Perplexity of a model over a text, measured the way llama.cpp's perplexity
// tool measures it with its default options, and (given a base model) the KL
// divergence and top-token agreement of the model against the base on the
// same tokens.
//
// The method (llama.cpp tools/perplexity, perplexity() with ppl_stride 0):
//  - the whole text is tokenized once, without parsing special tokens, with
//    BOS in front when the tokenizer adds BOS;
//  - it is cut into non-overlapping windows of n_ctx tokens (a tail shorter
//    than a window is dropped); each window runs from an empty KV cache,
//    and when the tokenizer adds BOS the window's first token is replaced by
//    BOS for the run (the original token stays in the sequence);
//  - only the second half is scored: the logits at window positions
//    first = n_ctx/2 .. n_ctx-2 against the tokens at first+1 .. n_ctx-1,
//    n_ctx/2 - 1 positions per window;
//  - ppl = exp(mean NLL), and its uncertainty ppl * sqrt(var(NLL)/(N-1)),
//    var taken as E[NLL^2] - E[NLL]^2 over all N scored positions.
// Statistics are computed in double from float logits; every window is
// processed and discarded before the next, so memory does not grow with the
// text.
#ifndef TESSERA_TOOLS_EVAL_PERPLEXITY_H_
#define TESSERA_TOOLS_EVAL_PERPLEXITY_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/model_bundle.h"
#include "worker/tokenizer/tokenizer.h"

namespace tessera::eval {

inline constexpr int kMinContext = 16;

inline constexpr int kMaxBatchTokens = 2048;  // llama.cpp's default n_batch
// Logit rows per Forward call: each model holds this many vocabulary-sized
// rows twice (its scratch and the host copy); 256 keeps a window of 512 in
// one call.
inline constexpr int kMaxLogitRows = 256;

// Model shapes for evaluating windows of `ctx` tokens: the batch and logit
// row limits to load a model with. `batch`: tokens per Forward call, 0 for
// min(ctx, kMaxBatchTokens). Bounded whatever `ctx` is, so that a long
// context costs more Forward calls rather than unbounded scratch.
// REQUIRES: ctx >= kMinContext, 0 <= batch <= kMaxBatchTokens.
struct EvalShape {
  int max_batch_tokens;
  int max_logit_rows;
};
EvalShape EvalShapeFor(int ctx, int batch = 0);

// One Forward call of a window: rows [begin, end) of the window, of which
// the logits of rows [logits_begin, logits_end) are scored (possibly none).
struct WindowPiece {
  int begin, end;
  int logits_begin, logits_end;
};
// Splits a window of `ctx` tokens into as few pieces as the limits allow.
// REQUIRES: ctx >= 4 and even; limits >= 1.
std::vector<WindowPiece> PlanWindow(int ctx, int max_batch_tokens, int max_logit_rows);

// The text's tokens as llama.cpp's perplexity tool gets them for a model
// with this tokenizer (see the method above).
std::vector<int32_t> TokenizeForPerplexity(const Tokenizer& tokenizer, std::string_view text);

// log(sum(exp(logits))) in double, and the first index of the maximum.
struct RowNormalizer {
  double log_z;
  int32_t argmax;
};
RowNormalizer NormalizeRow(std::span<const float> logits);
// KL(P_base || P_model) of two rows with their normalizers, in double over
// the whole vocabulary. REQUIRES: equal sizes.
double KlDivergence(std::span<const float> base, const RowNormalizer& base_norm, std::span<const float> model,
                    const RowNormalizer& model_norm);

struct PerplexityOptions {
  int ctx = 512;
  int chunks = 0;   // windows to evaluate; 0 or more than the text holds: all
  int threads = 0;  // for the per-row statistics; 0: OpenMP's default
};

// Mean and llama.cpp's uncertainty of the mean, sqrt(var/(N-1)), of
// accumulated sums.
struct Accumulator {
  double sum = 0, sum2 = 0;
  int64_t count = 0;
  void Add(double v) {
    sum += v;
    sum2 += v * v;
    ++count;
  }
  double mean() const { return count > 0 ? sum / static_cast<double>(count) : 0.0; }
  // Unset with fewer than two values.
  std::optional<double> stderr_of_mean() const;
};

struct PerplexityResult {
  int chunks = 0;
  int64_t tokens_scored = 0;
  Accumulator nll;       // the model's NLL per scored position
  double seconds = 0;    // wall time of the windows (model load and tokenizing excluded)
  // With a base model only.
  Accumulator nll_base;
  Accumulator kld;       // KL(P_base || P_model) per scored position
  int64_t same_top = 0;  // positions where both models' argmax agree
};

struct ChunkProgress {
  int chunk = 0;  // 1-based
  int chunks = 0;
  double chunk_seconds = 0;
  const PerplexityResult* so_far = nullptr;
};

// Evaluates `model` (and `base`, if not null, on the same windows) over
// `tokens` as TokenizeForPerplexity gives them. `add_bos`/`bos_id`: the BOS
// rule of the tokenizer the tokens came from. The models must have been
// loaded with EvalShapeFor(options.ctx) or larger limits.
// InvalidArgument if the tokens hold no whole window, the models' vocabulary
// sizes differ, or a model produces a non-finite logit row.
absl::StatusOr<PerplexityResult> EvaluatePerplexity(ModelBundle& model, ModelBundle* base,
                                                    std::span<const int32_t> tokens, bool add_bos, int32_t bos_id,
                                                    const PerplexityOptions& options,
                                                    const std::function<void(const ChunkProgress&)>& progress = {});

}  // namespace tessera::eval

#endif  // TESSERA_TOOLS_EVAL_PERPLEXITY_H_
