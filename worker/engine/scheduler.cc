#include "worker/engine/scheduler.h"

#include <algorithm>

namespace tessera {

int64_t LogitRows(const SchedSequence& seq, int64_t n) {
  const int64_t nc = seq.num_computed;
  int64_t rows = std::max<int64_t>(0, std::min(nc + n, seq.all_logits_until) - nc);
  const int64_t last = nc + n - 1;
  if (n > 0 && last + 1 == static_cast<int64_t>(seq.tokens.size()) && last >= seq.all_logits_until) ++rows;
  return rows;
}

namespace {

// The tokens of `seq` a step may run, at most `n`, so that its logit rows
// fit in its own one plus `extra` shared ones. Only a prompt-logprob prefill
// is ever cut: any other sequence needs at most one row.
int64_t FitLogits(const SchedSequence& seq, int64_t n, int64_t extra) {
  const int64_t allowed = 1 + extra;
  // Rows needing logits are distinct rows, so n tokens need at most n: a cut
  // to `allowed` tokens always fits.
  return LogitRows(seq, n) > allowed ? allowed : n;
}

}  // namespace

void Scheduler::Unpin(SchedSequence* seq) {
  if (seq->adapter != 0 && adapters_ != nullptr) adapters_->Unpin(seq->adapter);
}

void Scheduler::Remove(SchedSequence* seq) {
  if (std::find(running_.begin(), running_.end(), seq) != running_.end()) {
    running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
    Unpin(seq);
  }
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
  blocks_.Free(seq->block_table, seq->block_chain);
}

void Scheduler::Preempt(SchedSequence* seq) {
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  Unpin(seq);
  blocks_.Free(seq->block_table, seq->block_chain);
  seq->num_computed = 0;
  ++seq->preemptions;
  ++preemptions_;
  waiting_.push_front(seq);
}

std::vector<ScheduledSequence> Scheduler::Schedule() {
  std::vector<ScheduledSequence> out;
  int64_t budget = options_.max_num_batched_tokens;
  bool preempted = false;
  // Logit rows beyond the one each sequence of the step may need (a step
  // holds at most max_num_seqs sequences).
  const int max_logit_rows = options_.max_logit_rows > 0 ? options_.max_logit_rows : options_.max_num_seqs;
  int64_t extra_logits = std::max(0, max_logit_rows - options_.max_num_seqs);
  // The time budget: what is left of the target after the step's fixed cost
  // and the rows taken so far (decodes are charged too, never cut).
  const bool timed = step_cost_.has_value() && options_.step_target_seconds > 0;
  double time_left = timed ? options_.step_target_seconds - step_cost_->fixed_seconds : 0;
  bool prompt_progress = false;
  auto take = [&](SchedSequence* seq, int64_t n, bool prompt) {
    out.push_back({seq, n, seq->num_computed + n == static_cast<int64_t>(seq->tokens.size())});
    budget -= n;
    extra_logits -= std::max<int64_t>(0, LogitRows(*seq, n) - 1);
    if (timed) time_left -= step_cost_->ChunkSeconds(seq->num_computed, n);
    prompt_progress |= prompt;
  };
  // The prompt tokens of `seq` (from num_computed) that fit what is left of
  // the time budget, at most `n`; one when none fits and no prompt has
  // advanced yet this step.
  auto fit_time = [&](const SchedSequence& seq, int64_t n) -> int64_t {
    if (!timed) return n;
    const int64_t fit = step_cost_->ChunkWithin(seq.num_computed, time_left);
    return std::min(n, fit > 0 ? fit : (prompt_progress ? 0 : 1));
  };

  // Running sequences, oldest first: every decode (one token each) before
  // any prompt chunk, so a running stream never waits on someone else's
  // prefill (Sarathi-Serve's stall-free batching); prompts still being
  // prefilled share what the budget leaves.
  for (const bool decode_pass : {true, false}) {
    for (size_t i = 0; i < running_.size() && budget > 0;) {
      SchedSequence* seq = running_[i];
      const int64_t remaining = static_cast<int64_t>(seq->tokens.size()) - seq->num_computed;
      if ((remaining <= 1) != decode_pass) {
        ++i;
        continue;
      }
      const int64_t n = FitLogits(*seq, decode_pass ? std::min(remaining, budget)
                                                    : fit_time(*seq, std::min(remaining, budget)),
                                  extra_logits);
      if (n == 0) {  // out of time for prompts this step
        ++i;
        continue;
      }
      bool self_preempted = false;
      while (!blocks_.Grow(seq->block_table, seq->num_computed + n).ok()) {
        SchedSequence* victim = running_.back();
        preempted = true;
        // Never preempt a sequence already scheduled in this step.
        const bool scheduled = std::any_of(out.begin(), out.end(), [&](const auto& s) { return s.seq == victim; });
        if (victim == seq || scheduled) {
          Preempt(seq);
          self_preempted = true;
          break;
        }
        Preempt(victim);
      }
      if (self_preempted) continue;  // running_[i] is now the next sequence
      take(seq, n, !decode_pass);
      ++i;
    }
  }

  // Waiting sequences in arrival order, unless memory was short this step.
  bool slot_starved = false;
  for (size_t i = 0; !preempted && i < waiting_.size() && budget > 0 &&
                     static_cast<int>(running_.size()) < options_.max_num_seqs;) {
    SchedSequence* seq = waiting_[i];
    if (seq->adapter != 0 && adapters_ != nullptr) {
      if (slot_starved && !adapters_->IsPinned(seq->adapter)) {
        ++i;
        continue;
      }
      const AdapterGate::Pin pin = adapters_->TryPin(seq->adapter);
      if (pin == AdapterGate::Pin::kFailed) {
        waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
        blocks_.Free(seq->block_table, seq->block_chain);
        failed_.push_back(seq);
        continue;
      }
      if (pin != AdapterGate::Pin::kPinned) {
        slot_starved |= pin == AdapterGate::Pin::kWaitForSlot;
        ++i;
        continue;
      }
    }
    // A sequence that needs its prompt's logits computes the whole prompt:
    // a cached block would come without them.
    if (seq->block_table.empty() && seq->all_logits_until == 0) {
      seq->num_computed = blocks_.MatchPrefix(seq->tokens, seq->salt, seq->block_table, seq->block_chain);
    }
    const int64_t remaining = static_cast<int64_t>(seq->tokens.size()) - seq->num_computed;
    const int64_t n = FitLogits(*seq, fit_time(*seq, std::min(remaining, budget)), extra_logits);
    if (n == 0 || !blocks_.Grow(seq->block_table, seq->num_computed + n).ok()) {
      blocks_.Free(seq->block_table, seq->block_chain);  // give back the prefix hits too
      seq->num_computed = 0;
      Unpin(seq);
      break;  // first come, first served: nobody jumps the queue for memory
    }
    waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
    running_.push_back(seq);
    take(seq, n, /*prompt=*/true);
  }
  return out;
}

double Scheduler::PredictSeconds(const std::vector<ScheduledSequence>& step) const {
  if (!step_cost_.has_value() || step.empty()) return 0;
  double t = step_cost_->fixed_seconds;
  for (const ScheduledSequence& s : step) t += step_cost_->ChunkSeconds(s.seq->num_computed, s.num_tokens);
  return t;
}

void Scheduler::Commit(const std::vector<ScheduledSequence>& step) {
  for (const ScheduledSequence& s : step) {
    s.seq->num_computed += s.num_tokens;
    blocks_.CommitFull(s.seq->tokens, s.seq->num_computed, s.seq->salt, s.seq->block_table, s.seq->block_chain);
  }
}

}  // namespace tessera
