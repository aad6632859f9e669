#include "worker/engine/step_cost.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tessera {

int64_t StepCost::RowsWithin(double seconds) const {
  if (seconds <= fixed_seconds) return 0;
  if (per_row_seconds <= 0) return INT64_MAX;
  return static_cast<int64_t>(std::floor((seconds - fixed_seconds) / per_row_seconds));
}

absl::StatusOr<StepCost> MeasureStepCost(LlamaModel& model, KvCache& cache, int block_size, int small_rows,
                                         int large_rows, int repetitions) {
  if (small_rows < 1 || small_rows >= large_rows || large_rows > model.max_batch_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("step cost: need 1 <= ", small_rows, " < ", large_rows,
                                                   " <= ", model.max_batch_tokens()));
  }
  const int64_t blocks = (large_rows + block_size - 1) / block_size;
  if (blocks > cache.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("step cost: the KV cache has ", cache.num_blocks(),
                                                   " blocks; measuring needs ", blocks));
  }
  std::vector<int32_t> table(blocks);
  for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(b);
  const std::span<const int32_t> tables[] = {table};
  std::vector<float> logits(model.config().n_vocab);
  // Token ids cycle through a few ordinary ids; their values do not change
  // the cost.
  auto time_rows = [&](int rows) -> absl::StatusOr<double> {
    std::vector<int32_t> tokens(rows), positions(rows), row_seq(rows, 0);
    for (int i = 0; i < rows; ++i) {
      tokens[i] = (i * 7 + 1) % model.config().n_vocab;
      positions[i] = i;
    }
    const int32_t last[] = {rows - 1};
    BatchLayout layout{positions, row_seq, tables};
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = model.Forward(tokens, layout, cache, last, logits.data());
    if (!s.ok()) return s;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  // The warm-up touches every weight once (page faults, device uploads).
  if (auto warm = time_rows(small_rows); !warm.ok()) return warm.status();
  double best_small = 1e30, best_large = 1e30;
  for (int r = 0; r < std::max(1, repetitions); ++r) {
    auto s = time_rows(small_rows);
    if (!s.ok()) return s.status();
    auto l = time_rows(large_rows);
    if (!l.ok()) return l.status();
    best_small = std::min(best_small, *s);
    best_large = std::min(best_large, *l);
  }
  StepCost cost;
  // Timer noise can make the larger step look cheaper; a step never costs
  // less per row than zero.
  cost.per_row_seconds = std::max(0.0, (best_large - best_small) / (large_rows - small_rows));
  cost.fixed_seconds = std::max(0.0, best_small - cost.per_row_seconds * small_rows);
  return cost;
}

int64_t BudgetForTarget(const StepCost& cost, double target_seconds, int64_t min_rows, int64_t max_rows) {
  return std::min(max_rows, std::max(min_rows, cost.RowsWithin(target_seconds)));
}

}  // namespace tessera
