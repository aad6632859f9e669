// Numerics that reproduce llama.cpp's CPU results bit for bit.
//
// Tessera's CPU path is the reference for every other backend, and it is
// itself held to llama.cpp: greedy decoding of small quantized models is
// chaotic (a one-ulp change in a softmax weight can change the 40th token),
// so the orders of accumulation and the exp approximation below follow
// ggml's CPU backend on AVX-512 machines. Everything here is plain C++
// with explicit fma, so the results are the same on any x86-64 with FMA.
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

// Sum of 16 lanes in the pairing order of a 512-bit horizontal add:
// (l[i] + l[i+8]), then halves again, then (0+2)+(1+3).
inline float Reduce16(const float* l) {
  float t3[8], t6[4];
  for (int i = 0; i < 8; ++i) t3[i] = l[i + 8] + l[i];
  for (int i = 0; i < 4; ++i) t6[i] = t3[i + 4] + t3[i];
  return (t6[0] + t6[2]) + (t6[1] + t6[3]);
}

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_GGML_NUMERICS_H_
