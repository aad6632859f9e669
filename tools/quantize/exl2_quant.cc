#include "tools/quantize/exl2_quant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/fp16.h"
#include "common/status_macros.h"
#include "tools/quantize/gptq_solver.h"

namespace tessera::quantize {
namespace {

bool HaveAvx2Fma() {
  static const bool have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return have;
}

// GPTQ's lazy batch update for a tile of `nr` (<= 8) rows:
// w[r][j] -= sum_i e[r][i] * u[i][j] for j in [0, cols), i in [0, k); rows of
// w `ldw` apart, of u `ldu` apart, e [8][k]. Each w element sums its terms in
// i order, so tiles and threads do not change the result.
void LazyUpdateGeneric(float* w, int64_t ldw, int nr, const float* e, int64_t k, const float* u, int64_t ldu,
                       int64_t cols) {
  for (int r = 0; r < nr; ++r) {
    for (int64_t i = 0; i < k; ++i) {
      const float ei = e[r * k + i];
      const float* ui = u + i * ldu;
      float* wr = w + r * ldw;
      for (int64_t j = 0; j < cols; ++j) wr[j] -= ei * ui[j];
    }
  }
}

__attribute__((target("avx2,fma"))) void LazyUpdateAvx2(float* w, int64_t ldw, int nr, const float* e, int64_t k,
                                                         const float* u, int64_t ldu, int64_t cols) {
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    __m256 acc[8];
    for (int r = 0; r < nr; ++r) acc[r] = _mm256_loadu_ps(w + r * ldw + j);
    for (int64_t i = 0; i < k; ++i) {
      const __m256 ui = _mm256_loadu_ps(u + i * ldu + j);
      for (int r = 0; r < nr; ++r) acc[r] = _mm256_fnmadd_ps(_mm256_set1_ps(e[r * k + i]), ui, acc[r]);
    }
    for (int r = 0; r < nr; ++r) _mm256_storeu_ps(w + r * ldw + j, acc[r]);
  }
  if (j < cols) LazyUpdateGeneric(w + j, ldw, nr, e, k, u + j, ldu, cols - j);
}

// out[r] = sum_j h[j] * w[r][j] for a tile of nr (<= 8) rows, float
// accumulators in a fixed order.
void RowDotsGeneric(const float* h, const float* w, int64_t ldw, int nr, int64_t n, double* out) {
  for (int r = 0; r < nr; ++r) {
    float s = 0;
    for (int64_t j = 0; j < n; ++j) s += h[j] * w[r * ldw + j];
    out[r] = s;
  }
}

__attribute__((target("avx2,fma"))) void RowDotsAvx2(const float* h, const float* w, int64_t ldw, int nr, int64_t n,
                                                      double* out) {
  __m256 acc[8];
  for (int r = 0; r < nr; ++r) acc[r] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 hv = _mm256_loadu_ps(h + j);
    for (int r = 0; r < nr; ++r) acc[r] = _mm256_fmadd_ps(hv, _mm256_loadu_ps(w + r * ldw + j), acc[r]);
  }
  for (int r = 0; r < nr; ++r) {
    alignas(32) float t[8];
    _mm256_store_ps(t, acc[r]);
    float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    for (int64_t jj = j; jj < n; ++jj) s += h[jj] * w[r * ldw + jj];
    out[r] = s;
  }
}

}  // namespace

std::string Exl2Mix::Name() const {
  std::string s;
  for (const auto& [b, p] : widths) absl::StrAppend(&s, s.empty() ? "" : ",", b, ":", absl::StrFormat("%g", p));
  return absl::StrCat(s, "@", group_size);
}

const std::vector<Exl2Mix>& Exl2Candidates() {
  static const std::vector<Exl2Mix> table = {
      {{{2, 1.0}}, 128},
      {{{3, 0.1}, {2, 0.9}}, 128},
      {{{3, 0.25}, {2, 0.75}}, 64},
      {{{3, 0.5}, {2, 0.5}}, 64},
      {{{4, 0.25}, {3, 0.25}, {2, 0.5}}, 64},
      {{{3, 1.0}}, 128},
      {{{4, 0.1}, {3, 0.9}}, 64},
      {{{4, 0.25}, {3, 0.75}}, 64},
      {{{4, 0.5}, {3, 0.5}}, 64},
      {{{4, 1.0}}, 128},
      {{{4, 1.0}}, 64},
      {{{4, 1.0}}, 32},
      {{{5, 0.1}, {4, 0.9}}, 64},
      {{{5, 0.25}, {4, 0.75}}, 64},
      {{{5, 0.5}, {4, 0.5}}, 64},
      {{{5, 1.0}}, 128},
      {{{6, 0.25}, {5, 0.75}}, 64},
      {{{6, 1.0}}, 128},
      {{{8, 0.1}, {6, 0.9}}, 128},
      {{{8, 0.25}, {6, 0.75}}, 128},
      {{{8, 0.5}, {6, 0.5}}, 128},
      {{{8, 0.75}, {6, 0.25}}, 128},
      {{{8, 1.0}}, 128},
  };
  return table;
}

std::optional<Exl2Mix> Exl2HeadMix(int head_bits) {
  switch (head_bits) {
    case 2: return Exl2Mix{{{4, 0.3}, {2, 0.7}}, 32};
    case 3: return Exl2Mix{{{4, 0.15}, {3, 0.85}}, 32};
    case 4: return Exl2Mix{{{6, 0.15}, {4, 0.85}}, 32};
    case 5: return Exl2Mix{{{6, 0.15}, {5, 0.85}}, 128};
    case 6: return Exl2Mix{{{8, 0.15}, {6, 0.85}}, 128};
    case 8: return Exl2Mix{{{8, 1.0}}, 128};
    default: return std::nullopt;
  }
}

std::vector<Exl2Group> Exl2GroupPlan(int64_t in, const Exl2Mix& mix) {
  std::vector<Exl2Group> plan;
  int64_t remaining = in, row = 0;
  for (const auto& [bits, p] : mix.widths) {
    const double want = std::min(static_cast<double>(in) * p, static_cast<double>(remaining));
    const int64_t g = static_cast<int64_t>(std::ceil(want / mix.group_size));
    for (int64_t i = 0; i < g && row < in; ++i) {
      const int64_t n = std::min<int64_t>(mix.group_size, in - row);
      plan.push_back({bits, row, n});
      row += n;
    }
    remaining -= g * mix.group_size;
  }
  // A proportion table that leaves rows over (it does not in Exl2Candidates)
  // gives them to the narrowest width.
  while (row < in) {
    const int64_t n = std::min<int64_t>(mix.group_size, in - row);
    plan.push_back({mix.widths.back().first, row, n});
    row += n;
  }
  return plan;
}

int64_t Exl2StorageBits(int64_t out, int64_t in, const std::vector<Exl2Group>& plan) {
  int64_t bits = in * 32;
  for (const Exl2Group& g : plan) bits += g.rows * out * g.bits + 48 + out * 4;
  return bits;
}

std::vector<float> Exl2Linear::Dequantize() const {
  std::vector<float> w(static_cast<size_t>(out * in));
  const int64_t ng = static_cast<int64_t>(groups.size());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t g = 0; g < ng; ++g) {
      const Exl2Group& gr = groups[g];
      const float m = Fp16ToFp32(Fp32ToFp16(Fp16ToFp32(qscale_max[g]) * (1.f / 256)));
      const int k = qscale[g * out + r];
      const float s = Fp16ToFp32(Fp32ToFp16(static_cast<float>(k * k) * m));
      const int half = 1 << (gr.bits - 1);
      for (int64_t p = gr.first_row; p < gr.first_row + gr.rows; ++p) {
        w[r * in + perm[p]] = static_cast<float>(static_cast<int>(codes[r * in + p]) - half) * s;
      }
    }
  }
  return w;
}

absl::StatusOr<Exl2Solver> Exl2Solver::Prepare(const float* w, int64_t out, int64_t in, std::vector<double> h,
                                               double damp) {
  const int64_t n = in;
  Exl2Solver s;
  s.out_ = out;
  s.in_ = in;
  TESSERA_ASSIGN_OR_RETURN(PreparedHessian prepared,
                           PrepareHessian(std::move(h), n, /*act_order=*/true, damp, "EXL2"));
  s.dead_ = prepared.dead_columns;
  s.perm_ = std::move(prepared.perm);
  const std::vector<int32_t>& perm = s.perm_;
  const std::vector<char>& dead = prepared.dead;
  s.w_.resize(static_cast<size_t>(out * n));
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t p = 0; p < n; ++p) s.w_[r * n + p] = dead[perm[p]] ? 0.f : w[r * n + perm[p]];
  }
  s.damp_ = prepared.damp;
  std::vector<double>& hp = prepared.damped;
  std::vector<double>& u = prepared.u;
  // trace(W H W^T) with the damped H (in float: it only normalizes the
  // error): tiles of 8 rows share each H row.
  {
    std::vector<float> hf(hp.begin(), hp.end());
    constexpr int64_t kTile = 8;
    const int64_t tiles = (out + kTile - 1) / kTile;
    std::vector<double> per_tile(static_cast<size_t>(tiles), 0.0);
    const auto row_dots = HaveAvx2Fma() ? RowDotsAvx2 : RowDotsGeneric;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kTile;
      const int nr = static_cast<int>(std::min(kTile, out - r0));
      const float* wt = s.w_.data() + r0 * n;
      double dots[kTile], acc = 0;
      for (int64_t i = 0; i < n; ++i) {
        row_dots(hf.data() + i * n, wt, n, nr, n, dots);
        for (int r = 0; r < nr; ++r) acc += dots[r] * static_cast<double>(wt[r * n + i]);
      }
      per_tile[t] = acc;
    }
    for (double v : per_tile) s.denom_ += v;
  }
  s.u_.assign(u.begin(), u.end());
  return s;
}

namespace {

// The f16 scales k = 1..16 give for a q_scale_max: f16(k^2 * f16(qsm / 256)).
void ScaleTable(uint16_t qsm, float table[17]) {
  const float m = Fp16ToFp32(Fp32ToFp16(Fp16ToFp32(qsm) * (1.f / 256)));
  table[0] = 0;
  for (int k = 1; k <= 16; ++k) table[k] = Fp16ToFp32(Fp32ToFp16(static_cast<float>(k * k) * m));
}

int Code(float w, float s, int half, int maxq) {
  const float q = std::nearbyint(w / s) + static_cast<float>(half);
  return static_cast<int>(std::clamp(q, 0.f, static_cast<float>(maxq)));
}

}  // namespace

absl::StatusOr<Exl2Solver::Result> Exl2Solver::Quantize(const std::vector<Exl2Group>& plan) const {
  const int64_t n = in_, out = out_;
  Result res;
  Exl2Linear& q = res.q;
  q.out = out;
  q.in = n;
  q.groups = plan;
  q.perm = perm_;
  q.codes.assign(static_cast<size_t>(out * n), 0);
  q.qscale.assign(plan.size() * static_cast<size_t>(out), 1);
  q.qscale_max.assign(plan.size(), 0);
  std::vector<float> w = w_;
  std::vector<double> row_err(static_cast<size_t>(out), 0.0);
  std::vector<float> amax(static_cast<size_t>(out));
  constexpr int64_t kMaxGroup = 128;
  std::vector<float> errs(static_cast<size_t>(out * kMaxGroup));
  const auto lazy = HaveAvx2Fma() ? LazyUpdateAvx2 : LazyUpdateGeneric;
  for (size_t g = 0; g < plan.size(); ++g) {
    const int64_t a = plan[g].first_row, gn = plan[g].rows, b_end = a + gn;
    const int bits = plan[g].bits, half = 1 << (bits - 1), maxq = (1 << bits) - 1;
    // The group's maximum scale: what lets every output feature's largest
    // weight be represented (positive codes reach half - 1; 2-bit: 1).
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < out; ++r) {
      float m = 0;
      for (int64_t p = a; p < b_end; ++p) m = std::max(m, std::fabs(w[r * n + p]));
      amax[r] = m;
    }
    float top = 0;
    for (int64_t r = 0; r < out; ++r) top = std::max(top, amax[r]);
    top /= static_cast<float>(std::max(half - 1, 1));
    if (!std::isfinite(top) || top > 60000.f) {
      return absl::InvalidArgumentError(
          absl::StrCat("a group's scale (", top, ") does not fit float16: the weights are too large for EXL2"));
    }
    uint16_t qsm = Fp32ToFp16(std::max(top, 1.f / 65536));
    float table[17];
    ScaleTable(qsm, table);
    while (table[16] < top) {
      ++qsm;  // the next float16 up (positive, finite: top <= 60000)
      ScaleTable(qsm, table);
    }
    q.qscale_max[g] = qsm;
    if (gn > kMaxGroup) return absl::InternalError("EXL2 group larger than 128 rows");
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < out; ++r) {
      float* wr = w.data() + r * n;
      // The scale code with the least squared rounding error over the group.
      int best = 16;
      double best_err = std::numeric_limits<double>::infinity();
      for (int k = 16; k >= 1; --k) {
        const float s = table[k];
        if (!(s > 0)) continue;
        double e = 0;
        for (int64_t p = a; p < b_end; ++p) {
          const float d = static_cast<float>(Code(wr[p], s, half, maxq) - half) * s - wr[p];
          e += static_cast<double>(d) * d;
        }
        if (e < best_err) {
          best_err = e;
          best = k;
        }
      }
      q.qscale[g * out + r] = static_cast<uint8_t>(best);
      const float s = table[best];
      // GPTQ within the group; its errors go to later groups below.
      float* er = errs.data() + r * gn;
      double re = 0;
      for (int64_t p = a; p < b_end; ++p) {
        const int code = Code(wr[p], s, half, maxq);
        q.codes[r * n + p] = static_cast<uint8_t>(code);
        const float dq = static_cast<float>(code - half) * s;
        const float* urow = u_.data() + p * n;
        const float e = (wr[p] - dq) / urow[p];
        for (int64_t j = p + 1; j < b_end; ++j) wr[j] -= e * urow[j];
        er[p - a] = e;
        re += static_cast<double>(e) * e;
      }
      row_err[r] += re;
    }
    // The group's errors to every later input, 8 rows at a time.
    if (b_end < n) {
      const int64_t tiles = (out + 7) / 8;
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t r0 = t * 8;
        const int nr = static_cast<int>(std::min<int64_t>(8, out - r0));
        lazy(w.data() + r0 * n + b_end, n, nr, errs.data() + r0 * gn, gn, u_.data() + a * n + b_end, n, n - b_end);
      }
    }
  }
  double total = 0;
  for (double e : row_err) total += e;
  res.error = denom_ > 0 ? total / denom_ : 0.0;
  return res;
}

namespace {

int64_t Padded(int64_t out) { return (out + 31) / 32 * 32; }

}  // namespace

std::vector<PackedTensor> Exl2Layout(int64_t out, int64_t in, const std::vector<Exl2Group>& plan) {
  int64_t qrows = 0;
  for (const Exl2Group& g : plan) qrows += g.rows * g.bits / 32;
  const int64_t width = Padded(out), ng = static_cast<int64_t>(plan.size());
  std::vector<PackedTensor> t;
  t.push_back(ZeroPackedTensor("q_weight", SafetensorsDtype::kI32, {qrows, width}));
  t.push_back(ZeroPackedTensor("q_scale", SafetensorsDtype::kI32, {ng, width / 8}));
  t.push_back(ZeroPackedTensor("q_scale_max", SafetensorsDtype::kF16, {ng}));
  t.push_back(ZeroPackedTensor("q_groups", SafetensorsDtype::kI16, {2 * ng}));
  t.push_back(ZeroPackedTensor("q_invperm", SafetensorsDtype::kI32, {in}));
  return t;
}

std::vector<PackedTensor> PackExl2(const Exl2Linear& q) {
  std::vector<PackedTensor> t = Exl2Layout(q.out, q.in, q.groups);
  const int64_t width = Padded(q.out), ng = static_cast<int64_t>(q.groups.size());
  std::vector<uint32_t> words(static_cast<size_t>(t[0].shape[0] * width), 0);
  std::vector<uint32_t> scales(static_cast<size_t>(ng * (width / 8)), 0);
  std::vector<int16_t> table(static_cast<size_t>(2 * ng));
  int64_t qrow = 0;
  for (int64_t g = 0; g < ng; ++g) {
    const Exl2Group& gr = q.groups[g];
    const int half = 1 << (gr.bits - 1);
    table[2 * g] = static_cast<int16_t>(gr.bits);
    table[2 * g + 1] = static_cast<int16_t>(static_cast<uint16_t>(qrow));
    for (int64_t c = 0; c < width; ++c) {
      // Output features past `out` (padding) hold the zero code at scale 1.
      const int k = c < q.out ? q.qscale[g * q.out + c] : 1;
      scales[g * (width / 8) + c / 8] |= static_cast<uint32_t>(k - 1) << (4 * (c % 8));
      for (int64_t i = 0; i < gr.rows; ++i) {
        const uint64_t code = c < q.out ? q.codes[c * q.in + gr.first_row + i] : static_cast<uint64_t>(half);
        const int64_t bit = i * gr.bits, word = bit / 32, shift = bit % 32;
        const uint64_t v = code << shift;
        words[(qrow + word) * width + c] |= static_cast<uint32_t>(v);
        if (shift + gr.bits > 32) words[(qrow + word + 1) * width + c] |= static_cast<uint32_t>(v >> 32);
      }
    }
    qrow += gr.rows * gr.bits / 32;
  }
  std::memcpy(t[0].bytes.data(), words.data(), t[0].bytes.size());
  std::memcpy(t[1].bytes.data(), scales.data(), t[1].bytes.size());
  std::memcpy(t[2].bytes.data(), q.qscale_max.data(), t[2].bytes.size());
  std::memcpy(t[3].bytes.data(), table.data(), t[3].bytes.size());
  std::vector<int32_t> inv(static_cast<size_t>(q.in));
  for (int64_t p = 0; p < q.in; ++p) inv[q.perm[p]] = static_cast<int32_t>(p);
  std::memcpy(t[4].bytes.data(), inv.data(), t[4].bytes.size());
  return t;
}

absl::StatusOr<std::vector<int>> Exl2Choose(const std::vector<std::vector<std::pair<int64_t, double>>>& options,
                                            int64_t total_weights, double budget_bits) {
  const double unit = static_cast<double>(total_weights) * 1e-4;
  const int64_t budget = static_cast<int64_t>(std::floor(budget_bits / unit));
  const size_t n = options.size();
  std::vector<std::vector<int64_t>> cost(n);
  int64_t cheapest = 0;
  for (size_t i = 0; i < n; ++i) {
    int64_t lo = std::numeric_limits<int64_t>::max();
    for (const auto& [bits, err] : options[i]) {
      cost[i].push_back(static_cast<int64_t>(std::ceil(static_cast<double>(bits) / unit)));
      lo = std::min(lo, cost[i].back());
    }
    cheapest += lo;
  }
  if (cheapest > budget) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the target %.4g bits per weight is below the cheapest mix this model allows (%.4g)",
        budget_bits / total_weights, cheapest * unit / total_weights));
  }
  // best[j]: least error of the linears so far with cost exactly j; choice
  // per linear and cost for the walk back.
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> best(static_cast<size_t>(budget + 1), kInf), next;
  best[0] = 0;
  std::vector<std::vector<uint8_t>> choice(n, std::vector<uint8_t>(static_cast<size_t>(budget + 1), 0xFF));
  for (size_t i = 0; i < n; ++i) {
    next.assign(best.size(), kInf);
    for (int64_t j = 0; j <= budget; ++j) {
      if (best[j] == kInf) continue;
      for (size_t k = 0; k < options[i].size(); ++k) {
        const int64_t to = j + cost[i][k];
        if (to > budget) continue;
        const double e = best[j] + options[i][k].second;
        if (e < next[to]) {
          next[to] = e;
          choice[i][to] = static_cast<uint8_t>(k);
        }
      }
    }
    best.swap(next);
  }
  int64_t at = 0;
  for (int64_t j = 1; j <= budget; ++j) {
    if (best[j] < best[at]) at = j;
  }
  std::vector<int> picked(n);
  for (size_t i = n; i-- > 0;) {
    const int k = choice[i][at];
    picked[i] = k;
    at -= cost[i][k];
  }
  // The rounded-up costs leave up to one unit per linear unused (0.02 bpw
  // over 200 linears): spend it in exact bits, one swap at a time, each the
  // swap that lowers the error most among those that still fit.
  int64_t used = 0;
  for (size_t i = 0; i < n; ++i) used += options[i][picked[i]].first;
  for (;;) {
    size_t bi = n;
    int bk = -1;
    double gain = 0;
    for (size_t i = 0; i < n; ++i) {
      const auto& cur = options[i][picked[i]];
      for (size_t k = 0; k < options[i].size(); ++k) {
        const auto& alt = options[i][k];
        if (static_cast<double>(used - cur.first + alt.first) > budget_bits) continue;
        if (cur.second - alt.second > gain) {
          gain = cur.second - alt.second;
          bi = i;
          bk = static_cast<int>(k);
        }
      }
    }
    if (bi == n) break;
    used += options[bi][bk].first - options[bi][picked[bi]].first;
    picked[bi] = bk;
  }
  return picked;
}

}  // namespace tessera::quantize
