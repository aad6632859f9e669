// StepCost: how long one engine step takes as a function of what it
// computes, measured on the model and device at hand, so that a step can be
// kept near a time target (stall-free batching) instead of being given a
// token count that is right for one machine and one context length only.
//
// The model is t = fixed + per_row * rows + per_pair * attended_pairs:
//   * `fixed`: what a step costs whatever its size (reading the weights
//     once: dominant on a GPU);
//   * `per_row`: each row's share of the matmuls (dominant on a CPU at
//     short contexts);
//   * `per_pair`: attention, per (row, cached key) pair a row attends to. A
//     row at position p attends to p + 1 keys, so the late chunks of a long
//     prompt cost far more per row than its first ones: on the 2-core CPU
//     the bundled model's row at position 2,000 costs about 5x one at
//     position 0. Without this term a budget measured at short contexts let
//     those chunks overrun the target eightfold.
#ifndef TESSERA_WORKER_ENGINE_STEP_COST_H_
#define TESSERA_WORKER_ENGINE_STEP_COST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/llama_model.h"

namespace tessera {

// The (row, key) pairs that rows for positions [position, position + n)
// attend to, each attending to every position up to its own.
constexpr int64_t AttendedPairs(int64_t position, int64_t n) { return n * position + n * (n + 1) / 2; }

struct StepCost {
  double fixed_seconds = 0;
  double per_row_seconds = 0;
  double per_pair_seconds = 0;

  double Seconds(int64_t rows, int64_t attended_pairs = 0) const {
    return fixed_seconds + per_row_seconds * static_cast<double>(rows) +
           per_pair_seconds * static_cast<double>(attended_pairs);
  }
  // What rows for positions [position, position + n) of one sequence add to
  // a step.
  double ChunkSeconds(int64_t position, int64_t n) const {
    return per_row_seconds * static_cast<double>(n) + per_pair_seconds * static_cast<double>(AttendedPairs(position, n));
  }
  // The most rows at short context (position 0 onwards, one sequence) whose
  // step fits in `seconds` (0 if not even one does; 2^30 for "unbounded").
  int64_t RowsWithin(double seconds) const;
  // The longest chunk of one sequence starting at `position` whose rows add
  // at most `seconds` to a step (0 if not even one row fits; 2^30 when the
  // cost is zero or the answer is beyond any step).
  int64_t ChunkWithin(int64_t position, double seconds) const;
  // Every term times `factor` (the online correction for the machine's
  // current speed).
  StepCost Scaled(double factor) const {
    return {fixed_seconds * factor, per_row_seconds * factor, per_pair_seconds * factor};
  }
};

// Times forward passes at two sizes at short context and at growing
// positions of one scratch sequence (best of `repetitions` per point after a
// warm-up), and fits the three terms by least squares on the relative
// error. Writes K/V into the first blocks of `cache`: call it before the
// cache holds anything.
// REQUIRES: 1 <= small_rows < large_rows <= model.max_batch_tokens(), and
// `cache` has blocks for large_rows tokens. Positions beyond large_rows are
// measured as far as the cache and the model's context allow (chunks at
// large_rows and 2 * large_rows, then single chunks at 8, 16, 32 and 64
// times large_rows); where none can be, per_pair_seconds stays 0.
absl::StatusOr<StepCost> MeasureStepCost(LlamaModel& model, KvCache& cache, int block_size, int small_rows,
                                         int large_rows, int repetitions = 2);

// The token budget of a step for a time target at short context: the rows
// that fit in `target_seconds`, at least `min_rows` (a full batch of
// decodes plus one prompt token must fit) and at most `max_rows` (the
// model's scratch).
int64_t BudgetForTarget(const StepCost& cost, double target_seconds, int64_t min_rows, int64_t max_rows);

// Keeps a StepCost true to the machine as it runs: each step's measured
// time against the model's prediction moves one multiplicative factor (an
// exponential average of the log ratio), so a measurement taken while the
// machine was busy, or a load that came later, corrects itself within about
// ten steps. The factor is bounded to [1/16, 16]. Not thread-safe.
class StepCostTracker {
 public:
  explicit StepCostTracker(const StepCost& measured) : measured_(measured), current_(measured) {}
  // Records a step predicted (by current()) to take `predicted_seconds`
  // that took `actual_seconds`. Steps predicted under 1 ms carry mostly
  // timer noise and are ignored.
  void Observe(double predicted_seconds, double actual_seconds);
  const StepCost& current() const { return current_; }
  double factor() const { return factor_; }

 private:
  StepCost measured_;
  StepCost current_;
  double factor_ = 1;
  double log_factor_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_STEP_COST_H_
