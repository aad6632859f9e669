// AutoAWQ's searches (awq/quantize/quantizer.py, 0.2.9: _search_best_scale,
// _compute_best_scale with duo scaling, pseudo_quantize_tensor, and
// _compute_best_clip), re-implemented on float32 matrices. The drivers
// (awq_quantize.cc) run the module forward passes the losses compare.
//
// Determinism: every sum has a fixed order independent of the thread count.
#ifndef TESSERA_TOOLS_QUANTIZE_AWQ_SEARCH_H_
#define TESSERA_TOOLS_QUANTIZE_AWQ_SEARCH_H_

#include <cstdint>
#include <vector>

#include "tools/quantize/group_context.h"

namespace tessera::quantize {

inline constexpr int kAwqGrid = 20;          // ratios 0, 1/20, ..., 19/20
inline constexpr int kAwqClipSteps = 10;     // shrinks 1, 0.95, ..., 0.55 (max_shrink 0.5)
inline constexpr int kAwqClipTokens = 512;   // n_sample_token

// w_mean: per input channel, the mean over all rows of the stacked `linears`
// of |w| / (max |w| of its group + 1e-6).
std::vector<float> AwqWeightMean(const std::vector<const DenseMatrix*>& linears, int64_t group_size);

// Per-column mean of |x| over all rows added (x_mean).
class AbsMeanAccumulator {
 public:
  explicit AbsMeanAccumulator(int64_t cols) : sum_(cols, 0.0) {}
  void Add(const float* x, int64_t rows);
  std::vector<float> Mean() const;

 private:
  std::vector<double> sum_;
  int64_t rows_ = 0;
};

// The candidate scales for `ratio`: clamp(x_mean^r / (w_mean^(1-r) + 1e-4),
// 1e-4), divided by sqrt(max * min); non-finite entries become 1.
std::vector<float> AwqScales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, double ratio);

// In place, per row and group: AutoAWQ's zero-point pseudo-quantization
// (4-bit, float32 scale, no f16 rounding).
void AwqPseudoQuantize(float* w, int64_t rows, int64_t cols, int64_t group_size);

// Q(W diag(s)) diag(s)⁻¹: the weight the scale search evaluates.
DenseMatrix AwqScaledQuantized(const DenseMatrix& w, const std::vector<float>& s, int64_t group_size);

// Σ (a - b)² over n values, in a fixed order.
double SquaredError(const float* a, const float* b, int64_t n);

// The clipping search for one linear: `feats` are ntok input rows (already
// divided by the layer's scales); returns the best max |w| per row and group
// ([rows][groups]) over the shrink grid, by the mean squared error of each
// group's partial output.
std::vector<float> AwqClipSearch(const DenseMatrix& w, const float* feats, int64_t ntok, int64_t group_size);
// w = clamp(w, -max_val, max_val) per row and group.
void AwqApplyClip(DenseMatrix& w, const std::vector<float>& max_val, int64_t group_size);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_AWQ_SEARCH_H_
