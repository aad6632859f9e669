// Every optimized kernel against the reference kernel, over random blocks.
#include "kernels/cpu/quant_kernels.h"
#include "kernels/cpu/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <vector>

#include "common/fp16.h"
#include "common/quant_blocks.h"
#include "kernels/cpu/ggml_numerics.h"
#include "kernels/cpu/lora_kernels.h"

namespace tessera::cpu {
namespace {

// Random bytes for `rows` rows of n elements of `type`, with every half
// scale replaced by a finite value of sensible size.
std::vector<uint8_t> RandomRows(GgmlType type, int64_t n, int rows, std::mt19937& rng) {
  const auto t = *TraitsOf(type);
  const size_t row_bytes = n / t.block_elems * t.block_bytes;
  std::vector<uint8_t> b(row_bytes * rows);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  auto h = [&](uint8_t* p) { uint16_t v = Fp32ToFp16(scale(rng)); std::memcpy(p, &v, 2); };
  auto hs = [&](uint8_t* p) { uint16_t v = Fp32ToFp16(scale(rng) * ((rng() & 1) ? 1 : -1)); std::memcpy(p, &v, 2); };
  const size_t nb = b.size() / t.block_bytes;
  for (size_t i = 0; i < nb; ++i) {
    uint8_t* blk = b.data() + i * t.block_bytes;
    switch (type) {
      case GgmlType::kF32: { for (int k = 0; k < 1; ++k) { float v = scale(rng) * 20 - 0.5f; std::memcpy(blk, &v, 4); } break; }
      case GgmlType::kF16: hs(blk); break;
      case GgmlType::kBF16: { uint16_t v = Fp32ToBf16(scale(rng) * 20 - 0.5f); std::memcpy(blk, &v, 2); break; }
      case GgmlType::kQ4_0: case GgmlType::kQ5_0: case GgmlType::kQ8_0: h(blk); break;
      case GgmlType::kQ4_1: case GgmlType::kQ5_1: h(blk); hs(blk + 2); break;
      case GgmlType::kQ2_K: h(blk + offsetof(BlockQ2_K, d)); h(blk + offsetof(BlockQ2_K, dmin)); break;
      case GgmlType::kQ3_K: h(blk + offsetof(BlockQ3_K, d)); break;
      case GgmlType::kQ4_K: h(blk + offsetof(BlockQ4_K, d)); h(blk + offsetof(BlockQ4_K, dmin)); break;
      case GgmlType::kQ5_K: h(blk + offsetof(BlockQ5_K, d)); h(blk + offsetof(BlockQ5_K, dmin)); break;
      case GgmlType::kQ6_K: h(blk + offsetof(BlockQ6_K, d)); break;
      case GgmlType::kQ4G32: case GgmlType::kQ4G64: case GgmlType::kQ4G128:
      case GgmlType::kQ8G32: case GgmlType::kQ8G64: case GgmlType::kQ8G128: {
        // f32 scale and min (Tessera's group layouts: d then m at the front).
        const float dm[2] = {scale(rng), scale(rng) * 8 * ((rng() & 1) ? 1 : -1)};
        std::memcpy(blk, dm, sizeof(dm));
        break;
      }
      default: break;
    }
  }
  return b;
}

class KernelTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(KernelTest, BestVariantMatchesReference) {
  const GgmlType type = GetParam();
  const WeightKernels* best = KernelsFor(type);
  const WeightKernels* ref = ReferenceKernelsFor(type);
  ASSERT_NE(best, nullptr);
  ASSERT_NE(ref, nullptr);
  std::mt19937 rng(static_cast<uint32_t>(type) * 7919u);
  for (int64_t n : {256, 512, 1536}) {
    const int rows = 8;
    auto w = RandomRows(type, n, rows, rng);
    const size_t row_bytes = w.size() / rows;
    std::normal_distribution<float> act(0.f, 1.f);
    std::vector<float> x(n);
    for (auto& v : x) v = act(rng);
    std::vector<uint8_t> xq(ActRowBytes(ref->act_type, n));
    ref->quantize_act(x.data(), xq.data(), n);
    std::vector<float> wf(n), xf(n);
    for (int r = 0; r < rows; ++r) {
      const uint8_t* wr = w.data() + r * row_bytes;
      // The reference dot equals the float dot of the dequantized rows.
      ref->dequant(wr, wf.data(), n);
      const float got_ref = ref->vec_dot(n, wr, xq.data());
      const float got_best = best->vec_dot(n, wr, xq.data());
      double mag = 0;
      for (int64_t i = 0; i < n; ++i) mag += std::fabs(wf[i] * x[i]);
      const double tol = 1e-5 * mag + 1e-6;
      EXPECT_NEAR(got_best, got_ref, tol) << TypeName(type) << " n=" << n << " row " << r
                                          << " isa=" << IsaName(best->isa);
      ASSERT_TRUE(std::isfinite(got_best));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, KernelTest,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0,
                                           GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0,
                                           GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                           GgmlType::kQ6_K, GgmlType::kQ4G32, GgmlType::kQ4G64,
                                           GgmlType::kQ4G128, GgmlType::kQ8G32, GgmlType::kQ8G64,
                                           GgmlType::kQ8G128),
                         [](const auto& info) { return std::string(TypeName(info.param)); });

TEST(DequantTest, Q4_1KnownBlock) {
  BlockQ4_1 b{};
  b.d = Fp32ToFp16(0.5f);
  b.m = Fp32ToFp16(-1.0f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  ReferenceKernelsFor(GgmlType::kQ4_1)->dequant(&b, y, 32);
  EXPECT_EQ(y[0], -1.0f);
  EXPECT_EQ(y[3], 0.5f);
  EXPECT_EQ(y[16], 6.5f);
  EXPECT_EQ(y[31], -1.0f);
}

TEST(DequantTest, Q8_0RoundTripThroughActivationQuantizer) {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = std::sin(i * 0.3f) * 3.f;
  std::vector<uint8_t> q(ActRowBytes(GgmlType::kQ8_0, 64));
  const WeightKernels* k = ReferenceKernelsFor(GgmlType::kQ8_0);
  k->quantize_act(x.data(), q.data(), 64);
  std::vector<float> y(64);
  k->dequant(q.data(), y.data(), 64);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(y[i], x[i], 3.f / 127 * 0.51f + 1e-3f);
}

// The SIMD variant of each llama.cpp order against the reference of that order.
VectorKernels SimdVariant(GgmlOrder o) {
  return BestIsa() >= Isa::kAvx2 ? Avx2VectorKernels(o) : ReferenceVectorKernels(o);
}

TEST(VectorKernelsTest, SimdMatchesReferenceBitForBit) {
  for (GgmlOrder o : {GgmlOrder::kAvx512, GgmlOrder::kAvx2}) {
  SCOPED_TRACE(Lanes(o));
  const VectorKernels ref = ReferenceVectorKernels(o);
  const VectorKernels best = SimdVariant(o);
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.f, 2.f);
  for (int n : {64, 128, 80}) {
    std::vector<float> b(n), y1(n), y2(n);
    std::vector<uint16_t> a(n);
    for (int i = 0; i < n; ++i) { a[i] = Fp32ToFp16(d(rng)); b[i] = d(rng); y1[i] = y2[i] = d(rng); }
    EXPECT_EQ(ref.dot(a.data(), b.data(), n), best.dot(a.data(), b.data(), n)) << n;
    ref.axpy(0.37f, a.data(), y1.data(), n);
    best.axpy(0.37f, a.data(), y2.data(), n);
    EXPECT_EQ(y1, y2);
    std::vector<uint16_t> h1(n), h2(n);
    ref.from_float(b.data(), h1.data(), n);
    best.from_float(b.data(), h2.data(), n);
    EXPECT_EQ(h1, h2);
  }
  }
}

TEST(NumericsTest, ExpfCompatIsAccurate) {
  for (float x = -100.f; x < 88.f; x += 0.173f) {
    const double want = std::exp(static_cast<double>(x));
    EXPECT_NEAR(ExpfCompat(x), want, want * 4e-7 + 2e-45) << x;  // subnormals: absolute
  }
  EXPECT_EQ(ExpfCompat(-INFINITY), 0.f);
  EXPECT_EQ(ExpfCompat(-200.f), 0.f);
  EXPECT_TRUE(std::isinf(ExpfCompat(200.f)));
}

TEST(NumericsTest, ExpfCompatAvx2IsAccurateAndDiffersOnlyInRounding) {
  int differ = 0;
  for (float x = -100.f; x < 88.f; x += 0.173f) {
    const double want = std::exp(static_cast<double>(x));
    EXPECT_NEAR(ExpfCompatAvx2(x), want, want * 4e-7 + 2e-45) << x;
    differ += ExpfCompatAvx2(x) != ExpfCompat(x);
  }
  EXPECT_GT(differ, 0) << "the two builds' exps should round differently somewhere";
  EXPECT_EQ(ExpfCompatAvx2(-INFINITY), 0.f);
  EXPECT_EQ(ExpfCompatAvx2(-200.f), 0.f);
  EXPECT_TRUE(std::isinf(ExpfCompatAvx2(200.f)));
}

}  // namespace
}  // namespace tessera::cpu

namespace tessera::cpu {
namespace {

TEST(VectorKernelsTest, SiluAttentionAndQuantizersMatchReferenceBitForBit) {
  for (GgmlOrder o : {GgmlOrder::kAvx512, GgmlOrder::kAvx2}) {
  SCOPED_TRACE(Lanes(o));
  const VectorKernels ref = ReferenceVectorKernels(o);
  const VectorKernels best = SimdVariant(o);
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.f, 4.f);
  std::vector<float> g(1000), u(1000), o1(1000), o2(1000);
  for (int i = 0; i < 1000; ++i) { g[i] = d(rng) * (i % 50 == 0 ? 40.f : 1.f); u[i] = d(rng); }
  ref.silu_mul(g.data(), u.data(), o1.data(), 1000);
  best.silu_mul(g.data(), u.data(), o2.data(), 1000);
  EXPECT_EQ(o1, o2);

  const int hd = 64, n_kv = 2, block = 16;
  std::vector<uint16_t> k(64 * block * n_kv * hd), v(k.size());
  for (auto& x : k) x = Fp32ToFp16(d(rng));
  for (auto& x : v) x = Fp32ToFp16(d(rng));
  KvLayer kv{k.data(), v.data(), block, n_kv * hd, 64};
  std::vector<int32_t> table(64);
  for (int i = 0; i < 64; ++i) table[i] = (i * 37) % 64;
  AttentionShape shape{4, n_kv, hd, 0.125f};
  std::vector<float> q(hd), a(hd), b(hd);
  AttentionScratch s1, s2;
  for (int64_t n_ctx : {1, 7, 16, 33, 500}) {
    for (auto& x : q) x = d(rng);
    ref.attend(q.data(), kv, table, n_ctx, 1, shape, a.data(), s1);
    best.attend(q.data(), kv, table, n_ctx, 1, shape, b.data(), s2);
    EXPECT_EQ(a, b) << n_ctx;
  }

  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_1, GgmlType::kQ4G32}) {
    const WeightKernels* r = ReferenceKernelsFor(t);
    const WeightKernels* bk = KernelsFor(t);
    std::vector<float> x(1536);
    for (auto& e : x) e = d(rng);
    x[5] = 0.5f;  // exact ties round to even
    std::vector<uint8_t> q1(ActRowBytes(r->act_type, 1536)), q2(q1.size());
    r->quantize_act(x.data(), q1.data(), 1536);
    bk->quantize_act(x.data(), q2.data(), 1536);
    EXPECT_EQ(q1, q2) << TypeName(t);
  }
  }
}

// The LoRA rows kernel of every ISA gives the reference's bits for every
// storage type, each row of a group of up to four equals the row alone, and
// the result is y + scale * B (A x) computed in double on the stored values.
TEST(LoraKernelsTest, RowsMatchReferenceAndMathForEveryDtype) {
  std::mt19937 rng(9);
  std::normal_distribution<float> d(0.f, 1.f);
  for (LoraDtype dtype : {LoraDtype::kF32, LoraDtype::kF16, LoraDtype::kBF16}) {
    for (int rank : {1, 4, 8, 13, 16}) {
      for (int64_t out : {5, 64, 192}) {
        // Inputs that are and are not a whole number of the shrink's partial sums.
        const int64_t in = out == 64 ? 75 : 72;
        std::vector<float> x(in), a_t(in * rank), b_t(rank * out);
        for (auto* v : {&x, &a_t, &b_t})
          for (auto& e : *v) e = d(rng);
        // The weights as stored, and as the float values they stand for.
        std::vector<uint16_t> a16(a_t.size()), b16(b_t.size());
        for (size_t i = 0; i < a_t.size(); ++i) {
          a16[i] = dtype == LoraDtype::kF16 ? Fp32ToFp16(a_t[i]) : Fp32ToBf16(a_t[i]);
          if (dtype != LoraDtype::kF32) a_t[i] = dtype == LoraDtype::kF16 ? Fp16ToFp32(a16[i]) : Bf16ToFp32(a16[i]);
        }
        for (size_t i = 0; i < b_t.size(); ++i) {
          b16[i] = dtype == LoraDtype::kF16 ? Fp32ToFp16(b_t[i]) : Fp32ToBf16(b_t[i]);
          if (dtype != LoraDtype::kF32) b_t[i] = dtype == LoraDtype::kF16 ? Fp16ToFp32(b16[i]) : Bf16ToFp32(b16[i]);
        }
        const LoraPair pair = dtype == LoraDtype::kF32 ? LoraPair{a_t.data(), b_t.data(), rank, 0.5f, dtype}
                                                       : LoraPair{a16.data(), b16.data(), rank, 0.5f, dtype};
        std::vector<float> y1(out), y2(out), scratch(4 * rank + out);
        for (auto& e : y1) e = d(rng);
        y2 = y1;
        const std::vector<float> y0 = y1;
        const float* x1[] = {x.data()};
        float* p1[] = {y1.data()};
        float* p2[] = {y2.data()};
        LoraRowsReference()(1, x1, in, pair, out, p1, scratch.data());
        BestLoraRows()(1, x1, in, pair, out, p2, scratch.data());
        EXPECT_EQ(y1, y2) << rank << " " << out;
        // Rows in groups: each equals the row alone.
        std::vector<std::vector<float>> xs4(3, std::vector<float>(in)), ys4(3, y0);
        for (auto& v : xs4)
          for (auto& e : v) e = d(rng);
        xs4[1] = x;
        const float* xp[3] = {xs4[0].data(), xs4[1].data(), xs4[2].data()};
        float* yp[3] = {ys4[0].data(), ys4[1].data(), ys4[2].data()};
        BestLoraRows()(3, xp, in, pair, out, yp, scratch.data());
        EXPECT_EQ(ys4[1], y1) << rank << " " << out;
        for (int64_t o = 0; o < out; ++o) {  // y0 + 0.5 * B (A x) in double
          double delta = 0;
          for (int k = 0; k < rank; ++k) {
            double t = 0;
            for (int64_t i = 0; i < in; ++i) t += double(x[i]) * a_t[i * rank + k];
            delta += 0.5 * t * b_t[k * out + o];
          }
          EXPECT_NEAR(y1[o], y0[o] + delta, 1e-3 * (1 + std::abs(delta)));
        }
      }
    }
  }
}

TEST(VectorKernelsTest, FourRowDotEqualsSingleRowDot) {
  std::mt19937 rng(5);
  constexpr int64_t n = 768;  // whole blocks of every layout below
  constexpr size_t ss = n / 32 * 2;
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4G32, GgmlType::kQ4G64, GgmlType::kQ4G128,
                     GgmlType::kQ8G32, GgmlType::kQ8G64, GgmlType::kQ8G128}) {
    SCOPED_TRACE(std::string(TypeName(t)));
    const WeightKernels* k = KernelsFor(t);
    if (k->vec_dot_x4 == nullptr) GTEST_SKIP() << "no 4-row kernel on this CPU";
    auto w = RandomRows(t, n, 1, rng);
    std::normal_distribution<float> d(0.f, 1.f);
    const size_t row = ActRowBytes(k->act_type, n);
    std::vector<uint8_t> xq(row * 4);
    std::vector<float> x(n);
    for (int j = 0; j < 4; ++j) {
      for (auto& e : x) e = d(rng);
      k->quantize_act(x.data(), xq.data() + j * row, n);
    }
    std::vector<float> scales(4 * ss);
    for (int j = 0; j < 4; ++j) ActScales(k->act_type, xq.data() + j * row, n, scales.data() + j * ss);
    float out[4];
    k->vec_dot_x4(n, w.data(), xq.data(), row, scales.data(), ss, out);
    for (int j = 0; j < 4; ++j) EXPECT_EQ(out[j], k->vec_dot(n, w.data(), xq.data() + j * row));
    if (k->vec_dot_2x4 != nullptr) {
      auto w2 = RandomRows(t, n, 2, rng);
      const size_t wrow = w2.size() / 2;
      float out8[8];
      k->vec_dot_2x4(n, w2.data(), wrow, xq.data(), row, scales.data(), ss, out8);
      for (int h = 0; h < 2; ++h)
        for (int j = 0; j < 4; ++j)
          EXPECT_EQ(out8[h * 4 + j], k->vec_dot(n, w2.data() + h * wrow, xq.data() + j * row)) << h << "," << j;
    }
    if (k->vec_dot_4x4 != nullptr) {
      auto w4 = RandomRows(t, n, 4, rng);
      const size_t wrow = w4.size() / 4;
      float out16[16];
      k->vec_dot_4x4(n, w4.data(), wrow, xq.data(), row, scales.data(), ss, out16);
      for (int h = 0; h < 4; ++h)
        for (int j = 0; j < 4; ++j)
          EXPECT_EQ(out16[h * 4 + j], k->vec_dot(n, w4.data() + h * wrow, xq.data() + j * row)) << h << "," << j;
    }
  }
}

}  // namespace
}  // namespace tessera::cpu

namespace tessera::cpu {
namespace {

TEST(IsaVariantsTest, EveryIsaComputesTheSameBits) {
  std::mt19937 rng(17);
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ6_K, GgmlType::kQ4G128,
                     GgmlType::kQ8G64}) {
    const WeightKernels* avx2 = KernelsFor(t, Isa::kAvx2);
    const WeightKernels* vnni = KernelsFor(t, Isa::kAvx512Vnni);
    if (avx2 == nullptr || vnni == nullptr) continue;
    auto w = RandomRows(t, 1536, 4, rng);
    const size_t wrow = w.size() / 4;
    std::normal_distribution<float> d(0.f, 1.f);
    std::vector<float> x(1536);
    for (auto& e : x) e = d(rng);
    std::vector<uint8_t> xq(ActRowBytes(avx2->act_type, 1536));
    avx2->quantize_act(x.data(), xq.data(), 1536);
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(avx2->vec_dot(1536, w.data() + r * wrow, xq.data()), vnni->vec_dot(1536, w.data() + r * wrow, xq.data()))
          << TypeName(t);
    }
  }
}

}  // namespace
}  // namespace tessera::cpu
