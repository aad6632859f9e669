// Unit tests of the exl2 quantizer pieces (tools/quantize/exl2_quant.h): the
// error GPTQ reports against the Hessian's own measure, the group plans and
// their storage accounting, the optimizer against brute force, and
// determinism over thread counts. The written format is held to the
// independent Python reference by tests/oracle/test_quantize_exl2.py.
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"
#include "tools/quantize/exl2_quant.h"
#include "tools/quantize/gptq_solver.h"

namespace tessera::quantize {
namespace {

struct Layer {
  int64_t d = 0, rows = 0;
  std::vector<float> w;
  std::vector<double> h;  // 2/n X^T X
};

// Correlated inputs (fewer latent factors plus noise, a few large channels).
Layer MakeLayer(int64_t n, int64_t d, int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  const int64_t k = d / 4;
  std::vector<float> mix(k * d), x(n * d), z(k);
  for (float& v : mix) v = g(rng);
  for (int64_t t = 0; t < n; ++t) {
    for (float& v : z) v = g(rng);
    for (int64_t c = 0; c < d; ++c) {
      float s = 0.1f * g(rng);
      for (int64_t j = 0; j < k; ++j) s += z[j] * mix[j * d + c];
      x[t * d + c] = s * (c % 17 == 0 ? 8.f : 1.f);
    }
  }
  Layer l{d, rows, std::vector<float>(rows * d), {}};
  for (float& v : l.w) v = 0.05f * g(rng);
  HessianAccumulator acc(d);
  acc.Add(x.data(), n, d);
  l.h = acc.Hessian();
  return l;
}

Exl2Mix Mix(std::vector<std::pair<int, double>> widths, int group) { return Exl2Mix{std::move(widths), group}; }

TEST(Exl2Quant, ReportedErrorIsTheDampedHessianError) {
  const Layer l = MakeLayer(512, 256, 64, 1);
  const double damp = 0.1;
  auto solver = Exl2Solver::Prepare(l.w.data(), l.rows, l.d, l.h, damp);
  ASSERT_TRUE(solver.ok()) << solver.status();
  auto r = solver->Quantize(Exl2GroupPlan(l.d, Mix({{4, 0.25}, {3, 0.75}}, 64)));
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<float> q = r->q.Dequantize();
  const int64_t d = l.d;
  double mean = 0;
  for (int64_t i = 0; i < d; ++i) mean += l.h[i * d + i];
  mean /= d;
  double num = 0, den = 0;
  for (int64_t r0 = 0; r0 < l.rows; ++r0) {
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t j = 0; j < d; ++j) {
        const double hij = l.h[i * d + j] + (i == j ? damp * mean : 0.0);
        const double ei = l.w[r0 * d + i] - q[r0 * d + i], ej = l.w[r0 * d + j] - q[r0 * d + j];
        num += ei * hij * ej;
        den += l.w[r0 * d + i] * hij * l.w[r0 * d + j];
      }
    }
  }
  EXPECT_NEAR(r->error, num / den, 1e-3 * num / den);
  EXPECT_GT(r->error, 0);
}

TEST(Exl2Quant, ErrorFallsWithTheWidth) {
  const Layer l = MakeLayer(512, 256, 64, 2);
  auto solver = Exl2Solver::Prepare(l.w.data(), l.rows, l.d, l.h, 0.1);
  ASSERT_TRUE(solver.ok());
  double last = std::numeric_limits<double>::infinity();
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    auto r = solver->Quantize(Exl2GroupPlan(l.d, Mix({{bits, 1.0}}, 128)));
    ASSERT_TRUE(r.ok());
    EXPECT_LT(r->error, last) << bits;
    last = r->error;
  }
}

TEST(Exl2Quant, GroupPlansCoverTheRowsWidestFirst) {
  for (const Exl2Mix& mix : Exl2Candidates()) {
    for (int64_t in : {576, 1536, 192, 96}) {
      const std::vector<Exl2Group> plan = Exl2GroupPlan(in, mix);
      int64_t row = 0;
      for (size_t i = 0; i < plan.size(); ++i) {
        EXPECT_EQ(plan[i].first_row, row) << mix.Name();
        EXPECT_EQ(plan[i].rows % 32, 0) << mix.Name() << " " << in;
        EXPECT_LE(plan[i].rows, mix.group_size);
        if (i > 0) EXPECT_LE(plan[i].bits, plan[i - 1].bits) << mix.Name();
        row += plan[i].rows;
      }
      EXPECT_EQ(row, in) << mix.Name();
    }
  }
  // exllamav2's rule: 576 rows, 4:0.25 (144 rows -> 3 groups of 64), then 3-bit for the rest.
  const std::vector<Exl2Group> plan = Exl2GroupPlan(576, Mix({{4, 0.25}, {3, 0.75}}, 64));
  ASSERT_EQ(plan.size(), 9u);
  EXPECT_EQ(plan[2].bits, 4);
  EXPECT_EQ(plan[3].bits, 3);
  // Storage: codes + 48 bits and 4 bits per output per group + 32 per input row.
  EXPECT_EQ(Exl2StorageBits(64, 576, plan), (192 * 4 + 384 * 3) * 64 + 9 * (48 + 64 * 4) + 576 * 32);
}

TEST(Exl2Quant, ChooseIsTheBruteForceOptimum) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> bits(200, 900);
  std::uniform_real_distribution<double> err(0.0, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 4, k = 5;
    std::vector<std::vector<std::pair<int64_t, double>>> options(n);
    for (auto& o : options) {
      for (int j = 0; j < k; ++j) o.emplace_back(bits(rng) * 1000, err(rng));
    }
    const int64_t weights = 1000000;  // units of 100 bits: the costs above are whole units
    const double budget = 2200000 + trial * 50000;
    double best = std::numeric_limits<double>::infinity();
    for (int c = 0; c < k * k * k * k; ++c) {
      int64_t b = 0;
      double e = 0;
      for (int i = 0, cc = c; i < n; ++i, cc /= k) {
        b += options[i][cc % k].first;
        e += options[i][cc % k].second;
      }
      if (b <= budget) best = std::min(best, e);
    }
    auto picked = Exl2Choose(options, weights, budget);
    if (best == std::numeric_limits<double>::infinity()) {
      EXPECT_FALSE(picked.ok());
      continue;
    }
    ASSERT_TRUE(picked.ok()) << picked.status();
    int64_t b = 0;
    double e = 0;
    for (int i = 0; i < n; ++i) {
      b += options[i][(*picked)[i]].first;
      e += options[i][(*picked)[i]].second;
    }
    EXPECT_LE(b, budget);
    EXPECT_NEAR(e, best, 1e-12) << trial;
  }
}

TEST(Exl2Quant, ChooseRefusesABudgetBelowTheCheapest) {
  const std::vector<std::vector<std::pair<int64_t, double>>> options = {{{3000, 1.0}, {5000, 0.5}}};
  auto picked = Exl2Choose(options, 1000, 2500);
  ASSERT_FALSE(picked.ok());
  EXPECT_NE(picked.status().message().find("below the cheapest"), std::string::npos) << picked.status();
}

TEST(Exl2Quant, SameCodesForAnyThreadCount) {
  const Layer l = MakeLayer(256, 256, 48, 3);
  const std::vector<Exl2Group> plan = Exl2GroupPlan(l.d, Mix({{8, 0.1}, {6, 0.9}}, 128));
  std::vector<std::vector<PackedTensor>> packed;
  std::vector<double> errors;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    auto solver = Exl2Solver::Prepare(l.w.data(), l.rows, l.d, l.h, 0.1);
    ASSERT_TRUE(solver.ok());
    auto r = solver->Quantize(plan);
    ASSERT_TRUE(r.ok());
    packed.push_back(PackExl2(r->q));
    errors.push_back(r->error);
  }
  ASSERT_EQ(packed[0].size(), packed[1].size());
  for (size_t i = 0; i < packed[0].size(); ++i) EXPECT_EQ(packed[0][i].bytes, packed[1][i].bytes) << packed[0][i].suffix;
  EXPECT_EQ(errors[0], errors[1]);
}

}  // namespace
}  // namespace tessera::quantize
