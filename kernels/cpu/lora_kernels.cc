#include "kernels/cpu/lora_kernels.h"

#include <algorithm>
#include <cmath>

#include "common/fp16.h"
#include "kernels/cpu/quant_kernels.h"

namespace tessera::cpu {
namespace {

template <LoraDtype D>
void Rows(int n, const float* const* x, int64_t in, const LoraPair& pair, int64_t out, float* const* y,
          float* scratch) {
  const int rank = pair.rank;
  float* t = scratch;
  for (int j = 0; j < n; ++j) {
    for (int k = 0; k < rank; ++k) {
      float s[kLoraShrinkLanes] = {};
      for (int64_t i = 0; i < in; ++i) {
        float& acc = s[i % kLoraShrinkLanes];
        acc = std::fma(x[j][i], LoraElement<D>(pair.a_t, i * rank + k), acc);
      }
      t[k] = ((s[0] + s[1]) + (s[2] + s[3])) * pair.scale;
    }
    for (int64_t o = 0; o < out; ++o) {
      float d = 0.f;
      for (int k = 0; k < rank; ++k) d = std::fma(t[k], LoraElement<D>(pair.b_t, k * out + o), d);
      y[j][o] += d;
    }
  }
}

void RowsAnyType(int n, const float* const* x, int64_t in, const LoraPair& pair, int64_t out, float* const* y,
                 float* scratch) {
  switch (pair.dtype) {
    case LoraDtype::kF32: return Rows<LoraDtype::kF32>(n, x, in, pair, out, y, scratch);
    case LoraDtype::kF16: return Rows<LoraDtype::kF16>(n, x, in, pair, out, y, scratch);
    case LoraDtype::kBF16: return Rows<LoraDtype::kBF16>(n, x, in, pair, out, y, scratch);
  }
}

}  // namespace

LoraRowsFn LoraRowsReference() { return RowsAnyType; }

LoraRowsFn BestLoraRows() {
  static const LoraRowsFn best = BestVectorKernels().isa >= Isa::kAvx2 ? LoraRowsAvx2() : LoraRowsReference();
  return best;
}

}  // namespace tessera::cpu
