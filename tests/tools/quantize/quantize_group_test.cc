// Unit tests of the awq/gptq/rtn quantizer pieces: GPTQ against RTN on a
// layer with correlated inputs, the inverse-Hessian factor, determinism over
// thread counts, the packers against Tessera's own loaders, calibration
// windows.
#include <omp.h>

#include <cmath>
#include <random>
#include <algorithm>
#include <deque>
#include <memory>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/quantize/awq_search.h"
#include "tools/quantize/calibration_data.h"
#include "tools/quantize/gptq_solver.h"
#include "tools/quantize/group_quant.h"
#include "worker/model/quant_format.h"

namespace tessera::quantize {
namespace {

// X [n][d] with strongly correlated columns (a random mixing of fewer
// latent factors plus noise), W [rows][d].
struct Layer {
  int64_t n, d, rows;
  std::vector<float> x, w;
};

Layer MakeLayer(int64_t n, int64_t d, int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  const int64_t k = d / 4;
  std::vector<float> mix(k * d);
  for (float& v : mix) v = g(rng);
  Layer l{n, d, rows, std::vector<float>(n * d), std::vector<float>(rows * d)};
  std::vector<float> z(k);
  for (int64_t t = 0; t < n; ++t) {
    for (float& v : z) v = g(rng);
    for (int64_t c = 0; c < d; ++c) {
      float s = 0.1f * g(rng);
      for (int64_t j = 0; j < k; ++j) s += z[j] * mix[j * d + c];
      // A few channels much larger, as in real activations.
      l.x[t * d + c] = s * (c % 17 == 0 ? 8.f : 1.f);
    }
  }
  for (float& v : l.w) v = 0.05f * g(rng);
  return l;
}

double OutputError(const Layer& l, const std::vector<float>& wq) {
  double e = 0;
  for (int64_t t = 0; t < l.n; ++t) {
    for (int64_t r = 0; r < l.rows; ++r) {
      double a = 0, b = 0;
      for (int64_t c = 0; c < l.d; ++c) {
        a += double(l.x[t * l.d + c]) * l.w[r * l.d + c];
        b += double(l.x[t * l.d + c]) * wq[r * l.d + c];
      }
      e += (a - b) * (a - b);
    }
  }
  return std::sqrt(e);
}

std::vector<double> HessianOf(const Layer& l) {
  HessianAccumulator h(l.d);
  h.Add(l.x.data(), l.n / 2, l.d);
  h.Add(l.x.data() + (l.n / 2) * l.d, l.n - l.n / 2, l.d);
  return h.Hessian();
}

TEST(Gptq, OutputErrorBelowRtnOnCorrelatedInputs) {
  const Layer l = MakeLayer(1024, 128, 32, 1);
  for (bool desc_act : {false, true}) {
    for (int bits : {4, 8}) {
      GptqOptions o;
      o.bits = bits;
      o.group_size = 32;
      o.sym = false;
      o.desc_act = desc_act;
      o.block_size = 64;  // blocks and groups not aligned with the column count
      auto g = GptqQuantize(l.w.data(), l.rows, l.d, HessianOf(l), o);
      ASSERT_TRUE(g.ok()) << g.status();
      auto r = RtnQuantize(l.w.data(), l.rows, l.d, bits, 32, false, false);
      ASSERT_TRUE(r.ok());
      const double eg = OutputError(l, g->q.Dequantize()), er = OutputError(l, r->Dequantize());
      EXPECT_LT(eg, 0.8 * er) << "bits " << bits << " desc_act " << desc_act << ": gptq " << eg << " rtn " << er;
    }
  }
}

TEST(Gptq, DeadColumnsAreZeroAndActOrderGroupsAreConsistent) {
  Layer l = MakeLayer(256, 64, 8, 2);
  for (int64_t t = 0; t < l.n; ++t) l.x[t * l.d + 5] = 0;  // input 5 never fires
  GptqOptions o;
  o.group_size = 32;
  o.desc_act = true;
  auto g = GptqQuantize(l.w.data(), l.rows, l.d, HessianOf(l), o);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->dead_columns, 1);
  const std::vector<float> wq = g->q.Dequantize();
  for (int64_t r = 0; r < l.rows; ++r) EXPECT_EQ(wq[r * l.d + 5], 0.f);
  std::vector<int> count(g->q.groups, 0);
  for (int32_t gi : g->q.g_idx) ++count[gi];
  for (int c : count) EXPECT_EQ(c, 32);
}

TEST(Gptq, SameResultForAnyThreadCount) {
  const Layer l = MakeLayer(300, 96, 24, 3);
  GptqOptions o;
  o.group_size = 32;
  o.desc_act = true;
  std::vector<std::vector<uint8_t>> codes;
  std::vector<std::vector<double>> hs;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    hs.push_back(HessianOf(l));
    auto g = GptqQuantize(l.w.data(), l.rows, l.d, hs.back(), o);
    ASSERT_TRUE(g.ok());
    codes.push_back(g->q.codes);
  }
  omp_set_num_threads(omp_get_num_procs());
  EXPECT_EQ(hs[0], hs[1]);
  EXPECT_EQ(hs[0], hs[2]);
  EXPECT_EQ(codes[0], codes[1]);
  EXPECT_EQ(codes[0], codes[2]);
}

TEST(Gptq, UpperCholeskyOfInverse) {
  const int64_t n = 37;
  std::mt19937 rng(4);
  std::normal_distribution<double> g;
  std::vector<double> m(n * n), a(n * n, 0.0);
  for (double& v : m) v = g(rng);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t k = 0; k < n; ++k) a[i * n + j] += m[i * n + k] * m[j * n + k];
    }
    a[i * n + i] += 0.5;
  }
  std::vector<double> u;
  ASSERT_TRUE(UpperCholeskyOfInverse(a, n, &u));
  // Uᵀ U A = I, U upper with a positive diagonal.
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_GT(u[i * n + i], 0);
    for (int64_t j = 0; j < i; ++j) EXPECT_EQ(u[i * n + j], 0);
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) {
        double utu = 0;
        for (int64_t p = 0; p < n; ++p) utu += u[p * n + i] * u[p * n + k];
        s += utu * a[k * n + j];
      }
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-8);
    }
  }
  std::vector<double> bad(a);
  bad[0] = -1;
  EXPECT_FALSE(UpperCholeskyOfInverse(bad, n, &u));
}

// The packers read back by Tessera's own loaders (worker/model/*_format.cc).
class Tensors : public TensorSource {
 public:
  void Add(const std::string& module, const std::vector<PackedTensor>& packed) {
    for (const PackedTensor& p : packed) {
      auto t = std::make_unique<SafetensorsTensor>();
      t->name = module + "." + p.suffix;
      t->dtype = p.dtype;
      t->shape = p.shape;
      bytes_.push_back(p.bytes);
      t->bytes = bytes_.back();
      tensors_.push_back(std::move(t));
    }
  }
  const SafetensorsTensor* Find(const std::string& name) const override {
    for (const auto& t : tensors_) {
      if (t->name == name) return t.get();
    }
    return nullptr;
  }

 private:
  std::deque<std::vector<uint8_t>> bytes_;
  std::vector<std::unique_ptr<SafetensorsTensor>> tensors_;
};

void ExpectLoaderAgrees(const GroupQuantizedLinear& q, const nlohmann::json& config, bool awq) {
  Tensors src;
  src.Add("m", awq ? PackAwq(q) : PackGptq(q));
  auto format = CreateQuantFormat(config);
  ASSERT_TRUE(format.ok()) << format.status();
  auto u = (*format)->Unpack(src, "m", q.rows, q.cols);
  ASSERT_TRUE(u.ok()) << u.status();
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t c = 0; c < q.cols; ++c) ASSERT_EQ(u->Weight(r, c), q.Weight(r, c)) << r << "," << c;
  }
}

TEST(Packers, TesseraLoadersReadWhatIsWritten) {
  const Layer l = MakeLayer(64, 96, 16, 5);
  for (int bits : {4, 8}) {
    for (bool sym : {true, false}) {
      auto q = RtnQuantize(l.w.data(), l.rows, l.d, bits, 64, sym, false);  // partial last group of 32
      ASSERT_TRUE(q.ok());
      ExpectLoaderAgrees(*q, {{"quant_method", "gptq"}, {"bits", bits}, {"group_size", 64}, {"sym", sym},
                              {"desc_act", false}, {"checkpoint_format", "gptq"}},
                         false);
    }
  }
  GptqOptions o;
  o.group_size = 32;
  o.desc_act = true;
  o.sym = false;
  auto g = GptqQuantize(l.w.data(), l.rows, l.d, HessianOf(l), o);
  ASSERT_TRUE(g.ok());
  ExpectLoaderAgrees(g->q, {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}, {"sym", false},
                            {"desc_act", true}, {"checkpoint_format", "gptq"}},
                     false);
  auto a = RtnQuantize(l.w.data(), l.rows, l.d, 4, 32, false, true);
  ASSERT_TRUE(a.ok());
  ExpectLoaderAgrees(*a, {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 32}, {"zero_point", true},
                          {"version", "gemm"}},
                     true);
}

TEST(Awq, ScalesAreNormalizedAndTheSearchedWeightIsCloseToTheOriginal) {
  const Layer l = MakeLayer(64, 128, 16, 6);
  DenseMatrix w{l.rows, l.d, l.w};
  AbsMeanAccumulator acc(l.d);
  acc.Add(l.x.data(), l.n);
  const std::vector<float> w_mean = AwqWeightMean({&w}, 32);
  for (int i = 0; i < kAwqGrid; ++i) {
    const std::vector<float> s = AwqScales(acc.Mean(), w_mean, i / double(kAwqGrid));
    const auto [mn, mx] = std::minmax_element(s.begin(), s.end());
    EXPECT_NEAR(double(*mn) * *mx, 1.0, 1e-4);
    const DenseMatrix q = AwqScaledQuantized(w, s, 32);
    double e = 0, n = 0;
    for (size_t k = 0; k < w.w.size(); ++k) {
      e += (q.w[k] - w.w[k]) * (q.w[k] - w.w[k]);
      n += w.w[k] * w.w[k];
    }
    EXPECT_LT(std::sqrt(e / n), 0.3);
  }
  // Clipping never widens a group.
  const std::vector<float> best = AwqClipSearch(w, l.x.data(), l.n, 32);
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t g = 0; g < 4; ++g) {
      float amax = 0;
      for (int64_t c = 32 * g; c < 32 * g + 32; ++c) amax = std::max(amax, std::fabs(w.row(r)[c]));
      EXPECT_LE(best[r * 4 + g], amax);
      EXPECT_GE(best[r * 4 + g], 0.5f * amax);
    }
  }
}

TEST(Calibration, EvenlySpacedWindowsAndShortText) {
  std::vector<int32_t> ids(100);
  for (int i = 0; i < 100; ++i) ids[i] = i;
  auto s = CutCalibrationSamples(ids, 3, 10);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->overlapping);
  EXPECT_EQ(s->tokens[0], 0);
  EXPECT_EQ(s->tokens[10], 45);
  EXPECT_EQ(s->tokens[20], 90);
  EXPECT_EQ(s->tokens[29], 99);
  auto o = CutCalibrationSamples(ids, 20, 10);
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->overlapping);
  auto bad = CutCalibrationSamples(ids, 1, 101);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("only 100 tokens"), std::string::npos);
}

}  // namespace
}  // namespace tessera::quantize
