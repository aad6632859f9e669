// LoRA shrink/expand for up to 4 rows sharing one adapter pair, for every
// LoraDtype: float32 accumulation whatever the storage type, so float16 and
// bfloat16 adapters differ from float32 ones only by the rounding of A and B.
//
// Each row's result depends on that row alone and on nothing else of the
// batch, and every ISA variant accumulates in the same order, so the
// variants agree bit for bit. That order: the shrink sums input i into
// partial sum i % kLoraShrinkLanes (fused multiply-add, ascending i), then
// ((s0 + s1) + (s2 + s3)) times the scale; the expand sums over the rank,
// ascending, from zero, and adds the result to y. Four partial sums give a
// vector unit four independent chains on a single row (decode with many
// distinct adapters is one row per adapter), which one running sum would
// serialize on the FMA latency.
#ifndef TESSERA_KERNELS_CPU_LORA_KERNELS_H_
#define TESSERA_KERNELS_CPU_LORA_KERNELS_H_

#include <cstdint>

#include "common/fp16.h"
#include "kernels/backend.h"

namespace tessera::cpu {

inline constexpr int kLoraShrinkLanes = 4;

// y[j] += pair.scale * B (A x[j]) for j < n <= 4; x rows have `in` values,
// y rows `out`. `scratch` holds 4 * rank floats (the rows' shrunk vectors).
using LoraRowsFn = void (*)(int n, const float* const* x, int64_t in, const LoraPair& pair, int64_t out,
                            float* const* y, float* scratch);

// Element i of LoRA weights stored as D, widened to float.
template <LoraDtype D>
inline float LoraElement(const void* base, int64_t i) {
  if constexpr (D == LoraDtype::kF32) {
    return static_cast<const float*>(base)[i];
  } else if constexpr (D == LoraDtype::kF16) {
    return Fp16ToFp32(static_cast<const uint16_t*>(base)[i]);
  } else {
    return Bf16ToFp32(static_cast<const uint16_t*>(base)[i]);
  }
}

LoraRowsFn LoraRowsReference();
LoraRowsFn LoraRowsAvx2();  // REQUIRES: the CPU has AVX2, FMA and F16C
// The fastest variant this CPU runs.
LoraRowsFn BestLoraRows();

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_LORA_KERNELS_H_
