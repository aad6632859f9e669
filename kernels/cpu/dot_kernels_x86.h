// The Q4_1 and Q8_0 dot kernels of the x86 SIMD variants, written once and
// instantiated per ISA. `Ops::MulSumUS8(u8, s8)` returns the 8 lane sums of
// four byte products as floats; the AVX2 and AVX-512 VNNI translation units
// supply it (maddubs + madd, or vpdpbusd), which give the same integers, so
// every instantiation computes the same bits.
//
// Include only from a translation unit compiled for at least AVX2/FMA/F16C.
// Internal linkage on purpose (see avx2_math.h).
#ifndef TESSERA_KERNELS_CPU_DOT_KERNELS_X86_H_
#define TESSERA_KERNELS_CPU_DOT_KERNELS_X86_H_

#include <immintrin.h>

#include <cstring>

#include "common/quant_blocks.h"
#include "kernels/cpu/avx2_math.h"

namespace tessera::cpu {
namespace {

using avx2::HSum;

inline float H(uint16_t h) { return _cvtsh_ss(h); }

// 32 nibbles -> 32 bytes: low nibbles (elements 0..15) then high (16..31).
inline __m256i Nibbles(const uint8_t* p) {
  const __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i bytes = _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
  return _mm256_and_si256(bytes, _mm256_set1_epi8(0x0F));
}

inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Sum of products of signed bytes x and y, as 8 floats.
template <class Ops>
inline __m256 MulSumI8T(__m256i x, __m256i y) {
  return Ops::MulSumUS8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

template <class Ops>
float DotQ4_1T(int64_t n, const void* w, const void* x) {
  // One accumulator, in ggml's order, so that results match llama.cpp bit
  // for bit on the same activations.
  auto* a = static_cast<const BlockQ4_1*>(w);
  auto* b = static_cast<const BlockQ8_1*>(x);
  __m256 acc = _mm256_setzero_ps();
  float summs = 0;
  for (int64_t i = 0; i < n / kQk32; ++i) {
    summs += H(a[i].m) * H(b[i].s);
    const __m256 d = _mm256_mul_ps(_mm256_set1_ps(H(a[i].d)), _mm256_set1_ps(H(b[i].d)));
    acc = _mm256_fmadd_ps(d, Ops::MulSumUS8(Nibbles(a[i].qs), Load256(b[i].qs)), acc);
  }
  return HSum(acc) + summs;
}

// One Q4_1 row against 4 Q8_1 rows: the nibbles are unpacked once per block
// and the activation scales come pre-converted; each output keeps its own
// accumulator in vec_dot's order.
template <class Ops>
void DotQ4_1x4T(int64_t n, const void* w, const void* x, size_t stride, const float* scales, size_t sstride,
               float* out) {
  auto* a = static_cast<const BlockQ4_1*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  const BlockQ8_1* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    b[k] = reinterpret_cast<const BlockQ8_1*>(xb + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  float summs[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m256i qx = Nibbles(a[i].qs);
    const float d = H(a[i].d), m = H(a[i].m);
    const __m256 vd = _mm256_set1_ps(d);
    for (int k = 0; k < 4; ++k) {
      summs[k] += m * sc[k][2 * i + 1];
      const __m256 dd = _mm256_mul_ps(vd, _mm256_set1_ps(sc[k][2 * i]));
      acc[k] = _mm256_fmadd_ps(dd, Ops::MulSumUS8(qx, Load256(b[k][i].qs)), acc[k]);
    }
  }
  for (int k = 0; k < 4; ++k) out[k] = HSum(acc[k]) + summs[k];
}

// Two Q4_1 rows against 4 Q8_1 rows: every activation block is loaded once
// for both weight rows. Per output, the same operations in the same order as
// DotQ4_1 (the min terms are summed with separate multiply and add, 8 lanes
// at a time, one lane per output).
template <class Ops>
void DotQ4_1_2x4T(int64_t n, const void* w, size_t w_stride, const void* x, size_t stride, const float* scales,
                 size_t sstride, float* out) {
  const auto* w0 = static_cast<const BlockQ4_1*>(w);
  const auto* w1 = reinterpret_cast<const BlockQ4_1*>(static_cast<const uint8_t*>(w) + w_stride);
  const auto* xb = static_cast<const uint8_t*>(x);
  const BlockQ8_1* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    b[k] = reinterpret_cast<const BlockQ8_1*>(xb + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m256 acc0[4], acc1[4];
  for (int k = 0; k < 4; ++k) acc0[k] = acc1[k] = _mm256_setzero_ps();
  __m256 summs = _mm256_setzero_ps();  // lanes: (row 0, t0..t3), (row 1, t0..t3)
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m256i q0 = Nibbles(w0[i].qs), q1 = Nibbles(w1[i].qs);
    const float m0 = H(w0[i].m), m1 = H(w1[i].m);
    const __m256 d0 = _mm256_set1_ps(H(w0[i].d)), d1 = _mm256_set1_ps(H(w1[i].d));
    const __m256 mm = _mm256_setr_ps(m0, m0, m0, m0, m1, m1, m1, m1);
    const __m256 ss = _mm256_setr_ps(sc[0][2 * i + 1], sc[1][2 * i + 1], sc[2][2 * i + 1], sc[3][2 * i + 1],
                                     sc[0][2 * i + 1], sc[1][2 * i + 1], sc[2][2 * i + 1], sc[3][2 * i + 1]);
    summs = _mm256_add_ps(summs, _mm256_mul_ps(mm, ss));
    for (int k = 0; k < 4; ++k) {
      const __m256i y = Load256(b[k][i].qs);
      const __m256 da = _mm256_set1_ps(sc[k][2 * i]);
      acc0[k] = _mm256_fmadd_ps(_mm256_mul_ps(d0, da), Ops::MulSumUS8(q0, y), acc0[k]);
      acc1[k] = _mm256_fmadd_ps(_mm256_mul_ps(d1, da), Ops::MulSumUS8(q1, y), acc1[k]);
    }
  }
  alignas(32) float sm[8];
  _mm256_store_ps(sm, summs);
  for (int k = 0; k < 4; ++k) {
    out[k] = HSum(acc0[k]) + sm[k];
    out[4 + k] = HSum(acc1[k]) + sm[4 + k];
  }
}

template <class Ops>
float DotQ8_0T(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ8_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQk32; ++i) {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(H(a[i].d) * H(b[i].d)),
                          MulSumI8T<Ops>(Load256(a[i].qs), Load256(b[i].qs)), acc);
  }
  return HSum(acc);
}

template <class Ops>
void DotQ8_0_2x4T(int64_t n, const void* w, size_t w_stride, const void* x, size_t stride, const float* scales,
                 size_t sstride, float* out) {
  const auto* w0 = static_cast<const BlockQ8_0*>(w);
  const auto* w1 = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(w) + w_stride);
  const auto* xb = static_cast<const uint8_t*>(x);
  const BlockQ8_0* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    b[k] = reinterpret_cast<const BlockQ8_0*>(xb + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m256 acc0[4], acc1[4];
  for (int k = 0; k < 4; ++k) acc0[k] = acc1[k] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m256i qa0 = Load256(w0[i].qs), qa1 = Load256(w1[i].qs);
    const __m256i ax0 = _mm256_sign_epi8(qa0, qa0), ax1 = _mm256_sign_epi8(qa1, qa1);
    const float d0 = H(w0[i].d), d1 = H(w1[i].d);
    for (int k = 0; k < 4; ++k) {
      const __m256i y = Load256(b[k][i].qs);
      const float da = sc[k][2 * i];
      acc0[k] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * da), Ops::MulSumUS8(ax0, _mm256_sign_epi8(y, qa0)), acc0[k]);
      acc1[k] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * da), Ops::MulSumUS8(ax1, _mm256_sign_epi8(y, qa1)), acc1[k]);
    }
  }
  for (int k = 0; k < 4; ++k) {
    out[k] = HSum(acc0[k]);
    out[4 + k] = HSum(acc1[k]);
  }
}

template <class Ops>
void DotQ8_0x4T(int64_t n, const void* w, const void* x, size_t stride, const float* scales, size_t sstride,
               float* out) {
  auto* a = static_cast<const BlockQ8_0*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  const BlockQ8_0* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    b[k] = reinterpret_cast<const BlockQ8_0*>(xb + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m256i qa = Load256(a[i].qs);
    const __m256i ax = _mm256_sign_epi8(qa, qa);
    const float d = H(a[i].d);
    for (int k = 0; k < 4; ++k) {
      const __m256i sy = _mm256_sign_epi8(Load256(b[k][i].qs), qa);
      acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[k][2 * i]), Ops::MulSumUS8(ax, sy), acc[k]);
    }
  }
  for (int k = 0; k < 4; ++k) out[k] = HSum(acc[k]);
}

}  // namespace
}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_DOT_KERNELS_X86_H_
