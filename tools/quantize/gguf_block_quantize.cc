#include "tools/quantize/gguf_block_quantize.h"

#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/fp16.h"
#include "common/quant_blocks.h"

namespace tessera::quantize {
namespace {

// Smallest group maximum treated as a non-zero group (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest (ties to even) for |v| < 2^22 by adding 1.5 * 2^23 and
// reading the mantissa: ggml's nearest_int, whose results the K-quants'
// searches depend on (std::lrint would agree, but this states the contract).
inline int NearestInt(float v) {
  const float biased = v + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  return (bits & 0x007fffff) - 0x00400000;
}

inline uint16_t H(float f) { return Fp32ToFp16(f); }
inline float F(uint16_t h) { return Fp16ToFp32(h); }

void RowQ4_0(const float* x, BlockQ4_0* y, int64_t k) {
  const int64_t nb = k / kQk32;
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQk32; ++j) {
      if (amax < std::fabs(x[j])) { amax = std::fabs(x[j]); max = x[j]; }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = H(d);
    for (int j = 0; j < kQk32 / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[kQk32 / 2 + j] * id;
      const uint8_t q0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
      const uint8_t q1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void RowQ4_1(const float* x, BlockQ4_1* y, int64_t k) {
  const int64_t nb = k / kQk32;
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < kQk32; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = H(d);
    y[i].m = H(min);
    for (int j = 0; j < kQk32 / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[kQk32 / 2 + j] - min) * id;
      const uint8_t q0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f))));
      const uint8_t q1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f))));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void RowQ5_0(const float* x, BlockQ5_0* y, int64_t k) {
  const int64_t nb = k / kQk32;
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQk32; ++j) {
      if (amax < std::fabs(x[j])) { amax = std::fabs(x[j]); max = x[j]; }
    }
    const float d = max / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = H(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQk32 / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[kQk32 / 2 + j] * id;
      const uint8_t q0 = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x0 + 16.5f))));
      const uint8_t q1 = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x1 + 16.5f))));
      y[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= ((q0 & 0x10u) >> 4) << j;
      qh |= ((q1 & 0x10u) >> 4) << (j + kQk32 / 2);
    }
    std::memcpy(y[i].qh, &qh, sizeof(qh));
  }
}

void RowQ5_1(const float* x, BlockQ5_1* y, int64_t k) {
  const int64_t nb = k / kQk32;
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < kQk32; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = H(d);
    y[i].m = H(min);
    uint32_t qh = 0;
    for (int j = 0; j < kQk32 / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[kQk32 / 2 + j] - min) * id;
      const uint8_t q0 = static_cast<uint8_t>(x0 + 0.5f);
      const uint8_t q1 = static_cast<uint8_t>(x1 + 0.5f);
      y[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= ((q0 & 0x10u) >> 4) << j;
      qh |= ((q1 & 0x10u) >> 4) << (j + kQk32 / 2);
    }
    std::memcpy(y[i].qh, &qh, sizeof(qh));
  }
}

void RowQ8_0(const float* x, BlockQ8_0* y, int64_t k) {
  const int64_t nb = k / kQk32;
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float amax = 0.0f;
    for (int j = 0; j < kQk32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = H(d);
    for (int j = 0; j < kQk32; ++j) y[i].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  }
}

// Symmetric scale search over 19 candidate scales (ggml's make_qx_quants with
// rmse_type 1 and no importance weights: w = x^2). Returns the scale; L gets
// the codes in [0, 2*nmax).
float MakeQxQuants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) { amax = ax; max = x[i]; }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = NearestInt(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = NearestInt(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// ggml's make_q3_quants with do_rmse: greedy per-element refinement.
float MakeQ3Quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) { amax = ax; max = x[i]; }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = NearestInt(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        int new_l = NearestInt(x[i] * sl2 / slx);
        new_l = std::max(-nmax, std::min(nmax - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Asymmetric scale+min search (ggml's make_qkx2_quants). Returns the scale,
// *the_min gets -min (>= 0).
float MakeQkx2Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                     uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = NearestInt(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

inline void GetScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

void RowQ2_K(const float* x, BlockQ2_K* y, int64_t k) {
  const int64_t nb = k / kQkK;
  uint8_t L[kQkK], Laux[16];
  float weights[16], mins[kQkK / 16], scales[kQkK / 16];
  const float q4scale = 15.f;
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < kQkK / 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = MakeQkx2Quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < kQkK / 16; ++j) y[i].scales[j] = static_cast<uint8_t>(NearestInt(iscale * scales[j]));
      y[i].d = H(max_scale / q4scale);
    } else {
      for (int j = 0; j < kQkK / 16; ++j) y[i].scales[j] = 0;
      y[i].d = H(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < kQkK / 16; ++j) {
        const int l = NearestInt(iscale * mins[j]);
        y[i].scales[j] = static_cast<uint8_t>(y[i].scales[j] | (l << 4));
      }
      y[i].dmin = H(max_min / q4scale);
    } else {
      y[i].dmin = H(0.f);
    }
    for (int j = 0; j < kQkK / 16; ++j) {
      const float d = F(y[i].d) * (y[i].scales[j] & 0xF);
      if (d == 0.0f) continue;
      const float dm = F(y[i].dmin) * (y[i].scales[j] >> 4);
      for (int ii = 0; ii < 16; ++ii) {
        const int l = NearestInt((x[16 * j + ii] + dm) / d);
        L[16 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(3, l)));
      }
    }
    for (int j = 0; j < kQkK; j += 128) {
      for (int l = 0; l < 32; ++l) {
        y[i].qs[j / 4 + l] =
            static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
      }
    }
  }
}

void RowQ3_K(const float* x, BlockQ3_K* y, int64_t k) {
  const int64_t nb = k / kQkK;
  int8_t L[kQkK];
  float scales[kQkK / 16];
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < kQkK / 16; ++j) {
      scales[j] = MakeQ3Quants(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) { amax = scale; max_scale = scales[j]; }
    }
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    if (max_scale != 0.0f) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < kQkK / 16; ++j) {
        int8_t l = static_cast<int8_t>(NearestInt(iscale * scales[j]));
        l = static_cast<int8_t>(std::max(-32, std::min(31, static_cast<int>(l))) + 32);
        if (j < 8) {
          y[i].scales[j] = static_cast<uint8_t>(l & 0xF);
        } else {
          y[i].scales[j - 8] = static_cast<uint8_t>(y[i].scales[j - 8] | ((l & 0xF) << 4));
        }
        l = static_cast<int8_t>(l >> 4);
        y[i].scales[j % 4 + 8] = static_cast<uint8_t>(y[i].scales[j % 4 + 8] | (l << (2 * (j / 4))));
      }
      y[i].d = H(1 / iscale);
    } else {
      y[i].d = H(0.f);
    }
    for (int j = 0; j < kQkK / 16; ++j) {
      int8_t sc = static_cast<int8_t>(j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j - 8] >> 4);
      sc = static_cast<int8_t>((sc | (((y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
      const float d = F(y[i].d) * sc;
      if (d == 0.0f) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = NearestInt(x[16 * j + ii] / d);
        l = std::max(-4, std::min(3, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 4);
      }
    }
    std::memset(y[i].hmask, 0, sizeof(y[i].hmask));
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < kQkK; ++j) {
      if (L[j] > 3) {
        y[i].hmask[m] |= hm;
        L[j] = static_cast<int8_t>(L[j] - 4);
      }
      if (++m == kQkK / 8) {
        m = 0;
        hm = static_cast<uint8_t>(hm << 1);
      }
    }
    for (int j = 0; j < kQkK; j += 128) {
      for (int l = 0; l < 32; ++l) {
        y[i].qs[j / 4 + l] =
            static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
      }
    }
  }
}

// The shared scale search of Q4_K (nmax 15) and Q5_K (nmax 31); fills the
// block's d, dmin and packed scales and the codes L.
template <typename Block>
void SearchKxScales(const float* x, Block& y, int nmax, float rmin, int nstep, uint8_t* L) {
  uint8_t Laux[32];
  float weights[32], mins[kQkK / 32], scales[kQkK / 32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < kQkK / 32; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = MakeQkx2Quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < kQkK / 32; ++j) {
    uint8_t ls = static_cast<uint8_t>(NearestInt(inv_scale * scales[j]));
    uint8_t lm = static_cast<uint8_t>(NearestInt(inv_min * mins[j]));
    ls = std::min<uint8_t>(63, ls);
    lm = std::min<uint8_t>(63, lm);
    if (j < 4) {
      y.scales[j] = ls;
      y.scales[j + 4] = lm;
    } else {
      y.scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      y.scales[j - 4] = static_cast<uint8_t>(y.scales[j - 4] | ((ls >> 4) << 6));
      y.scales[j - 0] = static_cast<uint8_t>(y.scales[j - 0] | ((lm >> 4) << 6));
    }
  }
  y.d = H(max_scale / 63.f);
  y.dmin = H(max_min / 63.f);
  for (int j = 0; j < kQkK / 32; ++j) {
    uint8_t sc, m;
    GetScaleMinK4(j, y.scales, &sc, &m);
    const float d = F(y.d) * sc;
    if (d == 0.0f) continue;
    const float dm = F(y.dmin) * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = NearestInt((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

void RowQ4_K(const float* x, BlockQ4_K* y, int64_t k) {
  const int64_t nb = k / kQkK;
  uint8_t L[kQkK];
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    SearchKxScales(x, y[i], 15, -1.f, 20, L);
    uint8_t* q = y[i].qs;
    for (int j = 0; j < kQkK; j += 64) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
      q += 32;
    }
  }
}

void RowQ5_K(const float* x, BlockQ5_K* y, int64_t k) {
  const int64_t nb = k / kQkK;
  uint8_t L[kQkK];
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    SearchKxScales(x, y[i], 31, -0.5f, 15, L);
    uint8_t* qh = y[i].qh;
    uint8_t* ql = y[i].qs;
    std::memset(qh, 0, sizeof(y[i].qh));
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kQkK; n += 64) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j];
        if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
        int l2 = L[n + j + 32];
        if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
      ql += 32;
    }
  }
}

void RowQ6_K(const float* x, BlockQ6_K* y, int64_t k) {
  const int64_t nb = k / kQkK;
  int8_t L[kQkK];
  float scales[kQkK / 16];
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < kQkK / 16; ++ib) {
      const float scale = MakeQxQuants(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) { max_abs_scale = abs_scale; max_scale = scale; }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      y[i].d = H(0.f);
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = H(1 / iscale);
    for (int ib = 0; ib < kQkK / 16; ++ib) {
      y[i].scales[ib] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[ib])));
    }
    for (int j = 0; j < kQkK / 16; ++j) {
      const float d = F(y[i].d) * y[i].scales[j];
      if (d == 0.0f) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = NearestInt(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQkK; j += 128) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l + 0] & 0xF;
        const uint8_t q2 = L[j + l + 32] & 0xF;
        const uint8_t q3 = L[j + l + 64] & 0xF;
        const uint8_t q4 = L[j + l + 96] & 0xF;
        ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
      ql += 64;
      qh += 32;
    }
  }
}

}  // namespace

bool CanQuantizeTo(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: case GgmlType::kF16: case GgmlType::kBF16:
    case GgmlType::kQ4_0: case GgmlType::kQ4_1: case GgmlType::kQ5_0: case GgmlType::kQ5_1: case GgmlType::kQ8_0:
    case GgmlType::kQ2_K: case GgmlType::kQ3_K: case GgmlType::kQ4_K: case GgmlType::kQ5_K: case GgmlType::kQ6_K:
      return true;
    default:
      return false;
  }
}

size_t GgufRowBytes(GgmlType type, int64_t n_per_row) {
  const auto traits = TraitsOf(type);
  if (!traits || n_per_row <= 0 || n_per_row % traits->block_elems != 0) return 0;
  return static_cast<size_t>(n_per_row / traits->block_elems) * traits->block_bytes;
}

void QuantizeRow(GgmlType type, const float* src, int64_t n, uint8_t* dst) {
  switch (type) {
    case GgmlType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); break;
    case GgmlType::kF16: {
      auto* out = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = Fp32ToFp16(src[i]);
      break;
    }
    case GgmlType::kBF16: {
      auto* out = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = Fp32ToBf16(src[i]);
      break;
    }
    case GgmlType::kQ4_0: RowQ4_0(src, reinterpret_cast<BlockQ4_0*>(dst), n); break;
    case GgmlType::kQ4_1: RowQ4_1(src, reinterpret_cast<BlockQ4_1*>(dst), n); break;
    case GgmlType::kQ5_0: RowQ5_0(src, reinterpret_cast<BlockQ5_0*>(dst), n); break;
    case GgmlType::kQ5_1: RowQ5_1(src, reinterpret_cast<BlockQ5_1*>(dst), n); break;
    case GgmlType::kQ8_0: RowQ8_0(src, reinterpret_cast<BlockQ8_0*>(dst), n); break;
    case GgmlType::kQ2_K: RowQ2_K(src, reinterpret_cast<BlockQ2_K*>(dst), n); break;
    case GgmlType::kQ3_K: RowQ3_K(src, reinterpret_cast<BlockQ3_K*>(dst), n); break;
    case GgmlType::kQ4_K: RowQ4_K(src, reinterpret_cast<BlockQ4_K*>(dst), n); break;
    case GgmlType::kQ5_K: RowQ5_K(src, reinterpret_cast<BlockQ5_K*>(dst), n); break;
    case GgmlType::kQ6_K: RowQ6_K(src, reinterpret_cast<BlockQ6_K*>(dst), n); break;
    default: break;
  }
}

absl::Status QuantizeRows(GgmlType type, const float* src, int64_t nrows, int64_t n_per_row, uint8_t* dst,
                          int threads) {
  if (!CanQuantizeTo(type)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot quantize to ", std::string(TypeName(type))));
  }
  const size_t row_bytes = GgufRowBytes(type, n_per_row);
  if (row_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat("a row of ", n_per_row, " elements is not whole ",
                                                   std::string(TypeName(type)), " blocks"));
  }
  const int nt = threads > 0 ? threads : omp_get_max_threads();
  // Rows are independent: the split changes which thread computes a row,
  // never its bytes.
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < nrows; ++r) {
    QuantizeRow(type, src + r * n_per_row, n_per_row, dst + static_cast<size_t>(r) * row_bytes);
  }
  return absl::OkStatus();
}

}  // namespace tessera::quantize
