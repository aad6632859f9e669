// Per-weight-type CPU kernels and the registry that picks them.
//
// Each weight type has: a row dequantizer, the activation format it pairs
// with (as in ggml: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the
// K formats, F32 for float weights), a quantizer for that activation format
// and a dot product of one weight row with one quantized activation row.
//
// Variants are keyed by (weight type, ISA). The reference variant is plain
// C++ and is the oracle in tests; SIMD variants register themselves in their
// own translation unit, compiled with their own target flags, and are chosen
// at run time from the CPU's features (never by preprocessor switches).
#ifndef TESSERA_KERNELS_CPU_QUANT_KERNELS_H_
#define TESSERA_KERNELS_CPU_QUANT_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/ggml_types.h"
#include "kernels/backend.h"
#include "kernels/cpu/ggml_numerics.h"

namespace tessera::cpu {

// Mixed-width types (IsMixedWidth) pass their kernels (dequant and every
// vec_dot) `n` = MixedWidthN(cols, wide_cols): the row's length and its
// leading 8-bit columns in one argument, each below 2^31; every other type's
// `n` is the row's length.
constexpr int64_t MixedWidthN(int64_t cols, int64_t wide_cols) { return (wide_cols << 32) | cols; }
constexpr int64_t MixedCols(int64_t n) { return n & 0xFFFFFFFF; }
constexpr int64_t MixedWideCols(int64_t n) { return n >> 32; }

using DequantRowFn = void (*)(const void* src, float* dst, int64_t n);
using QuantizeRowFn = void (*)(const float* src, void* dst, int64_t n);
// Dot product of n elements of a weight row with an activation row in the
// paired format. REQUIRES: n is a multiple of the weight's block size.
using VecDotFn = float (*)(int64_t n, const void* w, const void* x);

enum class Isa { kReference = 0, kAvx2 = 1, kAvx512Vnni = 2 };
std::string_view IsaName(Isa isa);

struct WeightKernels {
  GgmlType weight_type;
  GgmlType act_type;
  Isa isa = Isa::kReference;
  DequantRowFn dequant = nullptr;
  QuantizeRowFn quantize_act = nullptr;
  VecDotFn vec_dot = nullptr;
  // Optional: one weight row against 4 activation rows at once (rows
  // `x_stride` bytes apart), each result bit-identical to vec_dot.
  // `scales` holds the activation blocks' scales as floats, (d, s) per block,
  // rows `scales_stride` floats apart (see ActScales).
  void (*vec_dot_x4)(int64_t n, const void* w, const void* x, size_t x_stride, const float* scales,
                     size_t scales_stride, float* out) = nullptr;
  // Optional: 2 weight rows (`w_stride` bytes apart) against 4 activation
  // rows; out[r * 4 + t]. Bit-identical to vec_dot.
  void (*vec_dot_2x4)(int64_t n, const void* w, size_t w_stride, const void* x, size_t x_stride,
                      const float* scales, size_t scales_stride, float* out) = nullptr;
  // Optional: 4 weight rows against 4 activation rows, same contract as
  // vec_dot_2x4 (out[r * 4 + t]); the widest tile, used first by MatMul.
  void (*vec_dot_4x4)(int64_t n, const void* w, size_t w_stride, const void* x, size_t x_stride,
                      const float* scales, size_t scales_stride, float* out) = nullptr;
};

// Bytes of an activation row of n elements in the paired format.
size_t ActRowBytes(GgmlType act_type, int64_t n);
// Writes the float (d, s) of each 32-element block of a Q8_0, Q8_1 or Q8_1F
// activation row (s = 0 for Q8_0): 2 * n / 32 floats.
void ActScales(GgmlType act_type, const void* row, int64_t n, float* out);

// The best variant this CPU runs, or nullptr if the type has no kernels.
const WeightKernels* KernelsFor(GgmlType weight_type);
// The plain C++ variant, or nullptr.
const WeightKernels* ReferenceKernelsFor(GgmlType weight_type);
// A specific ISA's variant if registered and runnable here, else nullptr.
const WeightKernels* KernelsFor(GgmlType weight_type, Isa isa);
Isa BestIsa();

struct AttentionScratch;

// Vector primitives of attention, the KV cache and the activations. Every
// variant returns bit-identical results (the reference is the contract; see
// ggml_numerics.h), so the choice of ISA never changes a token.
struct VectorKernels {
  Isa isa = Isa::kReference;
  // The llama.cpp build whose float orders dot, silu_mul and attend follow.
  GgmlOrder order = GgmlOrder::kAvx512;
  float (*dot)(const uint16_t* a, const float* b, int n) = nullptr;        // sum a[i]*b[i], Lanes(order) lanes
  void (*axpy)(float alpha, const uint16_t* x, float* y, int n) = nullptr;  // y += alpha*x (fma)
  void (*from_float)(const float* x, uint16_t* y, int n) = nullptr;
  // out = silu(g) * u
  void (*silu_mul)(const float* g, const float* u, float* out, int64_t n) = nullptr;
  // One query head against n_ctx cached positions (see attention.h).
  void (*attend)(const float* q, const KvLayer& kv, std::span<const int32_t> block_table, int64_t n_ctx,
                 int kv_head, const AttentionShape& shape, float* out, AttentionScratch& scratch) = nullptr;
};
// The best variant for this CPU, in HostGgmlOrder().
const VectorKernels& BestVectorKernels();
VectorKernels ReferenceVectorKernels(GgmlOrder order = HostGgmlOrder());
VectorKernels Avx2VectorKernels(GgmlOrder order = HostGgmlOrder());

// Registration hooks, one per ISA translation unit.
class KernelTable;
void RegisterReferenceKernels(KernelTable& table);
void RegisterAvx2Kernels(KernelTable& table);
void RegisterAvx512VnniKernels(KernelTable& table);

class KernelTable {
 public:
  void Register(const WeightKernels& k);
  const WeightKernels* Find(GgmlType t, Isa isa) const;

 private:
  static constexpr int kMaxTypes = 80;  // GGUF ids and Tessera's internal ones (ggml_types.h)
  static constexpr int kMaxIsa = 3;
  WeightKernels entries_[kMaxTypes][kMaxIsa] = {};
  bool present_[kMaxTypes][kMaxIsa] = {};
};

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_QUANT_KERNELS_H_
