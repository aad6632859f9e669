// AVX2 LoRA rows (see lora_kernels.h): 8 lanes of the rank in the shrink
// (four accumulators), 8 outputs of every row at a time in the expand;
// 16-bit weights widened with F16C (half) or a shift (bfloat16) as they are
// loaded.
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

// t[k] for the rank lanes [k, k + 8) of one row: four accumulators, input i
// into accumulator i % 4, as the reference orders it.
static_assert(kLoraShrinkLanes == 4, "Shrink8 unrolls the shrink's partial sums by hand");
template <LoraDtype D>
inline __m256 Shrink8(const float* x, int64_t in, const void* a_t, int rank, int k) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 4 <= in; i += 4) {
    const int64_t row = i * rank + k;
    s0 = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i), Load8<D>(a_t, row), s0);
    s1 = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i + 1), Load8<D>(a_t, row + rank), s1);
    s2 = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i + 2), Load8<D>(a_t, row + 2 * rank), s2);
    s3 = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i + 3), Load8<D>(a_t, row + 3 * rank), s3);
  }
  if (i < in) s0 = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i), Load8<D>(a_t, i * rank + k), s0);
  if (i + 1 < in) s1 = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i + 1), Load8<D>(a_t, (i + 1) * rank + k), s1);
  if (i + 2 < in) s2 = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i + 2), Load8<D>(a_t, (i + 2) * rank + k), s2);
  return _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
}

// The same for one rank lane (ranks that are not a multiple of 8).
template <LoraDtype D>
inline float Shrink1(const float* x, int64_t in, const void* a_t, int rank, int k) {
  float s[kLoraShrinkLanes] = {};
  for (int64_t i = 0; i < in; ++i) {
    float& acc = s[i % kLoraShrinkLanes];
    acc = std::fma(x[i], LoraElement<D>(a_t, i * rank + k), acc);
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

template <LoraDtype D>
void Rows(int n, const float* const* x, int64_t in, const LoraPair& pair, int64_t out, float* const* y,
          float* scratch) {
  const int rank = pair.rank;
  const int rank8 = rank / 8 * 8;
  const __m256 scale = _mm256_set1_ps(pair.scale);
  // Shrink, a row at a time: A (in x rank, a few tens of KiB) comes from
  // memory for the first row and from cache for the others.
  float* t[4];
  for (int j = 0; j < n; ++j) {
    t[j] = scratch + j * rank;
    int k = 0;
    for (; k < rank8; k += 8) {
      _mm256_storeu_ps(t[j] + k, _mm256_mul_ps(Shrink8<D>(x[j], in, pair.a_t, rank, k), scale));
    }
    for (; k < rank; ++k) t[j][k] = Shrink1<D>(x[j], in, pair.a_t, rank, k) * pair.scale;
  }
  // Expand, 8 outputs at a time for all n rows, so each B vector is loaded
  // once: acc_j = sum over k of t[j][k] * B[k][o..o+8), from zero.
  const int64_t out8 = out / 8 * 8;
  int64_t o = 0;
  for (; o < out8; o += 8) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int k = 0; k < rank; ++k) {
      const __m256 b = Load8<D>(pair.b_t, static_cast<int64_t>(k) * out + o);
      for (int j = 0; j < n; ++j) acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(t[j] + k), b, acc[j]);
    }
    for (int j = 0; j < n; ++j) _mm256_storeu_ps(y[j] + o, _mm256_add_ps(_mm256_loadu_ps(y[j] + o), acc[j]));
  }
  for (; o < out; ++o) {
    for (int j = 0; j < n; ++j) {
      float d = 0.f;
      for (int k = 0; k < rank; ++k) {
        d = std::fma(t[j][k], LoraElement<D>(pair.b_t, static_cast<int64_t>(k) * out + o), d);
      }
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

LoraRowsFn LoraRowsAvx2() { return RowsAnyType; }

}  // namespace tessera::cpu
