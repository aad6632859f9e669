// AVX-512 VNNI variants of the Q4_1 and Q8_0 dot kernels: vpdpbusd computes
// the same 4-byte integer sums as maddubs + madd, so the results are
// bit-identical to the AVX2 kernels (no int16 saturation is possible for
// these formats: |products| stay below 2 * 128 * 127).
//
// The 4x4 tiles use 512-bit registers holding the 8 float lanes of two
// outputs side by side; every lane sees the same integer sum and the same
// float operations in the same order as the 8-lane single-row kernel, so the
// wider tile changes speed, never bits.
//
// Compiled with AVX-512 F/BW/VL/VNNI; reached only through the registry when
// the CPU has those features.
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

// Two 256-bit halves in one register.
inline __m512i Pair(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
inline __m512 PairScalar(float lo, float hi) {
  return _mm512_mask_mov_ps(_mm512_set1_ps(lo), 0xFF00, _mm512_set1_ps(hi));
}

// out[h * 4 + t] = HSum(lanes of output (h, t)) + tail[h * 4 + t], where
// acc[h][p] holds outputs (h, 2p) and (h, 2p + 1) in its low and high halves.
inline void Finish4x4(const __m512 (&acc)[4][2], __m512 tail, float* out) {
  alignas(64) float t[16];
  _mm512_store_ps(t, tail);
  for (int h = 0; h < 4; ++h) {
    for (int p = 0; p < 2; ++p) {
      out[h * 4 + 2 * p] = avx2::HSum(_mm512_castps512_ps256(acc[h][p])) + t[h * 4 + 2 * p];
      out[h * 4 + 2 * p + 1] =
          avx2::HSum(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[h][p]), 1))) +
          t[h * 4 + 2 * p + 1];
    }
  }
}

// Four Q4_1 rows against four Q8_1 rows. Per output, DotQ4T's operations:
// summs = fma(m_w, s_x, summs) per block in order; acc = fma(d_w * d_x,
// lane sums, acc); result HSum(acc) + summs.
void DotQ4_1_4x4(int64_t n, const void* w, size_t w_stride, const void* x, size_t stride, const float* scales,
                 size_t sstride, float* out) {
  const BlockQ4_1* wr[4];
  const BlockQ8_1* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    wr[k] = reinterpret_cast<const BlockQ4_1*>(static_cast<const uint8_t*>(w) + k * w_stride);
    b[k] = reinterpret_cast<const BlockQ8_1*>(static_cast<const uint8_t*>(x) + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m512 acc[4][2];
  for (auto& a : acc) a[0] = a[1] = _mm512_setzero_ps();
  __m512 summs = _mm512_setzero_ps();  // lane h * 4 + t
  const __m512i m_index = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m512i y01 = Pair(Load256(b[0][i].qs), Load256(b[1][i].qs));
    const __m512i y23 = Pair(Load256(b[2][i].qs), Load256(b[3][i].qs));
    const __m512 da01 = PairScalar(sc[0][2 * i], sc[1][2 * i]);
    const __m512 da23 = PairScalar(sc[2][2 * i], sc[3][2 * i]);
    const __m512 ss = _mm512_broadcast_f32x4(
        _mm_setr_ps(sc[0][2 * i + 1], sc[1][2 * i + 1], sc[2][2 * i + 1], sc[3][2 * i + 1]));
    const __m128 m4 = _mm_setr_ps(H(wr[0][i].m), H(wr[1][i].m), H(wr[2][i].m), H(wr[3][i].m));
    summs = _mm512_fmadd_ps(_mm512_permutexvar_ps(m_index, _mm512_castps128_ps512(m4)), ss, summs);
    for (int h = 0; h < 4; ++h) {
      const __m512i q = _mm512_broadcast_i64x4(Nibbles(wr[h][i].qs));
      const __m512 dw = _mm512_set1_ps(H(wr[h][i].d));
      acc[h][0] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da01),
                                  _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y01)), acc[h][0]);
      acc[h][1] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da23),
                                  _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y23)), acc[h][1]);
    }
  }
  Finish4x4(acc, summs, out);
}

// Four Q8_0 rows against four Q8_0 rows. vpdpbusd needs an unsigned operand:
// (w + 128) . y - 128 * sum(y) is w . y exactly (int32, no saturation), and
// the correction, per activation block, is shared by the four weight rows.
// Per output, DotQ8T's operations: acc = fma(d_w * d_x, lane sums, acc).
void DotQ8_0_4x4(int64_t n, const void* w, size_t w_stride, const void* x, size_t stride, const float* scales,
                 size_t sstride, float* out) {
  const BlockQ8_0* wr[4];
  const BlockQ8_0* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    wr[k] = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(w) + k * w_stride);
    b[k] = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(x) + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m512 acc[4][2];
  for (auto& a : acc) a[0] = a[1] = _mm512_setzero_ps();
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m512i y01 = Pair(Load256(b[0][i].qs), Load256(b[1][i].qs));
    const __m512i y23 = Pair(Load256(b[2][i].qs), Load256(b[3][i].qs));
    const __m512i neg01 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, y01));
    const __m512i neg23 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, y23));
    for (int h = 0; h < 4; ++h) {
      const __m512i q = _mm512_xor_si512(_mm512_broadcast_i64x4(Load256(wr[h][i].qs)), bias);
      const float dw = H(wr[h][i].d);
      const __m512 d01 = PairScalar(dw * sc[0][2 * i], dw * sc[1][2 * i]);
      const __m512 d23 = PairScalar(dw * sc[2][2 * i], dw * sc[3][2 * i]);
      acc[h][0] = _mm512_fmadd_ps(d01, _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(neg01, q, y01)), acc[h][0]);
      acc[h][1] = _mm512_fmadd_ps(d23, _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(neg23, q, y23)), acc[h][1]);
    }
  }
  Finish4x4(acc, _mm512_setzero_ps(), out);
}

template <int G, GgmlType kQ4, GgmlType kQ8, GgmlType kQ84, class With>
void RegisterGroup(With& with) {
  with(kQ4, DotQ4T<VnniOps, Q4GChunks<G>>, DotQ4x4T<VnniOps, Q4GChunks<G>>, DotQ4_2x4T<VnniOps, Q4GChunks<G>>, nullptr);
  with(kQ8, DotQ8T<VnniOps, Q8GChunks<G>>, DotQ8x4T<VnniOps, Q8GChunks<G>>, DotQ8_2x4T<VnniOps, Q8GChunks<G>>, nullptr);
  with(kQ84, DotQ8T<VnniOps, Q84GChunks<G>>, DotQ8x4T<VnniOps, Q84GChunks<G>>, DotQ8_2x4T<VnniOps, Q84GChunks<G>>, nullptr);
}

}  // namespace

void RegisterAvx512VnniKernels(KernelTable& t) {
  auto with = [&](GgmlType type, VecDotFn dot, decltype(WeightKernels::vec_dot_x4) dot_x4,
                  decltype(WeightKernels::vec_dot_2x4) dot_2x4, decltype(WeightKernels::vec_dot_4x4) dot_4x4) {
    const WeightKernels* base = t.Find(type, Isa::kAvx2);
    if (base == nullptr) return;
    WeightKernels k = *base;
    k.isa = Isa::kAvx512Vnni;
    k.vec_dot = dot;
    k.vec_dot_x4 = dot_x4;
    k.vec_dot_2x4 = dot_2x4;
    k.vec_dot_4x4 = dot_4x4;
    t.Register(k);
  };
  with(GgmlType::kQ4_1, DotQ4T<VnniOps>, DotQ4x4T<VnniOps>, DotQ4_2x4T<VnniOps>, DotQ4_1_4x4);
  with(GgmlType::kQ8_0, DotQ8T<VnniOps>, DotQ8x4T<VnniOps>, DotQ8_2x4T<VnniOps>, DotQ8_0_4x4);
  RegisterGroup<32, GgmlType::kQ4G32, GgmlType::kQ8G32, GgmlType::kQ84G32>(with);
  RegisterGroup<64, GgmlType::kQ4G64, GgmlType::kQ8G64, GgmlType::kQ84G64>(with);
  RegisterGroup<128, GgmlType::kQ4G128, GgmlType::kQ8G128, GgmlType::kQ84G128>(with);
}

}  // namespace tessera::cpu
