// Sampler: turns one step's logits into the next token for one sequence.
//
// Order of processing (as vLLM): logit bias, repetition penalty (prompt and
// output tokens), presence/frequency penalties (output tokens), then greedy
// argmax when temperature == 0, else temperature, top-k, top-p, min-p and a
// draw from the seeded generator. Log-probabilities are reported from the
// model's own distribution (raw logits), as vLLM does by default.
//
// Thread-safety: one Sampler per sequence, used by one thread.
#ifndef TESSERA_WORKER_SAMPLING_SAMPLER_H_
#define TESSERA_WORKER_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace tessera {

struct SamplingParams {
  float temperature = 1.f;         // 0: greedy
  int top_k = 0;                   // 0: off
  float top_p = 1.f;               // 1: off
  float min_p = 0.f;               // 0: off
  float repetition_penalty = 1.f;  // 1: off
  float presence_penalty = 0.f;
  float frequency_penalty = 0.f;
  std::optional<uint64_t> seed;    // unset: random
  std::vector<std::pair<int32_t, float>> logit_bias;
  int top_logprobs = 0;            // alternatives to report per token
  bool logprobs = false;           // report the chosen token's logprob

  // Checks every bound (and NaN); messages name the field and value.
  absl::Status Validate(int vocab_size) const;
};

struct SampledToken {
  int32_t id = -1;
  float logprob = 0.f;  // valid when logprobs or top_logprobs requested
  std::vector<std::pair<int32_t, float>> top;  // best first
};

// The log-probability of `token` under the model's distribution `logits`
// (vocab_size raw logits, not modified) and the `top` most likely tokens,
// best first (ties: the lower id), computed exactly as Sample reports them.
// For prompt logprobs: one call per prompt row, with no per-vocabulary
// allocation, so rows can run in parallel.
SampledToken ScoreToken(std::span<const float> logits, int32_t token, int top);

class Sampler {
 public:
  // REQUIRES: params.Validate(vocab_size).ok().
  Sampler(const SamplingParams& params, int vocab_size, std::span<const int32_t> prompt);

  // Picks the next token from `logits` (vocab_size floats; modified in place).
  // `allowed` (structured output): one bit per token id (bit id % 64 of
  // word id / 64); only a token whose bit is set can be picked. Logprobs
  // still report the model's own distribution. Null: every token.
  // REQUIRES: allowed is null or has at least one bit set.
  SampledToken Sample(float* logits, const uint64_t* allowed = nullptr);
  // Records a generated token for the penalties.
  void Accept(int32_t id);

 private:
  double Uniform();

  SamplingParams p_;
  int vocab_;
  std::mt19937_64 rng_;
  absl::flat_hash_map<int32_t, int> output_counts_;
  absl::flat_hash_map<int32_t, bool> seen_;  // prompt + output, for repetition penalty
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SAMPLING_SAMPLER_H_
