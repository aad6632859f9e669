// Plain C++ kernels for every supported weight type: the oracle that SIMD and
// CUDA variants are tested against, and the portable fallback.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/fp16.h"
#include "common/quant_blocks.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/ggml_numerics.h"
#include "kernels/cpu/quant_kernels.h"
#include "kernels/cpu/quant_reference.h"

namespace tessera::cpu {
namespace {

inline float H(uint16_t h) { return Fp16ToFp32(h); }

// ---- dequantization -------------------------------------------------------

void DequantF32(const void* src, float* y, int64_t n) { std::memcpy(y, src, n * sizeof(float)); }
void DequantF16(const void* src, float* y, int64_t n) {
  auto* x = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = H(x[i]);
}
void DequantBF16(const void* src, float* y, int64_t n) {
  auto* x = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = Bf16ToFp32(x[i]);
}

void DequantQ4_0(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQk32; ++i, y += kQk32) {
    const float d = H(b[i].d);
    for (int j = 0; j < kQk32 / 2; ++j) {
      y[j] = ((b[i].qs[j] & 0x0F) - 8) * d;
      y[j + 16] = ((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantQ4_1(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQk32; ++i, y += kQk32) {
    const float d = H(b[i].d), m = H(b[i].m);
    for (int j = 0; j < kQk32 / 2; ++j) {
      y[j] = (b[i].qs[j] & 0x0F) * d + m;
      y[j + 16] = (b[i].qs[j] >> 4) * d + m;
    }
  }
}

inline uint32_t Load32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }

void DequantQ5_0(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQk32; ++i, y += kQk32) {
    const float d = H(b[i].d);
    const uint32_t qh = Load32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
      y[j] = (((b[i].qs[j] & 0x0F) | (h0 << 4)) - 16) * d;
      y[j + 16] = (((b[i].qs[j] >> 4) | (h1 << 4)) - 16) * d;
    }
  }
}

void DequantQ5_1(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQk32; ++i, y += kQk32) {
    const float d = H(b[i].d), m = H(b[i].m);
    const uint32_t qh = Load32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
      y[j] = ((b[i].qs[j] & 0x0F) | (h0 << 4)) * d + m;
      y[j + 16] = ((b[i].qs[j] >> 4) | (h1 << 4)) * d + m;
    }
  }
}

void DequantQ8_0(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQk32; ++i, y += kQk32) {
    const float d = H(b[i].d);
    for (int j = 0; j < kQk32; ++j) y[j] = b[i].qs[j] * d;
  }
}

// Tessera's group layouts: x = q * d + m per group (quant_blocks.h).
template <int G>
void DequantQ4G(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ4G<G>*>(src);
  for (int64_t i = 0; i < n / G; ++i) {
    const float d = b[i].d, m = b[i].m;
    for (int c = 0; c < G / kQk32; ++c, y += kQk32) {
      const uint8_t* qs = b[i].qs + 16 * c;
      for (int j = 0; j < kQk32 / 2; ++j) {
        y[j] = (qs[j] & 0x0F) * d + m;
        y[j + 16] = (qs[j] >> 4) * d + m;
      }
    }
  }
}

template <int G>
void DequantQ8G(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ8G<G>*>(src);
  for (int64_t i = 0; i < n / G; ++i, y += G) {
    const float d = b[i].d, m = b[i].m;
    for (int j = 0; j < G; ++j) y[j] = b[i].qs[j] * d + m;
  }
}

// Mixed-width rows: Q8G<G> blocks over the wide columns, then Q4G<G>.
template <int G>
void DequantQ84G(const void* src, float* y, int64_t n) {
  const int64_t cols = MixedCols(n), wide = MixedWideCols(n);
  DequantQ8G<G>(src, y, wide);
  DequantQ4G<G>(static_cast<const uint8_t*>(src) + wide / G * sizeof(BlockQ8G<G>), y + wide, cols - wide);
}

void DequantQ8_1F(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ8_1F*>(src);
  for (int64_t i = 0; i < n / kQk32; ++i, y += kQk32) {
    for (int j = 0; j < kQk32; ++j) y[j] = b[i].qs[j] * b[i].d;
  }
}

void DequantQ8_1(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ8_1*>(src);
  for (int64_t i = 0; i < n / kQk32; ++i, y += kQk32) {
    const float d = H(b[i].d);
    for (int j = 0; j < kQk32; ++j) y[j] = b[i].qs[j] * d;
  }
}

void DequantQ8_K(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ8_K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i, y += kQkK) {
    for (int j = 0; j < kQkK; ++j) y[j] = b[i].qs[j] * b[i].d;
  }
}

void DequantQ2_K(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const float d = H(b[i].d), dmin = H(b[i].dmin);
    const uint8_t* q = b[i].qs;
    int is = 0;
    for (int half = 0; half < 2; ++half) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = b[i].scales[is++];
          const float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * ((q[l + 16 * part] >> shift) & 3) - ml;
        }
      }
      q += 32;
    }
  }
}

void DequantQ3_K(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    int8_t scales[16];
    UnpackQ3KScales(b[i].scales, scales);
    const float d = H(b[i].d);
    const uint8_t* q = b[i].qs;
    const uint8_t* hm = b[i].hmask;
    uint8_t m = 1;
    int is = 0;
    for (int half = 0; half < 2; ++half) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const float dl = d * scales[is++];
          for (int l = 0; l < 16; ++l) {
            const int idx = l + 16 * part;
            *y++ = dl * (static_cast<int>((q[idx] >> shift) & 3) - ((hm[idx] & m) ? 0 : 4));
          }
        }
        m <<= 1;
      }
      q += 32;
    }
  }
}

void DequantQ4_K(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const float d = H(b[i].d), dmin = H(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0, is = 0; j < kQkK; j += 64, is += 2, q += 32) {
      uint8_t sc, m;
      ScaleMinK4(is, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      ScaleMinK4(is + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void DequantQ5_K(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const float d = H(b[i].d), dmin = H(b[i].dmin);
    const uint8_t* ql = b[i].qs;
    const uint8_t* qh = b[i].qh;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < kQkK; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
      uint8_t sc, m;
      ScaleMinK4(is, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      ScaleMinK4(is + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    }
  }
}

void DequantQ6_K(const void* src, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const float d = H(b[i].d);
    const uint8_t* ql = b[i].ql;
    const uint8_t* qh = b[i].qh;
    const int8_t* sc = b[i].scales;
    for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = static_cast<int>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = static_cast<int>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = static_cast<int>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = static_cast<int>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

// ---- activation quantizers ------------------------------------------------

void QuantizeF32(const float* x, void* dst, int64_t n) { std::memcpy(dst, x, n * sizeof(float)); }

void QuantizeQ8_0(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQk32; ++i, x += kQk32) {
    float amax = 0;
    for (int j = 0; j < kQk32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    y[i].d = Fp32ToFp16(d);
    for (int j = 0; j < kQk32; ++j) y[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
  }
}

void QuantizeQ8_1(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQk32; ++i, x += kQk32) {
    float amax = 0;
    for (int j = 0; j < kQk32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    y[i].d = Fp32ToFp16(d);
    int sum = 0;
    for (int j = 0; j < kQk32; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
      sum += y[i].qs[j];
    }
    y[i].s = Fp32ToFp16(d * sum);
  }
}

void QuantizeQ8_1F(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_1F*>(dst);
  for (int64_t i = 0; i < n / kQk32; ++i, x += kQk32) {
    float amax = 0;
    for (int j = 0; j < kQk32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    y[i].d = d;
    int sum = 0;
    for (int j = 0; j < kQk32; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
      sum += y[i].qs[j];
    }
    y[i].s = d * static_cast<float>(sum);
  }
}

}  // namespace

void QuantizeRowQ8_K(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQkK; ++i, x += kQkK) {
    float amax = 0, max = 0;
    for (int j = 0; j < kQkK; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) { amax = ax; max = x[j]; }
    }
    if (amax == 0.f) {
      y[i].d = 0.f;
      std::memset(y[i].qs, 0, sizeof(y[i].qs));
      std::memset(y[i].bsums, 0, sizeof(y[i].bsums));
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < kQkK; ++j) {
      const int v = static_cast<int>(std::nearbyint(iscale * x[j]));
      y[i].qs[j] = static_cast<int8_t>(v > 127 ? 127 : v);
    }
    for (int j = 0; j < kQkK / 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[j * 16 + l];
      y[i].bsums[j] = static_cast<int16_t>(sum);
    }
    y[i].d = 1.f / iscale;
  }
}

void UnpackQ3KScales(const uint8_t packed[12], int8_t out[16]) {
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  uint32_t aux[4];
  std::memcpy(aux, packed, 12);
  const uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  std::memcpy(out, aux, 16);
  for (int i = 0; i < 16; ++i) out[i] = static_cast<int8_t>(out[i] - 32);
}

void ScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

namespace {

// ---- reference dot products -----------------------------------------------
// Dequantize both sides a block at a time and accumulate in double: slow but
// exact enough to be the oracle for every optimized variant.
template <DequantRowFn kW, size_t kWBytes, DequantRowFn kX, size_t kXBytes, int kChunk>
float DotViaDequant(int64_t n, const void* w, const void* x) {
  float wf[kChunk], xf[kChunk];
  auto* wb = static_cast<const uint8_t*>(w);
  auto* xb = static_cast<const uint8_t*>(x);
  double sum = 0;
  for (int64_t i = 0; i < n; i += kChunk, wb += kWBytes, xb += kXBytes) {
    kW(wb, wf, kChunk);
    kX(xb, xf, kChunk);
    for (int j = 0; j < kChunk; ++j) sum += static_cast<double>(wf[j]) * xf[j];
  }
  return static_cast<float>(sum);
}

// A mixed-width row against a Q8_1F row, as DotViaDequant.
template <int G>
float DotQ84G(int64_t n, const void* w, const void* x) {
  const int64_t cols = MixedCols(n);
  std::vector<float> wf(static_cast<size_t>(cols)), xf(static_cast<size_t>(cols));
  DequantQ84G<G>(w, wf.data(), n);
  DequantQ8_1F(x, xf.data(), cols);
  double sum = 0;
  for (int64_t j = 0; j < cols; ++j) sum += static_cast<double>(wf[j]) * xf[j];
  return static_cast<float>(sum);
}

template <int G, GgmlType kQ4, GgmlType kQ8, GgmlType kQ84>
void RegisterGroup(KernelTable& t) {
  constexpr size_t kActBytes = G / kQk32 * sizeof(BlockQ8_1F);
  t.Register({kQ84, GgmlType::kQ8_1F, Isa::kReference, DequantQ84G<G>, QuantizeQ8_1F, DotQ84G<G>});
  t.Register({kQ4, GgmlType::kQ8_1F, Isa::kReference, DequantQ4G<G>, QuantizeQ8_1F,
              DotViaDequant<DequantQ4G<G>, sizeof(BlockQ4G<G>), DequantQ8_1F, kActBytes, G>});
  t.Register({kQ8, GgmlType::kQ8_1F, Isa::kReference, DequantQ8G<G>, QuantizeQ8_1F,
              DotViaDequant<DequantQ8G<G>, sizeof(BlockQ8G<G>), DequantQ8_1F, kActBytes, G>});
}

// sum a[i] * b[i] in L lanes of fma, reduced as a horizontal add of that
// width does.
template <int L>
float DotHalfLanes(const uint16_t* a, const float* b, int n) {
  float lanes[L] = {};
  int i = 0;
  for (; i + L <= n; i += L) {
    for (int l = 0; l < L; ++l) lanes[l] = std::fma(Fp16ToFp32(a[i + l]), b[i + l], lanes[l]);
  }
  float s = ReduceLanes(lanes, L);
  for (; i < n; ++i) s += Fp16ToFp32(a[i]) * b[i];
  return s;
}

}  // namespace

VectorKernels ReferenceVectorKernels(GgmlOrder order) {
  VectorKernels k;
  k.isa = Isa::kReference;
  k.order = order;
  // Lanes(order) lanes with fma, reduced as the horizontal add of that
  // width does: the same sums as the SIMD variants.
  k.dot = order == GgmlOrder::kAvx512 ? DotHalfLanes<16> : DotHalfLanes<8>;
  k.axpy = [](float alpha, const uint16_t* x, float* y, int n) {
    for (int i = 0; i < n; ++i) y[i] = std::fma(alpha, Fp16ToFp32(x[i]), y[i]);
  };
  k.from_float = [](const float* x, uint16_t* y, int n) {
    for (int i = 0; i < n; ++i) y[i] = Fp32ToFp16(x[i]);
  };
  if (order == GgmlOrder::kAvx512) {
    k.silu_mul = [](const float* g, const float* u, float* out, int64_t n) {
      for (int64_t i = 0; i < n; ++i) out[i] = SiluCompat(g[i]) * u[i];
    };
    k.attend = AttendOneHeadReference<16>;
  } else {
    k.silu_mul = [](const float* g, const float* u, float* out, int64_t n) {
      for (int64_t i = 0; i < n; ++i) out[i] = SiluCompatAvx2(g[i]) * u[i];
    };
    k.attend = AttendOneHeadReference<8>;
  }
  return k;
}

void RegisterReferenceKernels(KernelTable& t) {
  using G = GgmlType;
  constexpr Isa R = Isa::kReference;
  t.Register({G::kF32, G::kF32, R, DequantF32, QuantizeF32, DotViaDequant<DequantF32, 128, DequantF32, 128, 32>});
  t.Register({G::kF16, G::kF32, R, DequantF16, QuantizeF32, DotViaDequant<DequantF16, 64, DequantF32, 128, 32>});
  t.Register({G::kBF16, G::kF32, R, DequantBF16, QuantizeF32, DotViaDequant<DequantBF16, 64, DequantF32, 128, 32>});
  t.Register({G::kQ4_0, G::kQ8_0, R, DequantQ4_0, QuantizeQ8_0, DotViaDequant<DequantQ4_0, sizeof(BlockQ4_0), DequantQ8_0, sizeof(BlockQ8_0), 32>});
  t.Register({G::kQ4_1, G::kQ8_1, R, DequantQ4_1, QuantizeQ8_1, DotViaDequant<DequantQ4_1, sizeof(BlockQ4_1), DequantQ8_1, sizeof(BlockQ8_1), 32>});
  t.Register({G::kQ5_0, G::kQ8_0, R, DequantQ5_0, QuantizeQ8_0, DotViaDequant<DequantQ5_0, sizeof(BlockQ5_0), DequantQ8_0, sizeof(BlockQ8_0), 32>});
  t.Register({G::kQ5_1, G::kQ8_1, R, DequantQ5_1, QuantizeQ8_1, DotViaDequant<DequantQ5_1, sizeof(BlockQ5_1), DequantQ8_1, sizeof(BlockQ8_1), 32>});
  t.Register({G::kQ8_0, G::kQ8_0, R, DequantQ8_0, QuantizeQ8_0, DotViaDequant<DequantQ8_0, sizeof(BlockQ8_0), DequantQ8_0, sizeof(BlockQ8_0), 32>});
  t.Register({G::kQ2_K, G::kQ8_K, R, DequantQ2_K, QuantizeRowQ8_K, DotViaDequant<DequantQ2_K, sizeof(BlockQ2_K), DequantQ8_K, sizeof(BlockQ8_K), 256>});
  t.Register({G::kQ3_K, G::kQ8_K, R, DequantQ3_K, QuantizeRowQ8_K, DotViaDequant<DequantQ3_K, sizeof(BlockQ3_K), DequantQ8_K, sizeof(BlockQ8_K), 256>});
  t.Register({G::kQ4_K, G::kQ8_K, R, DequantQ4_K, QuantizeRowQ8_K, DotViaDequant<DequantQ4_K, sizeof(BlockQ4_K), DequantQ8_K, sizeof(BlockQ8_K), 256>});
  t.Register({G::kQ5_K, G::kQ8_K, R, DequantQ5_K, QuantizeRowQ8_K, DotViaDequant<DequantQ5_K, sizeof(BlockQ5_K), DequantQ8_K, sizeof(BlockQ8_K), 256>});
  t.Register({G::kQ6_K, G::kQ8_K, R, DequantQ6_K, QuantizeRowQ8_K, DotViaDequant<DequantQ6_K, sizeof(BlockQ6_K), DequantQ8_K, sizeof(BlockQ8_K), 256>});
  RegisterGroup<32, G::kQ4G32, G::kQ8G32, G::kQ84G32>(t);
  RegisterGroup<64, G::kQ4G64, G::kQ8G64, G::kQ84G64>(t);
  RegisterGroup<128, G::kQ4G128, G::kQ8G128, G::kQ84G128>(t);
}

}  // namespace tessera::cpu
