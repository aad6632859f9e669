// AVX2 + FMA + F16C kernels. This translation unit is compiled with those
// target flags and its functions are only reached through the registry after
// BestIsa() confirmed the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/quant_blocks.h"
#include "kernels/cpu/quant_kernels.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/avx2_math.h"
#include "kernels/cpu/dot_kernels_x86.h"
#include "kernels/cpu/quant_reference.h"

namespace tessera::cpu {
namespace {




inline int HSumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}



// Sum of products of unsigned bytes ux with signed bytes sy, as 8 floats.
inline __m256 MulSumUS8(__m256i ux, __m256i sy) {
  const __m256i dot16 = _mm256_maddubs_epi16(ux, sy);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)));
}

struct Avx2Ops {
  static __m256 MulSumUS8(__m256i ux, __m256i sy) { return tessera::cpu::MulSumUS8(ux, sy); }
};

// Sum of products of signed bytes x and y, as 8 floats.
inline __m256 MulSumI8(__m256i x, __m256i y) {
  const __m256i ax = _mm256_sign_epi8(x, x);
  const __m256i sy = _mm256_sign_epi8(y, x);
  return MulSumUS8(ax, sy);
}



// 32 fifth-bits of qh expanded to bytes of 0x10 (bit set) or 0.
inline __m256i HighBits(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                         0x0101010101010101, 0x0000000000000000);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuf);
  const __m256i bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
  bytes = _mm256_or_si256(bytes, bit_mask);
  bytes = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
  return _mm256_and_si256(bytes, _mm256_set1_epi8(0x10));
}

float DotQ4_0(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ4_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m256 d = _mm256_set1_ps(H(a[i].d) * H(b[i].d));
    const __m256i qx = _mm256_sub_epi8(Nibbles(a[i].qs), _mm256_set1_epi8(8));
    acc = _mm256_fmadd_ps(d, MulSumI8(qx, Load256(b[i].qs)), acc);
  }
  return HSum(acc);
}



float DotQ5_0(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ5_0*>(w);
  auto* b = static_cast<const BlockQ8_0*>(x);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const __m256 d = _mm256_set1_ps(H(a[i].d) * H(b[i].d));
    __m256i qx = _mm256_or_si256(Nibbles(a[i].qs), HighBits(a[i].qh));
    qx = _mm256_sub_epi8(qx, _mm256_set1_epi8(16));
    acc = _mm256_fmadd_ps(d, MulSumI8(qx, Load256(b[i].qs)), acc);
  }
  return HSum(acc);
}

float DotQ5_1(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ5_1*>(w);
  auto* b = static_cast<const BlockQ8_1*>(x);
  __m256 acc = _mm256_setzero_ps();
  float summs = 0;
  for (int64_t i = 0; i < n / kQk32; ++i) {
    summs += H(a[i].m) * H(b[i].s);
    const __m256 d = _mm256_set1_ps(H(a[i].d) * H(b[i].d));
    const __m256i qx = _mm256_or_si256(Nibbles(a[i].qs), HighBits(a[i].qh));
    acc = _mm256_fmadd_ps(d, MulSumUS8(qx, Load256(b[i].qs)), acc);
  }
  return HSum(acc) + summs;
}



// Q4_K x Q8_K: per 32-element sub-block, an integer dot scaled by its 6-bit
// scale; the mins are folded in through the activation block sums.
// Q4_K x Q8_K in the float order of ggml's AVX2 kernel (the one llama.cpp
// runs on AVX2 and AVX-512 builds alike): the integer sums stay in 8 lanes,
// each lane accumulates d * sum across super-blocks with fma, and the mins
// go through 4 lanes of their own; the lanes are summed at the end.
float DotQ4_K(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ4_K*>(w);
  auto* b = static_cast<const BlockQ8_K*>(x);
  __m256 acc = _mm256_setzero_ps();
  __m128 acc_m = _mm_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) ScaleMinK4(j, a[i].scales, &sc[j], &mn[j]);
    const float d = b[i].d * H(a[i].d);
    const float dmin = -b[i].d * H(a[i].dmin);
    // Mins: lane l = mn[2l] * (bsums[4l] + bsums[4l+1]) + mn[2l+1] * (bsums[4l+2] + bsums[4l+3]).
    alignas(16) int32_t prod[4];
    for (int l = 0; l < 4; ++l) {
      prod[l] = mn[2 * l] * (b[i].bsums[4 * l] + b[i].bsums[4 * l + 1]) +
                mn[2 * l + 1] * (b[i].bsums[4 * l + 2] + b[i].bsums[4 * l + 3]);
    }
    acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(prod))),
                         acc_m);
    __m256i sumi = _mm256_setzero_si256();
    const uint8_t* q4 = a[i].qs;
    const int8_t* q8 = b[i].qs;
    for (int j = 0; j < 4; ++j, q4 += 32, q8 += 64) {
      const __m256i raw = Load256(q4);
      const __m256i lo = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F));
      const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, Load256(q8)), _mm256_set1_epi16(sc[2 * j]));
      const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, Load256(q8 + 32)), _mm256_set1_epi16(sc[2 * j + 1]));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
  acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
  return HSum(acc) + _mm_cvtss_f32(acc_m);
}

// Q5_K x Q8_K: Q4_K plus a fifth bit per element from qh (bit 2j of qh[l]
// for the low 32 of 64-element chunk j, bit 2j+1 for the high 32).
float DotQ5_K(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ5_K*>(w);
  auto* b = static_cast<const BlockQ8_K*>(x);
  float sum = 0;
  const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) ScaleMinK4(j, a[i].scales, &sc[j], &mn[j]);
    int summ = 0;
    for (int j = 0; j < 8; ++j) summ += mn[j] * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
    __m256i acc = _mm256_setzero_si256();
    const __m256i qh = Load256(a[i].qh);
    const uint8_t* q5 = a[i].qs;
    const int8_t* q8 = b[i].qs;
    for (int j = 0; j < 4; ++j, q5 += 32, q8 += 64) {
      const __m256i raw = Load256(q5);
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j)), one), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j + 1)), one), 4);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(raw, m4), h0);
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), h1);
      const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, Load256(q8)), _mm256_set1_epi16(sc[2 * j]));
      const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, Load256(q8 + 32)), _mm256_set1_epi16(sc[2 * j + 1]));
      acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
    }
    const float d = H(a[i].d) * b[i].d, dmin = H(a[i].dmin) * b[i].d;
    sum += d * HSumI32(acc) - dmin * summ;
  }
  return sum;
}

// Scales of two 16-element sub-blocks as 16 int16 lanes (first 8, next 8).
inline __m256i PairScales(int s0, int s1) {
  return _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(s1)), _mm_set1_epi16(static_cast<int16_t>(s0)));
}

// Q2_K x Q8_K: 2-bit values with a 4-bit scale and 4-bit min per 16.
float DotQ2_K(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ2_K*>(w);
  auto* b = static_cast<const BlockQ8_K*>(x);
  float sum = 0;
  const __m256i m2 = _mm256_set1_epi8(3);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const uint8_t* sc = a[i].scales;
    int summ = 0;
    for (int j = 0; j < 16; ++j) summ += (sc[j] >> 4) * b[i].bsums[j];
    __m256i acc = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const __m256i q = Load256(a[i].qs + 32 * half);
      for (int j = 0; j < 4; ++j) {
        const __m256i v = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j)), m2);
        const int is = half * 8 + 2 * j;
        const __m256i prod = _mm256_maddubs_epi16(v, Load256(b[i].qs + half * 128 + j * 32));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(prod, PairScales(sc[is] & 0xF, sc[is + 1] & 0xF)));
      }
    }
    sum += H(a[i].d) * b[i].d * HSumI32(acc) - H(a[i].dmin) * b[i].d * summ;
  }
  return sum;
}

// Q3_K x Q8_K: value = low2 + 4*hbit - 4, computed as (low2 + 4*hbit)*y
// minus 4*y through the block sums; 6-bit signed scales per 16.
float DotQ3_K(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ3_K*>(w);
  auto* b = static_cast<const BlockQ8_K*>(x);
  float sum = 0;
  const __m256i m2 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    int8_t sc[16];
    UnpackQ3KScales(a[i].scales, sc);
    int bias = 0;
    for (int j = 0; j < 16; ++j) bias += sc[j] * b[i].bsums[j];
    const __m256i hm = Load256(a[i].hmask);
    __m256i acc = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const __m256i q = Load256(a[i].qs + 32 * half);
      for (int j = 0; j < 4; ++j) {
        const int bit = half * 4 + j;
        const __m256i low = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j)), m2);
        const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(bit)), one);
        const __m256i v = _mm256_or_si256(low, _mm256_slli_epi16(hb, 2));
        const int is = half * 8 + 2 * j;
        const __m256i prod = _mm256_maddubs_epi16(v, Load256(b[i].qs + half * 128 + j * 32));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(prod, PairScales(sc[is], sc[is + 1])));
      }
    }
    sum += H(a[i].d) * b[i].d * (HSumI32(acc) - 4 * bias);
  }
  return sum;
}

// Q6_K x Q8_K: values q - 32 computed as q*y - 32*y with the block sums.
// Q6_K x Q8_K in the float order of ggml's AVX2 kernel: per super-block the
// 8 lanes of integer sums less their lanes of 32 * scale * bsum, then
// acc = fma(d, lanes, acc) across super-blocks; summed at the end.
float DotQ6_K(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const BlockQ6_K*>(w);
  auto* b = static_cast<const BlockQ8_K*>(x);
  __m256 acc = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const uint8_t* ql = a[i].ql;
    const uint8_t* qh = a[i].qh;
    const int8_t* q8 = b[i].qs;
    const int8_t* sc = a[i].scales;
    const __m256i sub = _mm256_slli_epi32(
        _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].bsums)),
                          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)))),
        5);
    __m256i sumi = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, q8 += 128, sc += 8) {
      const __m256i l0 = Load256(ql), l1 = Load256(ql + 32), h = Load256(qh);
      const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m2), 4));
      const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4));
      const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4));
      const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4));
      const __m256i qs[4] = {q0, q1, q2, q3};
      for (int k = 0; k < 4; ++k) {
        // 32 elements of group k use scales sc[2k] (first 16) and sc[2k+1].
        const __m256i prod = _mm256_maddubs_epi16(qs[k], Load256(q8 + 32 * k));
        const __m256i scales = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(prod, scales));
      }
    }
    const float d = b[i].d * H(a[i].d);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi, sub)), acc);
  }
  return HSum(acc);
}

float DotF32(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const float*>(w);
  auto* b = static_cast<const float*>(x);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  float s = HSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

float DotF16(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const float*>(x);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    const __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i + 8)));
    acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(b + i + 8), acc1);
  }
  float s = HSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += _cvtsh_ss(a[i]) * b[i];
  return s;
}

float DotBF16(int64_t n, const void* w, const void* x) {
  auto* a = static_cast<const uint16_t*>(w);
  auto* b = static_cast<const float*>(x);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i wi = _mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))), 16);
    acc = _mm256_fmadd_ps(_mm256_castsi256_ps(wi), _mm256_loadu_ps(b + i), acc);
  }
  float s = HSum(acc);
  for (; i < n; ++i) {
    uint32_t u = static_cast<uint32_t>(a[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    s += f * b[i];
  }
  return s;
}

}  // namespace

namespace {









// Activation quantizers: same values as the reference (127/amax scaling,
// round-to-nearest-even), vectorized.
// kAct: the block written, BlockQ8_0, BlockQ8_1 (f16 d and sum) or
// BlockQ8_1F (f32 d and sum).
template <GgmlType kAct>
void QuantizeRow8(const float* x, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQk32; ++i, x += kQk32) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.f);
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
    }
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float max_scalar = _mm_cvtss_f32(m4);
    const float d = max_scalar / 127.f;
    const float id = max_scalar != 0.f ? 127.f / max_scalar : 0.f;
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], _mm256_set1_ps(id)),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    // Pack 32 int32 to 32 int8 in element order.
    __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
    __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    if constexpr (kAct == GgmlType::kQ8_1F) {
      auto* y = static_cast<BlockQ8_1F*>(dst) + i;
      y->d = d;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y->qs), p);
      const int sum = HSumI32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
      y->s = d * static_cast<float>(sum);
    } else if constexpr (kAct == GgmlType::kQ8_1) {
      auto* y = static_cast<BlockQ8_1*>(dst) + i;
      y->d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y->qs), p);
      const int sum = HSumI32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
      y->s = _cvtss_sh(d * static_cast<float>(sum), _MM_FROUND_TO_NEAREST_INT);
    } else {
      auto* y = static_cast<BlockQ8_0*>(dst) + i;
      y->d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y->qs), p);
    }
  }
}

// silu(g) * u with the exp of llama.cpp's AVX-512 (kAvx512) or AVX2 build.
template <GgmlOrder O>
void SiluMul(const float* g, const float* u, float* out, int64_t n) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.f);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 neg = _mm256_sub_ps(_mm256_setzero_ps(), x);
    const __m256 e = O == GgmlOrder::kAvx512 ? avx2::Exp8(neg) : avx2::Exp8Avx2Order(neg);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) out[i] = (O == GgmlOrder::kAvx512 ? SiluCompat(g[i]) : SiluCompatAvx2(g[i])) * u[i];
}

// Up to four rows of one adapter: the shrink runs the rows' fma chains
// side by side (each chain is latency-bound alone), then each row expands.
// The reference's operations, 8 lanes at a time (fma is exactly rounded, so
// lanes and scalar tails give the reference's bits). scratch: n * rank + out.
}  // namespace

VectorKernels Avx2VectorKernels(GgmlOrder order) {
  VectorKernels k;
  k.isa = Isa::kAvx2;
  k.order = order;
  if (order == GgmlOrder::kAvx512) {
    k.dot = [](const uint16_t* a, const float* b, int n) {
      __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
      int i = 0;
      for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))),
                               _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i + 8))),
                               _mm256_loadu_ps(b + i + 8), acc1);
      }
      float s = HSum(_mm256_add_ps(acc0, acc1));
      for (; i < n; ++i) s += _cvtsh_ss(a[i]) * b[i];
      return s;
    };
  } else {
    k.dot = [](const uint16_t* a, const float* b, int n) {
      __m256 acc = _mm256_setzero_ps();
      int i = 0;
      for (; i + 8 <= n; i += 8) {
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))),
                              _mm256_loadu_ps(b + i), acc);
      }
      float s = HSum(acc);
      for (; i < n; ++i) s += _cvtsh_ss(a[i]) * b[i];
      return s;
    };
  }
  k.axpy = [](float alpha, const uint16_t* x, float* y, int n) {
    const __m256 va = _mm256_set1_ps(alpha);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, xv, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; ++i) y[i] += alpha * _cvtsh_ss(x[i]);
  };
  k.from_float = [](const float* x, uint16_t* y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; ++i) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
  };
  k.silu_mul = order == GgmlOrder::kAvx512 ? SiluMul<GgmlOrder::kAvx512> : SiluMul<GgmlOrder::kAvx2>;
  k.attend = order == GgmlOrder::kAvx512 ? AttendOneHeadAvx2<16> : AttendOneHeadAvx2<8>;
  return k;
}

namespace {
// Tessera's group layouts run the Q4_1 / Q8_0 kernels with per-group scales.
template <int G, GgmlType kQ4, GgmlType kQ8, GgmlType kQ84, class With>
void RegisterGroup(With& with) {
  with(kQ4, DotQ4T<Avx2Ops, Q4GChunks<G>>, DotQ4x4T<Avx2Ops, Q4GChunks<G>>, DotQ4_2x4T<Avx2Ops, Q4GChunks<G>>);
  with(kQ8, DotQ8T<Avx2Ops, Q8GChunks<G>>, DotQ8x4T<Avx2Ops, Q8GChunks<G>>, DotQ8_2x4T<Avx2Ops, Q8GChunks<G>>);
  with(kQ84, DotQ8T<Avx2Ops, Q84GChunks<G>>, DotQ8x4T<Avx2Ops, Q84GChunks<G>>, DotQ8_2x4T<Avx2Ops, Q84GChunks<G>>);
}
}  // namespace

void RegisterAvx2Kernels(KernelTable& t) {
  using G = GgmlType;
  constexpr Isa A = Isa::kAvx2;
  // Dequantizers and activation quantizers are shared with the reference:
  // they are off the hot path (one activation row per matmul).
  auto with = [&](G type, VecDotFn dot, decltype(WeightKernels::vec_dot_x4) dot_x4 = nullptr,
                  decltype(WeightKernels::vec_dot_2x4) dot_2x4 = nullptr) {
    WeightKernels k = *t.Find(type, Isa::kReference);
    k.isa = A;
    k.vec_dot = dot;
    k.vec_dot_x4 = dot_x4;
    k.vec_dot_2x4 = dot_2x4;
    if (k.act_type == G::kQ8_0) k.quantize_act = QuantizeRow8<G::kQ8_0>;
    if (k.act_type == G::kQ8_1) k.quantize_act = QuantizeRow8<G::kQ8_1>;
    if (k.act_type == G::kQ8_1F) k.quantize_act = QuantizeRow8<G::kQ8_1F>;
    t.Register(k);
  };
  with(G::kF32, DotF32);
  with(G::kF16, DotF16);
  with(G::kBF16, DotBF16);
  with(G::kQ4_0, DotQ4_0);
  with(G::kQ4_1, DotQ4T<Avx2Ops>, DotQ4x4T<Avx2Ops>, DotQ4_2x4T<Avx2Ops>);
  with(G::kQ5_0, DotQ5_0);
  with(G::kQ5_1, DotQ5_1);
  with(G::kQ8_0, DotQ8T<Avx2Ops>, DotQ8x4T<Avx2Ops>, DotQ8_2x4T<Avx2Ops>);
  with(G::kQ4_K, DotQ4_K);
  with(G::kQ6_K, DotQ6_K);
  with(G::kQ2_K, DotQ2_K);
  with(G::kQ3_K, DotQ3_K);
  with(G::kQ5_K, DotQ5_K);
  RegisterGroup<32, G::kQ4G32, G::kQ8G32, G::kQ84G32>(with);
  RegisterGroup<64, G::kQ4G64, G::kQ8G64, G::kQ84G64>(with);
  RegisterGroup<128, G::kQ4G128, G::kQ8G128, G::kQ84G128>(with);
}

}  // namespace tessera::cpu
