// AVX2 LoRA rows (see lora_kernels.h): 8 lanes of the rank in the shrink, 8
// outputs at a time in the expand; 16-bit weights widened with F16C (half)
// or a shift (bfloat16) as they are loaded.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "common/fp16.h"
#include "kernels/cpu/lora_kernels.h"

namespace tessera::cpu {
namespace {

template <LoraDtype D>
inline __m256 Load8(const void* base, int64_t i) {
  if constexpr (D == LoraDtype::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
    if constexpr (D == LoraDtype::kF16) {
      return _mm256_cvtph_ps(h);
    } else {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
  }
}

template <LoraDtype D>
void Rows(int n, const float* const* x, int64_t in, const LoraPair& pair, int64_t out, float* const* y,
          float* scratch) {
  const int rank = pair.rank;
  const int rank8 = rank / 8 * 8;
  float* t[4];
  for (int j = 0; j < n; ++j) {
    t[j] = scratch + j * rank;
    std::fill(t[j], t[j] + rank, 0.f);
  }
  float* d = scratch + 4 * rank;
  // Shrink: A is read once for all n rows.
  for (int64_t i = 0; i < in; ++i) {
    const int64_t row = i * rank;
    int k = 0;
    for (; k < rank8; k += 8) {
      const __m256 a = Load8<D>(pair.a_t, row + k);
      for (int j = 0; j < n; ++j) {
        _mm256_storeu_ps(t[j] + k, _mm256_fmadd_ps(_mm256_set1_ps(x[j][i]), a, _mm256_loadu_ps(t[j] + k)));
      }
    }
    for (; k < rank; ++k) {
      const float a = LoraElement<D>(pair.a_t, row + k);
      for (int j = 0; j < n; ++j) t[j][k] = std::fma(x[j][i], a, t[j][k]);
    }
  }
  const int64_t out8 = out / 8 * 8;
  for (int j = 0; j < n; ++j) {
    for (int k = 0; k < rank; ++k) t[j][k] *= pair.scale;
    std::fill(d, d + out, 0.f);
    for (int k = 0; k < rank; ++k) {
      const __m256 tk = _mm256_set1_ps(t[j][k]);
      const int64_t row = static_cast<int64_t>(k) * out;
      int64_t o = 0;
      for (; o < out8; o += 8) {
        _mm256_storeu_ps(d + o, _mm256_fmadd_ps(tk, Load8<D>(pair.b_t, row + o), _mm256_loadu_ps(d + o)));
      }
      for (; o < out; ++o) d[o] = std::fma(t[j][k], LoraElement<D>(pair.b_t, row + o), d[o]);
    }
    float* yj = y[j];
    int64_t o = 0;
    for (; o < out8; o += 8) _mm256_storeu_ps(yj + o, _mm256_add_ps(_mm256_loadu_ps(yj + o), _mm256_loadu_ps(d + o)));
    for (; o < out; ++o) yj[o] += d[o];
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

LoraRowsFn LoraRowsAvx2() { return RowsAnyType; }

}  // namespace tessera::cpu
