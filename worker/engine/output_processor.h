// OutputProcessor: what one sequence makes of each sampled token: the end-of-
// generation check, incremental detokenization, stop strings and max_tokens.
// Shared by the single-sequence path and the batching engine so both end
// sequences the same way.
#ifndef TESSERA_WORKER_ENGINE_OUTPUT_PROCESSOR_H_
#define TESSERA_WORKER_ENGINE_OUTPUT_PROCESSOR_H_

#include <string>
#include <vector>

#include "worker/engine/generate.h"
#include "worker/sampling/stop_matcher.h"
#include "worker/tokenizer/tokenizer.h"

namespace tessera {

class OutputProcessor {
 public:
  // REQUIRES: tokenizer outlives the processor.
  OutputProcessor(const Tokenizer& tokenizer, const GenerateRequest& request);

  struct Step {
    std::string text;            // newly completed text (may be empty)
    bool accepted = false;       // the token is part of the output
    bool finished = false;
    FinishReason reason = FinishReason::kLength;
  };
  // REQUIRES: not finished yet.
  Step Accept(const SampledToken& token);

  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::vector<SampledToken>& sampled() const { return sampled_; }
  bool finished() const { return finished_; }

 private:
  void Finish(Step& step, FinishReason reason);

  const Tokenizer& tokenizer_;
  int max_tokens_;
  bool ignore_eos_;
  Detokenizer detok_;
  StopMatcher stops_;
  std::vector<int32_t> tokens_;
  std::vector<SampledToken> sampled_;
  bool finished_ = false;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_OUTPUT_PROCESSOR_H_
