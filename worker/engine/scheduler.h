// Scheduler: iteration-level continuous batching (Orca, vLLM).
//
// Every engine step it decides which sequences run and how many of their
// tokens: running sequences first (a decode needs one token; a prompt still
// being prefilled takes what the token and time budgets allow, so a long
// prompt is chunked and never stalls the others), then waiting sequences in arrival
// order while the budget, the sequence limit and KV blocks allow. When the
// KV cache cannot hold a running sequence's next tokens, the most recently
// arrived running sequence is preempted: its blocks are freed and it goes
// back to the front of the queue to be recomputed later.
//
// The scheduler owns sequence placement only; sequences are owned by the
// engine. Pure and deterministic: tests replay tables of expected states.
//
// Thread-safety: not thread-safe; owned by the engine thread.
#ifndef TESSERA_WORKER_ENGINE_SCHEDULER_H_
#define TESSERA_WORKER_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "worker/engine/block_manager.h"
#include "worker/engine/step_cost.h"

namespace tessera {

class LoraView;

// Device residency of LoRA adapters as the scheduler sees it. Every running
// sequence with an adapter holds one pin on it, so the adapters of a step are
// always on the device, and there are never more distinct adapters in a step
// than device slots. Adapter 0 is the base model and needs no pin.
class AdapterGate {
 public:
  enum class Pin {
    kPinned,       // on the device; pinned for the caller
    kLoading,      // being loaded (or queued to be): try again later
    kWaitForSlot,  // loaded to host memory, but every device slot is pinned
    kFailed,       // cannot be used (see Failure)
  };
  virtual ~AdapterGate() = default;
  virtual Pin TryPin(uint64_t adapter) = 0;
  virtual void Unpin(uint64_t adapter) = 0;
  virtual bool IsPinned(uint64_t adapter) const = 0;
  // Why TryPin returned kFailed.
  virtual absl::Status Failure(uint64_t adapter) const = 0;
  // The device copy of a pinned adapter, for the forward pass.
  virtual const LoraView* View(uint64_t adapter) const = 0;
};

struct SchedulerOptions {
  int max_num_seqs = 32;             // sequences in one step
  int max_num_batched_tokens = 512;  // tokens (rows) in one step
  // Rows whose logits one step may need; 0: max_num_seqs (the Engine sets
  // it to what its model's forward pass can return). Each sequence of a
  // step may need one (its last row); only prompt-logprob prefills need
  // more, and they share the max_logit_rows - max_num_seqs rows beyond that.
  int max_logit_rows = 0;
  // Stall-free time budget; 0: none (only the token budget counts). With a
  // step cost (Scheduler::SetStepCost), prompt chunks are cut so that the
  // step's predicted time stays within this: every decode runs, and prompts
  // share what time is left, their late chunks (long attention) shorter
  // than their first. A step advances prompts by at least one token even
  // when decodes alone fill the target, so arrivals are never starved.
  double step_target_seconds = 0;
};

// What the scheduler needs to know of a sequence.
struct SchedSequence {
  uint64_t id = 0;
  std::vector<int32_t> tokens;   // prompt + generated so far
  int64_t num_computed = 0;      // tokens whose K/V are in the cache
  uint64_t salt = 0;             // prefix-cache namespace (e.g. the adapter)
  uint64_t adapter = 0;          // LoRA adapter id; 0: the base model
  std::vector<int32_t> block_table;
  BlockManager::Chain block_chain;  // the prefix cache's view of the full blocks
  int preemptions = 0;
  // Rows at positions below this need their logits too, not only the last
  // one (prompt logprobs: every prompt position but the last). While it is
  // set the sequence takes no prefix-cache hits (cached blocks come without
  // logits), and its prefill chunks are bounded by the step's logit rows.
  // The owner clears it once those logits are consumed, so a later
  // recompute (after preemption) is an ordinary one.
  int64_t all_logits_until = 0;
};

struct ScheduledSequence {
  SchedSequence* seq;
  int64_t num_tokens;   // rows this step: tokens [num_computed, num_computed + num_tokens)
  bool needs_logits;    // the last row is the sequence's last known token
};

// Whether the row at `position` of a step that runs `n` tokens of `seq`
// (from seq.num_computed) needs its logits: below seq.all_logits_until, or
// the sequence's last known token.
inline bool RowNeedsLogits(const SchedSequence& seq, int64_t n, int64_t position) {
  return position < seq.all_logits_until ||
         (position == seq.num_computed + n - 1 && position + 1 == static_cast<int64_t>(seq.tokens.size()));
}
// How many rows of such a step need logits.
int64_t LogitRows(const SchedSequence& seq, int64_t n);

class Scheduler {
 public:
  // `adapters` may be null when no sequence uses an adapter.
  Scheduler(const SchedulerOptions& options, BlockManager& blocks, AdapterGate* adapters = nullptr)
      : options_(options), blocks_(blocks), adapters_(adapters) {}

  void AddWaiting(SchedSequence* seq) { waiting_.push_back(seq); }
  // Removes a sequence wherever it is and frees its blocks.
  void Remove(SchedSequence* seq);

  // Plans one step. Sequences it returns are in `running()`. A waiting
  // sequence whose adapter is not on the device yet is passed over (its load
  // is requested) without holding up those behind it; when its adapter waits
  // for a device slot, only sequences whose adapters are already pinned are
  // admitted after it, so that slots drain and it cannot starve.
  std::vector<ScheduledSequence> Schedule();
  // Waiting sequences whose adapter failed to load, removed from the queue
  // by the last Schedule; the caller finishes them with the gate's Failure.
  std::vector<SchedSequence*> TakeFailed() { return std::exchange(failed_, {}); }
  // Records that a step ran: advances num_computed and registers full blocks.
  void Commit(const std::vector<ScheduledSequence>& step);

  // The step-time model the time budget plans with (kept current by the
  // owner as it measures steps).
  void SetStepCost(const StepCost& cost) { step_cost_ = cost; }
  // The predicted time of a planned step (0 without a step cost).
  double PredictSeconds(const std::vector<ScheduledSequence>& step) const;

  const std::deque<SchedSequence*>& running() const { return running_; }
  const std::deque<SchedSequence*>& waiting() const { return waiting_; }
  uint64_t preemptions() const { return preemptions_; }

 private:
  void Preempt(SchedSequence* seq);
  void Unpin(SchedSequence* seq);

  SchedulerOptions options_;
  BlockManager& blocks_;
  AdapterGate* adapters_;
  std::optional<StepCost> step_cost_;
  std::vector<SchedSequence*> failed_;
  std::deque<SchedSequence*> running_;  // in admission order
  std::deque<SchedSequence*> waiting_;  // in arrival order (preempted ones in front)
  uint64_t preemptions_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_SCHEDULER_H_
