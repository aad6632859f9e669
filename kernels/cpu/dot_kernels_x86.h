// The 4-bit-with-min and 8-bit dot kernels of the x86 SIMD variants, written
// once and instantiated per ISA and per weight layout: ggml's Q4_1 and Q8_0,
// and Tessera's group layouts Q4G<G> / Q8G<G> (quant_blocks.h), which are
// the same arithmetic with the scale and min read per group instead of per
// 32-element block (a layout "chunk" accessor below hides the difference). `Ops::MulSumUS8(u8, s8)` returns the 8 lane sums of
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
#include "kernels/cpu/quant_kernels.h"

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

// Activation block scale and sum as floats.
inline float ActD(const BlockQ8_0& b) { return H(b.d); }
inline float ActD(const BlockQ8_1& b) { return H(b.d); }
inline float ActS(const BlockQ8_1& b) { return H(b.s); }
inline float ActD(const BlockQ8_1F& b) { return b.d; }
inline float ActS(const BlockQ8_1F& b) { return b.s; }

// Chunk accessors: chunk c is the 32 consecutive elements [32c, 32c + 32) of
// a weight row, with its scale d, min m (4-bit layouts and Q8G) and codes.
struct Q4_1Chunks {
  using Act = BlockQ8_1;
  const BlockQ4_1* b;
  explicit Q4_1Chunks(const void* w) : b(static_cast<const BlockQ4_1*>(w)) {}
  float d(int64_t c) const { return H(b[c].d); }
  float m(int64_t c) const { return H(b[c].m); }
  const uint8_t* qs(int64_t c) const { return b[c].qs; }
};
template <int G>
struct Q4GChunks {
  static constexpr int kPer = G / kQk32;
  using Act = BlockQ8_1F;
  const BlockQ4G<G>* b;
  explicit Q4GChunks(const void* w) : b(static_cast<const BlockQ4G<G>*>(w)) {}
  float d(int64_t c) const { return b[c / kPer].d; }
  float m(int64_t c) const { return b[c / kPer].m; }
  const uint8_t* qs(int64_t c) const { return b[c / kPer].qs + 16 * (c % kPer); }
};
// The 8-bit accessors take the kernel's `n` (see MixedWidthN) and give the
// row length (cols()) and each chunk's 32 signed codes (codes(c)).
struct Q8_0Chunks {
  static constexpr bool kHasMin = false;
  using Act = BlockQ8_0;
  const BlockQ8_0* b;
  int64_t n;
  Q8_0Chunks(const void* w, int64_t n) : b(static_cast<const BlockQ8_0*>(w)), n(n) {}
  int64_t cols() const { return n; }
  float d(int64_t c) const { return H(b[c].d); }
  float m(int64_t) const { return 0.f; }
  __m256i codes(int64_t c) const { return Load256(b[c].qs); }
};
template <int G>
struct Q8GChunks {
  static constexpr bool kHasMin = true;
  static constexpr int kPer = G / kQk32;
  using Act = BlockQ8_1F;
  const BlockQ8G<G>* b;
  int64_t n;
  Q8GChunks(const void* w, int64_t n) : b(static_cast<const BlockQ8G<G>*>(w)), n(n) {}
  int64_t cols() const { return n; }
  float d(int64_t c) const { return b[c / kPer].d; }
  float m(int64_t c) const { return b[c / kPer].m; }
  __m256i codes(int64_t c) const { return Load256(b[c / kPer].qs + kQk32 * (c % kPer)); }
};
// Mixed-width rows (Q8G<G> blocks, then Q4G<G>): a 4-bit chunk is read as
// the 8-bit chunk it widens to (codes q - 8, offset m + 8 d, as
// WidenMixedWidth writes it), so every kernel computes exactly what it
// computes on the widened 8-bit row, with half the code bytes.
template <int G>
struct Q84GChunks {
  static constexpr bool kHasMin = true;
  static constexpr int kPer = G / kQk32;
  using Act = BlockQ8_1F;
  const BlockQ8G<G>* wide;
  const BlockQ4G<G>* narrow;  // indexed from the first narrow chunk
  int64_t n, wide_chunks;
  Q84GChunks(const void* w, int64_t n)
      : wide(static_cast<const BlockQ8G<G>*>(w)),
        narrow(reinterpret_cast<const BlockQ4G<G>*>(static_cast<const uint8_t*>(w) +
                                                    MixedWideCols(n) / G * sizeof(BlockQ8G<G>))),
        n(MixedCols(n)),
        wide_chunks(MixedWideCols(n) / kQk32) {}
  int64_t cols() const { return n; }
  float d(int64_t c) const { return c < wide_chunks ? wide[c / kPer].d : narrow[(c - wide_chunks) / kPer].d; }
  float m(int64_t c) const {
    if (c < wide_chunks) return wide[c / kPer].m;
    const BlockQ4G<G>& b = narrow[(c - wide_chunks) / kPer];
    return b.m + 8 * b.d;
  }
  __m256i codes(int64_t c) const {
    if (c < wide_chunks) return Load256(wide[c / kPer].qs + kQk32 * (c % kPer));
    const int64_t k = c - wide_chunks;
    return _mm256_sub_epi8(Nibbles(narrow[k / kPer].qs + 16 * (k % kPer)), _mm256_set1_epi8(8));
  }
};

// Sum of products of signed bytes x and y, as 8 floats.
template <class Ops>
inline __m256 MulSumI8T(__m256i x, __m256i y) {
  return Ops::MulSumUS8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

template <class Ops, class W = Q4_1Chunks>
float DotQ4T(int64_t n, const void* w, const void* x) {
  // One accumulator, in ggml's order, so that Q4_1 results match llama.cpp
  // bit for bit on the same activations.
  const W a(w);
  auto* b = static_cast<const typename W::Act*>(x);
  __m256 acc = _mm256_setzero_ps();
  float summs = 0;
  for (int64_t i = 0; i < n / kQk32; ++i) {
    summs += a.m(i) * ActS(b[i]);
    const __m256 d = _mm256_mul_ps(_mm256_set1_ps(a.d(i)), _mm256_set1_ps(ActD(b[i])));
    acc = _mm256_fmadd_ps(d, Ops::MulSumUS8(Nibbles(a.qs(i)), Load256(b[i].qs)), acc);
  }
  return HSum(acc) + summs;
}

// One 4-bit row against 4 Q8_1 rows: the nibbles are unpacked once per chunk
// and the activation scales come pre-converted; each output keeps its own
// accumulator in vec_dot's order.
template <class Ops, class W = Q4_1Chunks>
void DotQ4x4T(int64_t n, const void* w, const void* x, size_t stride, const float* scales, size_t sstride,
              float* out) {
  const W a(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  using A = typename W::Act;
  const A* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    b[k] = reinterpret_cast<const A*>(xb + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  float summs[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m256i qx = Nibbles(a.qs(i));
    const float d = a.d(i), m = a.m(i);
    const __m256 vd = _mm256_set1_ps(d);
    for (int k = 0; k < 4; ++k) {
      summs[k] += m * sc[k][2 * i + 1];
      const __m256 dd = _mm256_mul_ps(vd, _mm256_set1_ps(sc[k][2 * i]));
      acc[k] = _mm256_fmadd_ps(dd, Ops::MulSumUS8(qx, Load256(b[k][i].qs)), acc[k]);
    }
  }
  for (int k = 0; k < 4; ++k) out[k] = HSum(acc[k]) + summs[k];
}

// Two 4-bit rows against 4 Q8_1 rows: every activation chunk is loaded once
// for both weight rows. Per output, the same operations in the same order as
// DotQ4T (the min terms are summed with separate multiply and add, 8 lanes
// at a time, one lane per output).
template <class Ops, class W = Q4_1Chunks>
void DotQ4_2x4T(int64_t n, const void* w, size_t w_stride, const void* x, size_t stride, const float* scales,
                size_t sstride, float* out) {
  const W w0(w), w1(static_cast<const uint8_t*>(w) + w_stride);
  const auto* xb = static_cast<const uint8_t*>(x);
  using A = typename W::Act;
  const A* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    b[k] = reinterpret_cast<const A*>(xb + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m256 acc0[4], acc1[4];
  for (int k = 0; k < 4; ++k) acc0[k] = acc1[k] = _mm256_setzero_ps();
  __m256 summs = _mm256_setzero_ps();  // lanes: (row 0, t0..t3), (row 1, t0..t3)
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m256i q0 = Nibbles(w0.qs(i)), q1 = Nibbles(w1.qs(i));
    const float m0 = w0.m(i), m1 = w1.m(i);
    const __m256 d0 = _mm256_set1_ps(w0.d(i)), d1 = _mm256_set1_ps(w1.d(i));
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

// 8-bit rows: Q8_0 (against Q8_0 activations, no min) and Q8G<G> (against
// Q8_1 activations, whose block sums s carry the min term m * sum(x)).
template <class Ops, class W = Q8_0Chunks>
float DotQ8T(int64_t n, const void* w, const void* x) {
  const W a(w, n);
  auto* b = static_cast<const typename W::Act*>(x);
  __m256 acc = _mm256_setzero_ps();
  [[maybe_unused]] float summs = 0;
  for (int64_t i = 0; i < a.cols() / kQk32; ++i) {
    if constexpr (W::kHasMin) summs += a.m(i) * ActS(b[i]);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(a.d(i) * ActD(b[i])), MulSumI8T<Ops>(a.codes(i), Load256(b[i].qs)), acc);
  }
  if constexpr (W::kHasMin) return HSum(acc) + summs;
  return HSum(acc);
}

template <class Ops, class W = Q8_0Chunks>
void DotQ8_2x4T(int64_t n, const void* w, size_t w_stride, const void* x, size_t stride, const float* scales,
                size_t sstride, float* out) {
  using A = typename W::Act;
  const W w0(w, n), w1(static_cast<const uint8_t*>(w) + w_stride, n);
  const auto* xb = static_cast<const uint8_t*>(x);
  const A* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    b[k] = reinterpret_cast<const A*>(xb + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m256 acc0[4], acc1[4];
  for (int k = 0; k < 4; ++k) acc0[k] = acc1[k] = _mm256_setzero_ps();
  [[maybe_unused]] float summs0[4] = {0, 0, 0, 0}, summs1[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < w0.cols() / kQk32; ++i) {
    const __m256i qa0 = w0.codes(i), qa1 = w1.codes(i);
    const __m256i ax0 = _mm256_sign_epi8(qa0, qa0), ax1 = _mm256_sign_epi8(qa1, qa1);
    const float d0 = w0.d(i), d1 = w1.d(i);
    for (int k = 0; k < 4; ++k) {
      if constexpr (W::kHasMin) {
        summs0[k] += w0.m(i) * sc[k][2 * i + 1];
        summs1[k] += w1.m(i) * sc[k][2 * i + 1];
      }
      const __m256i y = Load256(b[k][i].qs);
      const float da = sc[k][2 * i];
      acc0[k] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * da), Ops::MulSumUS8(ax0, _mm256_sign_epi8(y, qa0)), acc0[k]);
      acc1[k] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * da), Ops::MulSumUS8(ax1, _mm256_sign_epi8(y, qa1)), acc1[k]);
    }
  }
  for (int k = 0; k < 4; ++k) {
    if constexpr (W::kHasMin) {
      out[k] = HSum(acc0[k]) + summs0[k];
      out[4 + k] = HSum(acc1[k]) + summs1[k];
    } else {
      out[k] = HSum(acc0[k]);
      out[4 + k] = HSum(acc1[k]);
    }
  }
}

template <class Ops, class W = Q8_0Chunks>
void DotQ8x4T(int64_t n, const void* w, const void* x, size_t stride, const float* scales, size_t sstride,
              float* out) {
  using A = typename W::Act;
  const W a(w, n);
  const auto* xb = static_cast<const uint8_t*>(x);
  const A* b[4];
  const float* sc[4];
  for (int k = 0; k < 4; ++k) {
    b[k] = reinterpret_cast<const A*>(xb + k * stride);
    sc[k] = scales + k * sstride;
  }
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  [[maybe_unused]] float summs[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < a.cols() / kQk32; ++i) {
    const __m256i qa = a.codes(i);
    const __m256i ax = _mm256_sign_epi8(qa, qa);
    const float d = a.d(i);
    for (int k = 0; k < 4; ++k) {
      if constexpr (W::kHasMin) summs[k] += a.m(i) * sc[k][2 * i + 1];
      const __m256i sy = _mm256_sign_epi8(Load256(b[k][i].qs), qa);
      acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[k][2 * i]), Ops::MulSumUS8(ax, sy), acc[k]);
    }
  }
  for (int k = 0; k < 4; ++k) {
    if constexpr (W::kHasMin) {
      out[k] = HSum(acc[k]) + summs[k];
    } else {
      out[k] = HSum(acc[k]);
    }
  }
}

}  // namespace
}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_DOT_KERNELS_X86_H_
