// Numerics that reproduce llama.cpp's CPU results bit for bit.
//
// Tessera's CPU path is the reference for every other backend, and it is
// itself held to llama.cpp: greedy decoding of small quantized models is
// chaotic (a one-ulp change in a softmax weight can change the 40th token),
// so the orders of accumulation and the exp approximation below follow
// ggml's CPU backend. llama.cpp itself computes different bits on AVX-512
// and on AVX2 builds (16- or 8-lane sums in its f16 attention and softmax,
// two exp implementations), so Tessera follows the build a host would get
// (GgmlOrder, chosen from the CPU's features at start). Everything here is
// plain C++ with explicit fma: a given order gives the same results on any
// x86-64 with FMA, whichever kernels run it.
#ifndef TESSERA_KERNELS_CPU_GGML_NUMERICS_H_
#define TESSERA_KERNELS_CPU_GGML_NUMERICS_H_

#include <cmath>
#include <cstdint>
#include <limits>

namespace tessera::cpu {

// exp(x) by range reduction to x = n*ln2 + b, |b| <= ln2/2, and a degree-5
// polynomial for exp(b) (the Arm optimized-routines expf, max error about
// 1.5 ulp), scaled by 2^n. This is the approximation ggml uses for softmax
// and SiLU.
inline float ExpfCompat(float x) {
  const float shift = 0x1.8p23f;
  const float z = std::fma(x, 0x1.715476p+0f, shift);
  const float n = z - shift;
  const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
  if (std::isnan(x)) return x;
  if (std::fabs(n) > 192.f) return n > 0 ? std::numeric_limits<float>::infinity() : 0.f;
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, std::fma(0x1.ffffecp-1f, b, 1.0f));
  return std::ldexp(j, static_cast<int>(n));
}

inline float SiluCompat(float x) { return x / (1.0f + ExpfCompat(0.0f - x)); }

// ggml's AVX2 exp (the same polynomial, finished as k + k*j with k = 2^n
// instead of scaling j + 1; different roundings), lane for lane.
inline float ExpfCompatAvx2(float x) {
  auto bits = [](float f) { uint32_t u; __builtin_memcpy(&u, &f, 4); return u; };
  auto from = [](uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; };
  const float r = 0x1.8p23f;
  const float z = std::fma(x, 0x1.715476p+0f, r);
  const float n = z - r;
  const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
  const uint32_t e = bits(z) << 23;
  const float k = from(e + bits(1.0f));
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, 0x1.ffffecp-1f * b);
  if (!(std::fabs(n) > 126.f)) return std::fma(k, j, k);
  const uint32_t g = n <= 0.f ? 0x82000000u : 0u;
  const float s1 = from(g + 0x7f000000u);
  const float s2 = from(e - g);
  if (std::fabs(n) > 192.f) return s1 * s1;
  return std::fma(s2, j, s2) * s1;
}

inline float SiluCompatAvx2(float x) { return x / (1.0f + ExpfCompatAvx2(0.0f - x)); }

// Which llama.cpp x86 build the float orders follow: 16 lanes (AVX-512F
// with DQ, as ggml's softmax and tinyBLAS require) or 8 (AVX2).
enum class GgmlOrder { kAvx512 = 16, kAvx2 = 8 };
inline int Lanes(GgmlOrder o) { return static_cast<int>(o); }
// The order llama.cpp built for this CPU would use; TESSERA_GGML_ORDER
// (avx512 or avx2) overrides it, for tests.
GgmlOrder HostGgmlOrder();

// Sum of 16 lanes in the pairing order of a 512-bit horizontal add:
// (l[i] + l[i+8]), then halves again, then (0+2)+(1+3).
inline float Reduce16(const float* l) {
  float t3[8], t6[4];
  for (int i = 0; i < 8; ++i) t3[i] = l[i + 8] + l[i];
  for (int i = 0; i < 4; ++i) t6[i] = t3[i + 4] + t3[i];
  return (t6[0] + t6[2]) + (t6[1] + t6[3]);
}

// Sum of 8 lanes in the order of a 256-bit horizontal add (high half onto
// low, movehl, movehdup): (l[i] + l[i+4]), then (0+2)+(1+3).
inline float Reduce8(const float* l) {
  float t[4];
  for (int i = 0; i < 4; ++i) t[i] = l[i] + l[i + 4];
  return (t[0] + t[2]) + (t[1] + t[3]);
}

inline float ReduceLanes(const float* l, int lanes) { return lanes == 16 ? Reduce16(l) : Reduce8(l); }

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_GGML_NUMERICS_H_
