// EXL2 (ExLlamaV2's variable-bitrate format) for one linear layer: the
// candidate bit mixes the measurement pass tries, their storage cost, the
// GPTQ solve at a mix with EXL2's 4-bit-with-maximum scales, the packed
// tensors, and the optimizer that picks one mix per linear for a target
// average bits per weight. The layout is documented in
// tools/checkpoints/exl2_format.py (the independent reference the tests hold
// these bytes to) and worker/model/exl2_format.cc (the loader).
//
// Method, after exllamav2's published converter (conversion/measure.py,
// optimize.py, qparams.py, adaptivegptq.py; no code copied):
//   * the input rows of W (columns of W in HF's [out][in] layout) are put in
//     act order, by decreasing Hessian diagonal, and cut into groups along
//     that order: the widest bit widths first (exllamav2 stores widths
//     non-increasing along the packed rows), so the inputs that carry the
//     most energy get the most bits;
//   * each group has one float16 maximum scale (q_scale_max) and, per output
//     feature, a 4-bit code k in 1..16 for the scale
//     f16(k^2 * f16(q_scale_max / 256)); codes are symmetric around
//     2^(bits-1). Here k is searched per output feature for the least squared
//     rounding error of the group's weights as GPTQ sees them when the group
//     comes up;
//   * GPTQ's error feedback runs over the groups in act order, with the
//     Cholesky factor of the damped inverse Hessian shared by every mix;
//   * the error of a mix is ||(W - Q) X||^2 / ||W X||^2 through the damped
//     Hessian, which GPTQ yields for free: with U the upper Cholesky factor of
//     H^-1 and e_c = (w_c - q_c) / U_cc the per-column errors it feeds back,
//     W - Q = e U row by row, and (W - Q) H (W - Q)^T = e U H U^T e^T = |e|^2.
//
// Determinism: per-row work is independent and each reduction has a fixed
// order, so the bytes do not depend on the thread count.
#ifndef TESSERA_TOOLS_QUANTIZE_EXL2_QUANT_H_
#define TESSERA_TOOLS_QUANTIZE_EXL2_QUANT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/quantize/group_quant.h"

namespace tessera::quantize {

// A candidate setting for one matrix: (bits, proportion of the input rows)
// in decreasing width, and the rows per group (a multiple of 32, which
// Tessera's Q4G/Q8G blocks need).
struct Exl2Mix {
  std::vector<std::pair<int, double>> widths;
  int group_size = 128;
  std::string Name() const;  // "4:0.25,3:0.75@64", the reference packer's spelling
};

// The measurement table, in increasing cost: pure widths and two-width
// mixes covering about 2.1 to 8.1 bits per weight, the range of exllamav2's
// qparams tables (3:0.05,2:0.95@64 to 8@128), not reproducing them entry for
// entry. exllamav2 measures joint options per attention block (q, k, v, o)
// and per MLP block (gate, up, down); here every linear takes its own mix,
// so the optimizer can trade bits between, e.g., v_proj and q_proj.
const std::vector<Exl2Mix>& Exl2Candidates();

// The output head's mix for --head-bits 2, 3, 4, 5, 6 or 8: exllamav2's
// qparams_headoptions (a fixed mix per width, not measured); nullopt for
// any other width.
std::optional<Exl2Mix> Exl2HeadMix(int head_bits);

struct Exl2Group {
  int bits = 0;
  int64_t first_row = 0;  // in act order
  int64_t rows = 0;
};

// The groups of a matrix with `in` input rows at `mix`, by exllamav2's
// AdaptiveGPTQ.configure rule (as tools/checkpoints/exl2_format.py's
// group_plan): per width ceil(min(in * p, remaining) / group_size) groups,
// the last cut at `in`. REQUIRES: in % 32 == 0.
std::vector<Exl2Group> Exl2GroupPlan(int64_t in, const Exl2Mix& mix);

// Storage bits as exllamav2's QParams.total_bits counts them (and
// exl2_format.bits_per_weight): the codes, 16 + 32 bits per group
// (q_scale_max, q_groups), 4 per group and output (q_scale), 32 per input
// row (q_invperm).
int64_t Exl2StorageBits(int64_t out, int64_t in, const std::vector<Exl2Group>& plan);

// One quantized matrix [out][in]: codes in act order.
struct Exl2Linear {
  int64_t out = 0, in = 0;
  std::vector<Exl2Group> groups;
  std::vector<int32_t> perm;      // act-order position p holds input row perm[p]
  std::vector<uint8_t> codes;     // out * in, [r][p]
  std::vector<uint8_t> qscale;    // groups * out, each 1..16
  std::vector<uint16_t> qscale_max;  // per group, f16 bits
  // The weights Tessera's loader computes, [out][in] in HF order:
  // (code - 2^(bits-1)) * f16((k^2) * f16(q_scale_max / 256)) in float32.
  std::vector<float> Dequantize() const;
};

// A linear prepared for solving at any mix: act order, damping and the
// Cholesky factor are computed once.
class Exl2Solver {
 public:
  // w [out][in]; h [in][in] the Hessian of its inputs; damp as GPTQ's.
  static absl::StatusOr<Exl2Solver> Prepare(const float* w, int64_t out, int64_t in, std::vector<double> h,
                                            double damp);
  struct Result {
    Exl2Linear q;
    double error = 0;  // ||(W - Q) X||^2 / ||W X||^2 through the damped Hessian
  };
  absl::StatusOr<Result> Quantize(const std::vector<Exl2Group>& plan) const;
  double damp() const { return damp_; }
  int dead_columns() const { return dead_; }

 private:
  int64_t out_ = 0, in_ = 0;
  std::vector<int32_t> perm_;
  std::vector<float> w_;   // [out][in] in act order, dead inputs zeroed
  std::vector<float> u_;   // [in][in] upper Cholesky factor of the damped inverse Hessian, act order
  double denom_ = 0;       // trace(W H W^T), damped H
  double damp_ = 0;
  int dead_ = 0;
};

// The tensors of one linear: q_weight int32 [sum qrows, out padded to 32],
// q_scale int32 [G, padded / 8], q_scale_max f16 [G], q_groups int16 [2G],
// q_invperm int32 [in]. Exl2Layout gives the shapes with empty bytes.
std::vector<PackedTensor> Exl2Layout(int64_t out, int64_t in, const std::vector<Exl2Group>& plan);
std::vector<PackedTensor> PackExl2(const Exl2Linear& q);

// The optimizer: one option per linear minimizing the summed error with the
// summed bits at most `budget_bits`. options[i] = (bits, error) of linear i's
// candidates. A dynamic program over the bits in units of 1/10000 of the
// average bit per weight (costs rounded up, so the budget holds exactly),
// then single swaps in exact bits that lower the error and still fit (the
// rounding leaves up to a unit per linear unused). Fails if even the
// cheapest options exceed the budget.
absl::StatusOr<std::vector<int>> Exl2Choose(const std::vector<std::vector<std::pair<int64_t, double>>>& options,
                                            int64_t total_weights, double budget_bits);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_EXL2_QUANT_H_
