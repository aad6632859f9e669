#include "tools/quantize/gptq_solver.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/fp16.h"
#include "common/status_macros.h"

namespace tessera::quantize {
namespace {

constexpr int64_t kTileRows = 4, kTileCols = 16;

// The input rows packed in panels of 16 columns: panel p holds, for each
// row t, columns 16p..16p+15 (zero beyond n), so a tile streams through
// memory in order.
// acc[4][16] = Σ_t a[t][k] * b[t][j], a = panel rows at column offset
// `a_off`, b = another panel's rows; portable.
void SyrkTileGeneric(const float* a, int64_t a_off, const float* b, int64_t rows, float* acc) {
  std::fill(acc, acc + kTileRows * kTileCols, 0.f);
  for (int64_t t = 0; t < rows; ++t) {
    const float* ar = a + t * kTileCols + a_off;
    const float* br = b + t * kTileCols;
    for (int64_t k = 0; k < kTileRows; ++k) {
      for (int64_t j = 0; j < kTileCols; ++j) acc[k * kTileCols + j] += ar[k] * br[j];
    }
  }
}

// The same with AVX2/FMA: 8 accumulators in registers.
__attribute__((target("avx2,fma"))) void SyrkTileAvx2(const float* a, int64_t a_off, const float* b, int64_t rows,
                                                       float* acc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int64_t t = 0; t < rows; ++t) {
    const float* ar = a + t * kTileCols + a_off;
    const float* br = b + t * kTileCols;
    const __m256 b0 = _mm256_loadu_ps(br), b1 = _mm256_loadu_ps(br + 8);
    __m256 v = _mm256_broadcast_ss(ar);
    c00 = _mm256_fmadd_ps(v, b0, c00);
    c01 = _mm256_fmadd_ps(v, b1, c01);
    v = _mm256_broadcast_ss(ar + 1);
    c10 = _mm256_fmadd_ps(v, b0, c10);
    c11 = _mm256_fmadd_ps(v, b1, c11);
    v = _mm256_broadcast_ss(ar + 2);
    c20 = _mm256_fmadd_ps(v, b0, c20);
    c21 = _mm256_fmadd_ps(v, b1, c21);
    v = _mm256_broadcast_ss(ar + 3);
    c30 = _mm256_fmadd_ps(v, b0, c30);
    c31 = _mm256_fmadd_ps(v, b1, c31);
  }
  _mm256_storeu_ps(acc, c00);
  _mm256_storeu_ps(acc + 8, c01);
  _mm256_storeu_ps(acc + 16, c10);
  _mm256_storeu_ps(acc + 24, c11);
  _mm256_storeu_ps(acc + 32, c20);
  _mm256_storeu_ps(acc + 40, c21);
  _mm256_storeu_ps(acc + 48, c30);
  _mm256_storeu_ps(acc + 56, c31);
}

bool HaveAvx2Fma() {
  static const bool have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return have;
}

// y[i] -= a * x[i].
void SubScaledGeneric(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] -= a * x[i];
}

__attribute__((target("avx2,fma"))) void SubScaledAvx2(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fnmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] -= a * x[i];
}

// Σ a[i] b[i] with four partial sums in a fixed order.
double DotGeneric(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

__attribute__((target("avx2,fma"))) double DotAvx2(const double* a, const double* b, int64_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = s0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i), _mm256_loadu_pd(b + i), s0);
    s1 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i + 4), _mm256_loadu_pd(b + i + 4), s1);
  }
  alignas(32) double s[4];
  _mm256_store_pd(s, _mm256_add_pd(s0, s1));
  double t = (s[0] + s[1]) + (s[2] + s[3]);
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

double Dot(const double* a, const double* b, int64_t n) {
  static const bool avx2 = HaveAvx2Fma();
  return avx2 ? DotAvx2(a, b, n) : DotGeneric(a, b, n);
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t n) : n_(n), sum_(static_cast<size_t>(n * n), 0.0) {}

void HessianAccumulator::Add(const float* x, int64_t rows, int64_t stride) {
  if (rows <= 0) return;
  const int64_t n = n_;
  const int64_t ti = (n + kTileRows - 1) / kTileRows, tj = (n + kTileCols - 1) / kTileCols;
  // Tiles touching the upper triangle; each H element belongs to one tile,
  // so the result does not depend on which thread takes which.
  std::vector<std::pair<int32_t, int32_t>> tiles;
  for (int64_t a = 0; a < ti; ++a) {
    for (int64_t b = (a * kTileRows) / kTileCols; b < tj; ++b) tiles.emplace_back(a, b);
  }
  const int64_t panels = (n + kTileCols - 1) / kTileCols;
  packed_.assign(static_cast<size_t>(panels * rows * kTileCols), 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = packed_.data() + p * rows * kTileCols;
    const int64_t c0 = p * kTileCols, w = std::min(kTileCols, n - c0);
    for (int64_t t = 0; t < rows; ++t) std::copy_n(x + t * stride + c0, w, dst + t * kTileCols);
  }
  const bool avx2 = HaveAvx2Fma();
#pragma omp parallel
  {
    float acc[kTileRows * kTileCols];
#pragma omp for schedule(dynamic, 8)
    for (size_t k = 0; k < tiles.size(); ++k) {
      const int64_t i0 = tiles[k].first * kTileRows, j0 = tiles[k].second * kTileCols;
      const float* a = packed_.data() + (i0 / kTileCols) * rows * kTileCols;
      const float* b = packed_.data() + (j0 / kTileCols) * rows * kTileCols;
      if (avx2) {
        SyrkTileAvx2(a, i0 % kTileCols, b, rows, acc);
      } else {
        SyrkTileGeneric(a, i0 % kTileCols, b, rows, acc);
      }
      for (int64_t r = 0; r < kTileRows && i0 + r < n; ++r) {
        for (int64_t j = 0; j < kTileCols && j0 + j < n; ++j) {
          if (j0 + j >= i0 + r) sum_[(i0 + r) * n + j0 + j] += acc[r * kTileCols + j];
        }
      }
    }
  }
  count_ += rows;
}

std::vector<double> HessianAccumulator::Hessian() const {
  const int64_t n = n_;
  std::vector<double> h(sum_.size());
  const double f = count_ > 0 ? 2.0 / static_cast<double>(count_) : 0.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) h[i * n + j] = h[j * n + i] = f * sum_[i * n + j];
  }
  return h;
}

bool UpperCholeskyOfInverse(const std::vector<double>& a, int64_t n, std::vector<double>* u) {
  // With J the reversal permutation: if J A J = L Lᵀ (L lower), then
  // A = V Vᵀ with V = J L J upper, A⁻¹ = V⁻ᵀ V⁻¹, and U = V⁻¹ = J L⁻¹ J is
  // the upper factor wanted: one Cholesky and one triangular inverse.
  std::vector<double> l(static_cast<size_t>(n * n), 0.0);
  auto ar = [&](int64_t i, int64_t j) { return a[(n - 1 - i) * n + (n - 1 - j)]; };
  for (int64_t j = 0; j < n; ++j) {
    const double d = ar(j, j) - Dot(&l[j * n], &l[j * n], j);
    if (!(d > 0) || !std::isfinite(d)) return false;
    const double ljj = std::sqrt(d);
    l[j * n + j] = ljj;
    // Serial: a parallel region per column costs more than it saves.
    for (int64_t i = j + 1; i < n; ++i) l[i * n + j] = (ar(i, j) - Dot(&l[i * n], &l[j * n], j)) / ljj;
  }
  // Row j of linv_t is column j of L⁻¹.
  std::vector<double> linv_t(static_cast<size_t>(n * n), 0.0);
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t j = 0; j < n; ++j) {
    double* col = &linv_t[j * n];
    col[j] = 1.0 / l[j * n + j];
    for (int64_t i = j + 1; i < n; ++i) col[i] = -Dot(&l[i * n + j], col + j, i - j) / l[i * n + i];
  }
  u->assign(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) (*u)[i * n + j] = linv_t[(n - 1 - j) * n + (n - 1 - i)];
  }
  return true;
}

absl::StatusOr<PreparedHessian> PrepareHessian(std::vector<double> h, int64_t n, bool act_order, double damp,
                                               const char* who) {
  if (static_cast<int64_t>(h.size()) != n * n) return absl::InternalError("Hessian size mismatch");
  PreparedHessian p;
  p.dead.assign(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (h[i * n + i] == 0) {
      p.dead[i] = 1;
      h[i * n + i] = 1;
      ++p.dead_columns;
    }
  }
  p.perm.resize(n);
  std::iota(p.perm.begin(), p.perm.end(), 0);
  if (act_order) {
    std::stable_sort(p.perm.begin(), p.perm.end(), [&](int32_t a, int32_t b) { return h[a * n + a] > h[b * n + b]; });
  }
  std::vector<double> hp(static_cast<size_t>(n * n));
  double mean_diag = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) hp[i * n + j] = h[p.perm[i] * n + p.perm[j]];
    mean_diag += hp[i * n + i];
  }
  mean_diag /= static_cast<double>(n);
  h.clear();
  h.shrink_to_fit();
  bool ok = false;
  double d = damp;
  for (; d < 1.0; d += 0.0025) {
    std::vector<double> hd = hp;
    for (int64_t i = 0; i < n; ++i) hd[i * n + i] += d * mean_diag;
    if ((ok = UpperCholeskyOfInverse(hd, n, &p.u))) {
      p.damped.swap(hd);
      break;
    }
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat(who, ": the Hessian is not positive definite even with damping 1"));
  p.damp = d;
  return p;
}

absl::StatusOr<GptqResult> GptqQuantize(const float* w, int64_t rows, int64_t cols, std::vector<double> h,
                                        const GptqOptions& o) {
  const int64_t n = cols;
  GptqResult result;
  TESSERA_ASSIGN_OR_RETURN(PreparedHessian prepared, PrepareHessian(std::move(h), n, o.desc_act, o.damp, "GPTQ"));
  result.damp = prepared.damp;
  result.dead_columns = prepared.dead_columns;
  const std::vector<char>& dead = prepared.dead;
  const std::vector<int32_t>& perm = prepared.perm;
  prepared.damped.clear();
  prepared.damped.shrink_to_fit();
  std::vector<double>& u = prepared.u;
  std::vector<float> uf(u.begin(), u.end());
  u.clear();
  u.shrink_to_fit();

  const int64_t g = o.group_size == -1 ? n : o.group_size;
  const int64_t groups = (n + g - 1) / g;
  const int maxq = (1 << o.bits) - 1;
  const int64_t bs = o.block_size;
  result.q = GroupQuantizedLinear::Make(o.bits, rows, cols, groups);
  GroupQuantizedLinear& q = result.q;
  for (int64_t p = 0; p < n; ++p) q.g_idx[perm[p]] = static_cast<int32_t>(p / g);
  absl::Status error;
  const auto sub_scaled = HaveAvx2Fma() ? SubScaledAvx2 : SubScaledGeneric;
#pragma omp parallel
  {
    std::vector<float> wr(n), w1(bs), errs(bs);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = w + r * cols;
      for (int64_t p = 0; p < n; ++p) wr[p] = dead[perm[p]] ? 0.f : src[perm[p]];
      GroupParams cur;
      float scale = 0;
      bool row_ok = true;
      for (int64_t i1 = 0; i1 < n && row_ok; i1 += bs) {
        const int64_t i2 = std::min(i1 + bs, n), count = i2 - i1;
        std::copy(wr.begin() + i1, wr.begin() + i2, w1.begin());
        for (int64_t i = 0; i < count; ++i) {
          const int64_t c = i1 + i;
          if (c % g == 0) {
            // One group per row: the published code finds the parameters
            // once, from the weights before dead columns are zeroed.
            const float* gw = g == n ? src : wr.data() + c;
            const int64_t gn = g == n ? n : std::min(g, n - c);
            absl::StatusOr<GroupParams> p =
                o.mse > 0 ? GptqGroupParamsMse(gw, gn, o.bits, o.sym, o.mse) : GptqGroupParams(gw, gn, o.bits, o.sym);
            if (!p.ok()) {
#pragma omp critical
              error = p.status();
              row_ok = false;
              break;
            }
            cur = *p;
            scale = Fp16ToFp32(cur.scale);
            q.scales[r * groups + c / g] = cur.scale;
            q.zeros[r * groups + c / g] = cur.zero;
          }
          const int code = QuantizeValue(w1[i], scale, cur.zero, maxq);
          q.codes[r * cols + perm[c]] = static_cast<uint8_t>(code);
          const float dq = scale * static_cast<float>(code - cur.zero);
          const float* urow = uf.data() + c * n;
          const float err = (w1[i] - dq) / urow[c];
          sub_scaled(err, urow + i1 + i + 1, w1.data() + i + 1, count - i - 1);
          errs[i] = err;
        }
        for (int64_t i = 0; i < count && row_ok; ++i) {
          const float e = errs[i];
          const float* urow = uf.data() + (i1 + i) * n;
          sub_scaled(e, urow + i2, wr.data() + i2, n - i2);
        }
      }
    }
  }
  if (!error.ok()) return error;
  return result;
}

}  // namespace tessera::quantize
