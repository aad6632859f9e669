// AVX2 attention for one head, bit-identical to AttendOneHeadReference<L>:
// L = 16 follows llama.cpp's AVX-512 build (two 8-wide halves per 16-lane
// vector), L = 8 its AVX2 build (see ggml_numerics.h).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/avx2_math.h"

namespace tessera::cpu {

template <int L>
void AttendOneHeadAvx2(const float* q, const KvLayer& kv, std::span<const int32_t> block_table, int64_t n_ctx,
                       int kv_head, const AttentionShape& shape, float* out, AttentionScratch& scratch) {
  static_assert(L == 8 || L == 16);
  const int hd = shape.head_dim;  // a multiple of 16 (checked by the caller)
  scratch.q_rounded.resize(hd);
  for (int i = 0; i < hd; i += 8) {
    _mm256_storeu_ps(scratch.q_rounded.data() + i, avx2::RoundToHalf(_mm256_loadu_ps(q + i)));
  }
  const float* qr = scratch.q_rounded.data();
  const int64_t padded = (n_ctx + L - 1) / L * L;
  scratch.scores.resize(padded);
  float* s = scratch.scores.data();
  const int64_t head_off = static_cast<int64_t>(kv_head) * hd;
  const int bs = kv.block_size;
  auto slot_of = [&](int64_t t) { return static_cast<int64_t>(block_table[t / bs]) * bs + t % bs; };
  auto load_half = [](const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  };

  // Scores: L lanes of fma over the head dimension.
  float max_score = -INFINITY;
  for (int64_t t = 0; t < n_ctx; ++t) {
    const uint16_t* k = kv.k + slot_of(t) * kv.kv_dim + head_off;
    float dot;
    if constexpr (L == 16) {
      __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
      for (int i = 0; i < hd; i += 16) {
        acc0 = _mm256_fmadd_ps(load_half(k + i), _mm256_loadu_ps(qr + i), acc0);
        acc1 = _mm256_fmadd_ps(load_half(k + i + 8), _mm256_loadu_ps(qr + i + 8), acc1);
      }
      dot = avx2::HSum(_mm256_add_ps(acc0, acc1));
    } else {
      __m256 acc = _mm256_setzero_ps();
      for (int i = 0; i < hd; i += 8) acc = _mm256_fmadd_ps(load_half(k + i), _mm256_loadu_ps(qr + i), acc);
      dot = avx2::HSum(acc);
    }
    s[t] = dot * shape.scale;
    max_score = std::max(max_score, s[t]);
  }
  for (int64_t t = n_ctx; t < padded; ++t) s[t] = -INFINITY;

  // exp(s - max), summed per L positions in that order, then in double.
  double sum = 0;
  const __m256 vmax = _mm256_set1_ps(max_score);
  for (int64_t c = 0; c < padded; c += L) {
    if constexpr (L == 16) {
      const __m256 e0 = avx2::Exp8(_mm256_sub_ps(_mm256_loadu_ps(s + c), vmax));
      const __m256 e1 = avx2::Exp8(_mm256_sub_ps(_mm256_loadu_ps(s + c + 8), vmax));
      _mm256_storeu_ps(s + c, e0);
      _mm256_storeu_ps(s + c + 8, e1);
      sum += avx2::HSum(_mm256_add_ps(e1, e0));
    } else {
      const __m256 e = avx2::Exp8Avx2Order(_mm256_sub_ps(_mm256_loadu_ps(s + c), vmax));
      _mm256_storeu_ps(s + c, e);
      sum += avx2::HSum(e);
    }
  }
  const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / sum));
  for (int64_t c = 0; c < padded; c += 8) {
    _mm256_storeu_ps(s + c, avx2::RoundToHalf(_mm256_mul_ps(_mm256_loadu_ps(s + c), inv)));
  }

  // V: lane l accumulates positions t = l (mod L); then the lanes are
  // reduced per output dimension in the horizontal add's order.
  scratch.lanes.assign(static_cast<size_t>(L) * hd, 0.f);
  float* lanes = scratch.lanes.data();
  for (int64_t t = 0; t < n_ctx; ++t) {
    const uint16_t* v = kv.v + slot_of(t) * kv.kv_dim + head_off;
    float* acc = lanes + (t % L) * hd;
    const __m256 p = _mm256_set1_ps(s[t]);
    for (int i = 0; i < hd; i += 8) {
      _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(p, load_half(v + i), _mm256_loadu_ps(acc + i)));
    }
  }
  for (int d = 0; d < hd; d += 8) {
    auto lane = [&](int i) { return _mm256_loadu_ps(lanes + i * hd + d); };
    if constexpr (L == 16) {
      __m256 t3[8], t6[4];
      for (int i = 0; i < 8; ++i) t3[i] = _mm256_add_ps(lane(i + 8), lane(i));
      for (int i = 0; i < 4; ++i) t6[i] = _mm256_add_ps(t3[i + 4], t3[i]);
      _mm256_storeu_ps(out + d, _mm256_add_ps(_mm256_add_ps(t6[0], t6[2]), _mm256_add_ps(t6[1], t6[3])));
    } else {
      __m256 t[4];
      for (int i = 0; i < 4; ++i) t[i] = _mm256_add_ps(lane(i), lane(i + 4));
      _mm256_storeu_ps(out + d, _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3])));
    }
  }
}

template void AttendOneHeadAvx2<8>(const float*, const KvLayer&, std::span<const int32_t>, int64_t, int,
                                   const AttentionShape&, float*, AttentionScratch&);
template void AttendOneHeadAvx2<16>(const float*, const KvLayer&, std::span<const int32_t>, int64_t, int,
                                    const AttentionShape&, float*, AttentionScratch&);

}  // namespace tessera::cpu
