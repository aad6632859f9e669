// AVX-512 VNNI variants of the Q4_1 and Q8_0 dot kernels (256-bit forms):
// vpdpbusd computes the same 4-byte integer sums as maddubs + madd, so the
// results are bit-identical to the AVX2 kernels (no int16 saturation is
// possible for these formats: |products| stay below 2 * 128 * 127).
// Compiled with -mavx512vnni -mavx512vl; reached only through the registry
// when the CPU has those features.
#include <immintrin.h>

#include "kernels/cpu/dot_kernels_x86.h"
#include "kernels/cpu/quant_kernels.h"

namespace tessera::cpu {
namespace {

struct VnniOps {
  static __m256 MulSumUS8(__m256i ux, __m256i sy) {
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ux, sy));
  }
};

}  // namespace

void RegisterAvx512VnniKernels(KernelTable& t) {
  auto with = [&](GgmlType type, VecDotFn dot, decltype(WeightKernels::vec_dot_x4) dot_x4,
                  decltype(WeightKernels::vec_dot_2x4) dot_2x4) {
    const WeightKernels* base = t.Find(type, Isa::kAvx2);
    if (base == nullptr) return;
    WeightKernels k = *base;
    k.isa = Isa::kAvx512Vnni;
    k.vec_dot = dot;
    k.vec_dot_x4 = dot_x4;
    k.vec_dot_2x4 = dot_2x4;
    t.Register(k);
  };
  with(GgmlType::kQ4_1, DotQ4_1T<VnniOps>, DotQ4_1x4T<VnniOps>, DotQ4_1_2x4T<VnniOps>);
  with(GgmlType::kQ8_0, DotQ8_0T<VnniOps>, DotQ8_0x4T<VnniOps>, DotQ8_0_2x4T<VnniOps>);
}

}  // namespace tessera::cpu
