#include "worker/engine/output_processor.h"

namespace tessera {

OutputProcessor::OutputProcessor(const Tokenizer& tokenizer, const GenerateRequest& request)
    : tokenizer_(tokenizer),
      max_tokens_(request.max_tokens),
      ignore_eos_(request.ignore_eos),
      detok_(tokenizer),
      stops_(request.stop) {}

void OutputProcessor::Finish(Step& step, FinishReason reason) {
  // The generation ended on its own: release held-back text, which may
  // still complete a stop string.
  StopMatcher::Result tail = stops_.Push(detok_.Flush());
  step.text += tail.emit;
  if (tail.stopped) {
    reason = FinishReason::kStop;
  } else {
    step.text += stops_.Flush();
  }
  step.finished = true;
  step.reason = reason;
  finished_ = true;
}

OutputProcessor::Step OutputProcessor::Accept(const SampledToken& token) {
  Step step;
  if (!ignore_eos_ && tokenizer_.IsEndOfGeneration(token.id)) {
    Finish(step, FinishReason::kStop);
    return step;
  }
  step.accepted = true;
  tokens_.push_back(token.id);
  sampled_.push_back(token);
  StopMatcher::Result r = stops_.Push(detok_.Push(token.id));
  step.text = std::move(r.emit);
  if (r.stopped) {
    step.finished = true;
    step.reason = FinishReason::kStop;
    finished_ = true;
    return step;
  }
  if (static_cast<int>(tokens_.size()) >= max_tokens_) Finish(step, FinishReason::kLength);
  return step;
}

}  // namespace tessera
