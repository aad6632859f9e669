#include "worker/engine/step_cost.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tessera {

int64_t StepCost::RowsWithin(double seconds) const {
  if (seconds <= fixed_seconds) return 0;
  return ChunkWithin(0, seconds - fixed_seconds);
}

int64_t StepCost::ChunkWithin(int64_t position, double seconds) const {
  if (seconds <= 0) return 0;
  // per_pair/2 n^2 + (per_row + per_pair (position + 1/2)) n <= seconds.
  const double a = per_pair_seconds / 2;
  const double b = per_row_seconds + per_pair_seconds * (static_cast<double>(position) + 0.5);
  // Beyond any step (and small enough that AttendedPairs cannot overflow).
  constexpr int64_t kUnbounded = int64_t{1} << 30;
  if (a <= 0 && b <= 0) return kUnbounded;
  const double root = a > 0 ? (-b + std::sqrt(b * b + 4 * a * seconds)) / (2 * a) : seconds / b;
  if (!(root < static_cast<double>(kUnbounded))) return kUnbounded;
  auto n = static_cast<int64_t>(std::floor(root));
  // The closed form can land one off either way in floating point.
  while (n > 0 && ChunkSeconds(position, n) > seconds) --n;
  while (ChunkSeconds(position, n + 1) <= seconds) ++n;
  return n;
}

namespace {

struct Sample {
  double rows, pairs, seconds;
};

// Least squares for t = f + r * rows + p * pairs on the relative error
// (each sample weighted by 1 / t^2: the samples span milliseconds to
// hundreds of them, and a step target is a relative promise at every size),
// with every term kept non-negative (timer noise can make a larger step look
// cheaper): a term that comes out negative is dropped and the rest refitted.
StepCost Fit(const std::vector<Sample>& samples, bool fit_pairs) {
  for (const bool with_pairs : {true, false}) {
    if (with_pairs && !fit_pairs) continue;
    const int k = with_pairs ? 3 : 2;
    double m[3][4] = {};
    for (const Sample& s : samples) {
      const double x[3] = {1, s.rows, s.pairs};
      const double w = 1.0 / std::max(s.seconds * s.seconds, 1e-18);
      for (int i = 0; i < k; ++i) {
        for (int j = 0; j < k; ++j) m[i][j] += w * x[i] * x[j];
        m[i][3] += w * x[i] * s.seconds;
      }
    }
    // Gaussian elimination with partial pivoting on the k x k normal equations.
    bool singular = false;
    for (int c = 0; c < k && !singular; ++c) {
      int pivot = c;
      for (int r = c + 1; r < k; ++r) {
        if (std::abs(m[r][c]) > std::abs(m[pivot][c])) pivot = r;
      }
      if (std::abs(m[pivot][c]) < 1e-300) {
        singular = true;
        break;
      }
      std::swap(m[c], m[pivot]);
      for (int r = 0; r < k; ++r) {
        if (r == c) continue;
        const double f = m[r][c] / m[c][c];
        for (int j = c; j < 4; ++j) m[r][j] -= f * m[c][j];
      }
    }
    if (singular) continue;
    double coef[3] = {0, 0, 0};
    for (int i = 0; i < k; ++i) coef[i] = m[i][3] / m[i][i];
    if (with_pairs && coef[2] < 0) continue;
    StepCost cost{.fixed_seconds = coef[0], .per_row_seconds = std::max(0.0, coef[1]),
                  .per_pair_seconds = coef[2]};
    if (coef[1] < 0 || coef[0] < 0) {
      // Through the smallest step, with what the larger ones add per row.
      cost.per_row_seconds = std::max(0.0, coef[1]);
      const Sample& smallest = *std::min_element(samples.begin(), samples.end(),
                                                 [](const Sample& x, const Sample& y) { return x.rows < y.rows; });
      cost.fixed_seconds = std::max(0.0, smallest.seconds - cost.per_row_seconds * smallest.rows -
                                             cost.per_pair_seconds * smallest.pairs);
    }
    return cost;
  }
  // Degenerate samples: the smallest step's time, all of it fixed.
  double t = 1e30;
  for (const Sample& s : samples) t = std::min(t, s.seconds);
  return {.fixed_seconds = t};
}

}  // namespace

absl::StatusOr<StepCost> MeasureStepCost(LlamaModel& model, KvCache& cache, int block_size, int small_rows,
                                         int large_rows, int repetitions) {
  if (small_rows < 1 || small_rows >= large_rows || large_rows > model.max_batch_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("step cost: need 1 <= ", small_rows, " < ", large_rows,
                                                   " <= ", model.max_batch_tokens()));
  }
  const int64_t min_blocks = (large_rows + block_size - 1) / block_size;
  if (min_blocks > cache.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("step cost: the KV cache has ", cache.num_blocks(),
                                                   " blocks; measuring needs ", min_blocks));
  }
  // Chunks of large_rows at positions 0, large_rows, 2 large_rows, ...: each
  // fills the K/V the next attends to, so every timed row attends to real
  // keys. Three chunks put the last at 2-3x the first's attention per row.
  int chunks = 1;
  while (chunks < 3 && (chunks + 1) * static_cast<int64_t>(large_rows) <= model.config().n_ctx_train &&
         ((chunks + 1) * static_cast<int64_t>(large_rows) + block_size - 1) / block_size <= cache.num_blocks()) {
    ++chunks;
  }
  // Far chunks, at 8, 16, 32 and 64 times large_rows as the context and the
  // cache allow: their rows attend to keys no chunk wrote, which costs what
  // real keys cost. Attention per key grows once K/V outgrow the CPU's
  // caches, so a slope taken over the first few hundred keys alone
  // underestimated a 2,000-token prompt's late chunks by about 2x.
  const int64_t capacity = std::min<int64_t>(model.config().n_ctx_train, cache.num_blocks() * int64_t{block_size});
  std::vector<int64_t> far_positions;
  for (int64_t p = 8 * int64_t{large_rows}; p <= 64 * int64_t{large_rows} && p + large_rows <= capacity; p *= 2) {
    far_positions.push_back(p);
  }
  const int64_t last_row_end =
      far_positions.empty() ? static_cast<int64_t>(chunks) * large_rows : far_positions.back() + large_rows;
  const int64_t blocks = (last_row_end + block_size - 1) / block_size;
  std::vector<int32_t> table(blocks);
  for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(b);
  const std::span<const int32_t> tables[] = {table};
  std::vector<float> logits(model.config().n_vocab);
  // Token ids cycle through a few ordinary ids; their values do not change
  // the cost.
  auto time_rows = [&](int64_t position, int rows) -> absl::StatusOr<double> {
    std::vector<int32_t> tokens(rows), positions(rows), row_seq(rows, 0);
    for (int i = 0; i < rows; ++i) {
      tokens[i] = static_cast<int32_t>(((position + i) * 7 + 1) % model.config().n_vocab);
      positions[i] = static_cast<int32_t>(position + i);
    }
    const int32_t last[] = {rows - 1};
    BatchLayout layout{positions, row_seq, tables};
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = model.Forward(tokens, layout, cache, last, logits.data());
    if (!s.ok()) return s;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  // The warm-up touches every weight once (page faults, device uploads).
  if (auto warm = time_rows(0, small_rows); !warm.ok()) return warm.status();
  // Points: (position, rows); best time of each over the repetitions.
  std::vector<std::pair<int64_t, int>> points = {{0, small_rows}};
  for (int c = 0; c < chunks; ++c) points.push_back({static_cast<int64_t>(c) * large_rows, large_rows});
  for (int64_t p : far_positions) points.push_back({p, large_rows});
  std::vector<double> best(points.size(), 1e30);
  for (int r = 0; r < std::max(1, repetitions); ++r) {
    for (size_t i = 0; i < points.size(); ++i) {
      auto t = time_rows(points[i].first, points[i].second);
      if (!t.ok()) return t.status();
      best[i] = std::min(best[i], *t);
    }
  }
  std::vector<Sample> samples;
  for (size_t i = 0; i < points.size(); ++i) {
    samples.push_back({static_cast<double>(points[i].second),
                       static_cast<double>(AttendedPairs(points[i].first, points[i].second)), best[i]});
  }
  // Position 0 alone cannot tell attention from rows.
  return Fit(samples, /*fit_pairs=*/chunks > 1 || !far_positions.empty());
}

int64_t BudgetForTarget(const StepCost& cost, double target_seconds, int64_t min_rows, int64_t max_rows) {
  return std::min(max_rows, std::max(min_rows, cost.RowsWithin(target_seconds)));
}

void StepCostTracker::Observe(double predicted_seconds, double actual_seconds) {
  if (!(predicted_seconds >= 1e-3) || !(actual_seconds > 0)) return;
  // current() predicted it, so the ratio corrects the current factor.
  const double ratio = actual_seconds / predicted_seconds;
  constexpr double kWeight = 0.2;  // about the last 5 steps: a load that comes and goes is followed
  constexpr double kBound = 2.772588722239781;  // ln 16
  log_factor_ = std::clamp(log_factor_ + kWeight * std::log(ratio), -kBound, kBound);
  factor_ = std::exp(log_factor_);
  current_ = measured_.Scaled(factor_);
}

}  // namespace tessera
