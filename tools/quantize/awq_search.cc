#include "tools/quantize/awq_search.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tessera::quantize {
namespace {

float DotGeneric(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += a[i + k] * b[i + k];
  }
  float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  alignas(32) float s[8];
  _mm256_store_ps(s, acc);
  float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

using DotFn = float (*)(const float*, const float*, int64_t);
DotFn BestDot() {
  static const DotFn fn =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? DotAvx2 : DotGeneric;
  return fn;
}

// AutoAWQ's pseudo_quantize_tensor on one group of n values, in place.
void PseudoQuantizeGroup(float* w, int64_t n) {
  float mx = w[0], mn = w[0];
  for (int64_t i = 1; i < n; ++i) {
    mx = std::max(mx, w[i]);
    mn = std::min(mn, w[i]);
  }
  const float scale = std::max(mx - mn, 1e-5f) / 15.f;
  const float zero = std::clamp(-std::nearbyint(mn / scale), 0.f, 15.f);
  for (int64_t i = 0; i < n; ++i) {
    w[i] = (std::clamp(std::nearbyint(w[i] / scale) + zero, 0.f, 15.f) - zero) * scale;
  }
}

}  // namespace

std::vector<float> AwqWeightMean(const std::vector<const DenseMatrix*>& linears, int64_t g) {
  const int64_t cols = linears[0]->cols;
  std::vector<double> sum(cols, 0.0);
  int64_t rows = 0;
  for (const DenseMatrix* m : linears) {
    // Columns are owned by one thread each: a fixed order of rows per column.
#pragma omp parallel for schedule(static)
    for (int64_t g0 = 0; g0 < cols; g0 += g) {
      for (int64_t r = 0; r < m->rows; ++r) {
        const float* w = m->row(r) + g0;
        float amax = 0;
        for (int64_t i = 0; i < g; ++i) amax = std::max(amax, std::fabs(w[i]));
        for (int64_t i = 0; i < g; ++i) sum[g0 + i] += std::fabs(w[i]) / (amax + 1e-6f);
      }
    }
    rows += m->rows;
  }
  std::vector<float> mean(cols);
  for (int64_t c = 0; c < cols; ++c) mean[c] = static_cast<float>(sum[c] / static_cast<double>(rows));
  return mean;
}

void AbsMeanAccumulator::Add(const float* x, int64_t rows) {
  const int64_t cols = static_cast<int64_t>(sum_.size());
  constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < cols; c0 += kCols) {
    const int64_t c1 = std::min(cols, c0 + kCols);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * cols;
      for (int64_t c = c0; c < c1; ++c) sum_[c] += std::fabs(xr[c]);
    }
  }
  rows_ += rows;
}

std::vector<float> AbsMeanAccumulator::Mean() const {
  std::vector<float> m(sum_.size());
  for (size_t c = 0; c < m.size(); ++c) m[c] = static_cast<float>(sum_[c] / std::max<int64_t>(rows_, 1));
  return m;
}

std::vector<float> AwqScales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, double ratio) {
  const size_t n = x_mean.size();
  std::vector<float> s(n);
  const float r = static_cast<float>(ratio);
  for (size_t i = 0; i < n; ++i) {
    s[i] = std::max(std::pow(x_mean[i], r) / (std::pow(w_mean[i], 1.f - r) + 1e-4f), 1e-4f);
  }
  const auto [mn, mx] = std::minmax_element(s.begin(), s.end());
  const float norm = std::sqrt(*mx * *mn);
  for (float& v : s) {
    v /= norm;
    if (!std::isfinite(v)) v = 1.f;
  }
  return s;
}

void AwqPseudoQuantize(float* w, int64_t rows, int64_t cols, int64_t g) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c0 = 0; c0 < cols; c0 += g) PseudoQuantizeGroup(w + r * cols + c0, std::min(g, cols - c0));
  }
}

DenseMatrix AwqScaledQuantized(const DenseMatrix& w, const std::vector<float>& s, int64_t g) {
  DenseMatrix out = w;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < w.rows; ++r) {
    float* row = out.row(r);
    for (int64_t c = 0; c < w.cols; ++c) row[c] *= s[c];
    for (int64_t c0 = 0; c0 < w.cols; c0 += g) PseudoQuantizeGroup(row + c0, std::min(g, w.cols - c0));
    for (int64_t c = 0; c < w.cols; ++c) row[c] /= s[c];
  }
  return out;
}

double SquaredError(const float* a, const float* b, int64_t n) {
  constexpr int64_t kBlock = 1 << 14;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> part(blocks, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < blocks; ++k) {
    double s = 0;
    for (int64_t i = k * kBlock; i < std::min(n, (k + 1) * kBlock); ++i) {
      const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
      s += d * d;
    }
    part[k] = s;
  }
  double total = 0;
  for (double p : part) total += p;
  return total;
}

std::vector<float> AwqClipSearch(const DenseMatrix& w, const float* feats, int64_t ntok, int64_t g) {
  const int64_t groups = (w.cols + g - 1) / g;
  std::vector<float> best(static_cast<size_t>(w.rows * groups));
  const DotFn dot = BestDot();
  std::vector<float> fg;
  for (int64_t gi = 0; gi < groups; ++gi) {
    const int64_t c0 = gi * g, n = std::min(g, w.cols - c0);
    // The group's columns of every token, contiguous.
    fg.resize(static_cast<size_t>(ntok * n));
    for (int64_t t = 0; t < ntok; ++t) std::copy(feats + t * w.cols + c0, feats + t * w.cols + c0 + n, fg.begin() + t * n);
#pragma omp parallel
    {
      std::vector<float> org(ntok), cur(n);
#pragma omp for schedule(static)
      for (int64_t r = 0; r < w.rows; ++r) {
        const float* wr = w.row(r) + c0;
        float org_max = 0;
        for (int64_t i = 0; i < n; ++i) org_max = std::max(org_max, std::fabs(wr[i]));
        for (int64_t t = 0; t < ntok; ++t) org[t] = dot(fg.data() + t * n, wr, n);
        float best_max = org_max;
        double min_err = 1e9;
        for (int step = 0; step < kAwqClipSteps; ++step) {
          const float max_val = org_max * (1.f - static_cast<float>(step) / kAwqGrid);
          for (int64_t i = 0; i < n; ++i) cur[i] = std::clamp(wr[i], -max_val, max_val);
          PseudoQuantizeGroup(cur.data(), n);
          double err = 0;
          for (int64_t t = 0; t < ntok; ++t) {
            const double d = static_cast<double>(dot(fg.data() + t * n, cur.data(), n)) - org[t];
            err += d * d;
          }
          err /= static_cast<double>(ntok);
          if (err < min_err) {
            min_err = err;
            best_max = max_val;
          }
        }
        best[r * groups + gi] = best_max;
      }
    }
  }
  return best;
}

void AwqApplyClip(DenseMatrix& w, const std::vector<float>& max_val, int64_t g) {
  const int64_t groups = (w.cols + g - 1) / g;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < w.rows; ++r) {
    float* row = w.row(r);
    for (int64_t c = 0; c < w.cols; ++c) {
      const float m = max_val[r * groups + c / g];
      row[c] = std::clamp(row[c], -m, m);
    }
  }
}

}  // namespace tessera::quantize
