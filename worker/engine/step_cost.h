// StepCost: how long one engine step takes as a function of its rows,
// measured on the model and device at hand, so that the token budget of a
// step (max_num_batched_tokens) is chosen to keep steps near a time target
// instead of being a constant that is right for one machine only.
//
// The model is affine, t(rows) = fixed + per_row * rows: `fixed` is what a
// step costs whatever its size (reading the weights once: dominant on a GPU),
// `per_row` what each row adds (the row's share of the matmuls: dominant on
// a CPU). Decode rows and prompt rows cost alike at the short contexts it is
// measured at; attention over long contexts is not modelled.
#ifndef TESSERA_WORKER_ENGINE_STEP_COST_H_
#define TESSERA_WORKER_ENGINE_STEP_COST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/engine/kv_cache.h"
#include "worker/model/llama_model.h"

namespace tessera {

struct StepCost {
  double fixed_seconds = 0;
  double per_row_seconds = 0;

  double Seconds(int64_t rows) const { return fixed_seconds + per_row_seconds * static_cast<double>(rows); }
  // The most rows whose step fits in `seconds` (0 if not even one does).
  int64_t RowsWithin(double seconds) const;
};

// Times forward passes of `small_rows` and `large_rows` rows (one scratch
// sequence at positions 0..rows-1, best of `repetitions` after a warm-up)
// and fits the affine model through the two points. Writes K/V into the
// first blocks of `cache`: call it before the cache holds anything.
// REQUIRES: 1 <= small_rows < large_rows <= model.max_batch_tokens(), and
// `cache` has blocks for large_rows tokens.
absl::StatusOr<StepCost> MeasureStepCost(LlamaModel& model, KvCache& cache, int block_size, int small_rows,
                                         int large_rows, int repetitions = 2);

// The token budget of a step for a time target (stall-free batching): the
// rows that fit in `target_seconds`, at least `min_rows` (a full batch of
// decodes plus one prompt token must fit) and at most `max_rows` (the
// model's scratch).
int64_t BudgetForTarget(const StepCost& cost, double target_seconds, int64_t min_rows, int64_t max_rows);

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_STEP_COST_H_
