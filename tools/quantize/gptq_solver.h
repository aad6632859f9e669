// GPTQ (Frantar et al. 2022) for one linear layer, as GPTQModel's
// gptq.py quantize() runs it: the Hessian of the layer's inputs, dead columns
// zeroed, optional act-order permutation, dampening, the upper Cholesky factor
// of the inverse Hessian, and column blocks of 128 with the quantization
// error fed back within the block and, at its end, to every later column.
// Group parameters are found when a group's first column comes up, from the
// weights as the published code sees them then (updated by every finished
// block, not yet by the current one).
//
// One difference, on purpose: the published code quantizes with the float32
// scale and rounds it to f16 only when packing; here the scale is rounded to
// f16 first and codes and error feedback use the value that is stored, so the
// written checkpoint is exactly the matrix whose error GPTQ minimized.
//
// Determinism: every reduction has a fixed order independent of the thread
// count (Hessian tiles and matrix rows are each owned by one thread).
#ifndef TESSERA_TOOLS_QUANTIZE_GPTQ_SOLVER_H_
#define TESSERA_TOOLS_QUANTIZE_GPTQ_SOLVER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/quantize/group_quant.h"

namespace tessera::quantize {

// Sum of x xᵀ over input rows, kept in double (upper triangle accumulated,
// mirrored by Hessian()).
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t n);
  int64_t n() const { return n_; }
  int64_t count() const { return count_; }
  // Adds `rows` input rows of n floats, `stride` floats apart.
  void Add(const float* x, int64_t rows, int64_t stride);
  // H = 2 / count * Σ x xᵀ, n x n row-major (GPTQ's scaling; the algorithm
  // itself does not depend on it).
  std::vector<double> Hessian() const;

 private:
  int64_t n_;
  int64_t count_ = 0;
  std::vector<double> sum_;  // n x n, upper triangle
  std::vector<float> packed_;  // Add's scratch
};

struct GptqOptions {
  int bits = 4;
  int group_size = 128;  // -1: one group per row
  bool sym = true;
  bool desc_act = false;
  double damp = 0.01;    // fraction of the mean Hessian diagonal
  double mse = 0;        // > 0: group parameters by GptqGroupParamsMse with this norm
  int block_size = 128;
};

struct GptqResult {
  GroupQuantizedLinear q;   // codes in the original column order; g_idx by act-order position
  double damp = 0;          // the dampening used (raised by 0.0025 steps if H + damp was not positive definite)
  int dead_columns = 0;     // inputs that were always zero
};

// Quantizes w [rows][cols] given the Hessian h [cols][cols] of its inputs.
absl::StatusOr<GptqResult> GptqQuantize(const float* w, int64_t rows, int64_t cols, std::vector<double> h,
                                        const GptqOptions& options);

// GPTQ's preparation of a Hessian h (n x n, row-major), shared by the gptq
// and exl2 solvers. A zero diagonal entry (an input no calibration token
// reached) becomes 1 and its column is dead (its weights quantize as zero).
// With `act_order` the columns are ordered by descending diagonal (stable),
// else kept. Then H + damp * mean(diag) is factored, the damping raised by
// 0.0025 until H is positive definite (GPTQModel's damp_auto_increment);
// InvalidArgument, prefixed by `who`, past 1.
struct PreparedHessian {
  std::vector<char> dead;      // by input column
  int dead_columns = 0;
  std::vector<int32_t> perm;   // position p holds input column perm[p]
  std::vector<double> damped;  // H in perm order plus the damping used
  std::vector<double> u;       // the upper Cholesky factor of damped's inverse
  double damp = 0;
};
absl::StatusOr<PreparedHessian> PrepareHessian(std::vector<double> h, int64_t n, bool act_order, double damp,
                                               const char* who);

// The upper-triangular U with Uᵀ U = A⁻¹ for a symmetric positive definite
// A (n x n, row-major, double), or false if A is not positive definite.
bool UpperCholeskyOfInverse(const std::vector<double>& a, int64_t n, std::vector<double>* u);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_GPTQ_SOLVER_H_
