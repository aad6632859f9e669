#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "common/fp16.h"
#include "kernels/backend.h"
#include "tests/kernels/random_values.h"
#include "kernels/cpu/lora_kernels.h"
#include "kernels/cpu/quant_kernels.h"

namespace tessera {
namespace {

using testing::Random;

void Fill(Mat m, const std::vector<float>& v) {
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.cols; ++c) m.row(r)[c] = v[r * m.cols + c];
}

// A and B (transposed) of one adapter in `dtype`, in one adapter buffer.
LoraPair UploadPair(Backend& be, const std::vector<float>& a, const std::vector<float>& b, int rank, float scale,
                    LoraDtype dtype) {
  const size_t elem = LoraDtypeBytes(dtype);
  std::vector<uint8_t> bytes((a.size() + b.size()) * elem);
  for (size_t i = 0; i < a.size() + b.size(); ++i) {
    const float v = i < a.size() ? a[i] : b[i - a.size()];
    if (dtype == LoraDtype::kF32) {
      std::memcpy(bytes.data() + i * 4, &v, 4);
    } else {
      const uint16_t h = dtype == LoraDtype::kF16 ? Fp32ToFp16(v) : Fp32ToBf16(v);
      std::memcpy(bytes.data() + i * 2, &h, 2);
    }
  }
  auto* buf = static_cast<uint8_t*>(*be.AllocateAdapterBuffer(static_cast<int64_t>(bytes.size())));
  be.CopyToAdapterBuffer(bytes.data(), static_cast<int64_t>(bytes.size()), buf);
  return {buf, buf + a.size() * elem, rank, scale, dtype};
}

// What a 16-bit type stores for each value, as float.
std::vector<float> Rounded(const std::vector<float>& v, LoraDtype dtype) {
  std::vector<float> out(v);
  for (float& x : out) {
    if (dtype == LoraDtype::kF16) x = Fp16ToFp32(Fp32ToFp16(x));
    if (dtype == LoraDtype::kBF16) x = Bf16ToFp32(Fp32ToBf16(x));
  }
  return out;
}

class CpuLoraTest : public ::testing::TestWithParam<LoraDtype> {};

TEST_P(CpuLoraTest, GroupsRowsByAdapterAndEachRowEqualsItAlone) {
  auto be = CreateCpuBackend({.threads = 2});
  const LoraDtype dtype = GetParam();
  const int64_t in = 64, out = 48, n = 9;
  // Three adapters of ranks 4, 8, 16 (and 12: not a multiple of the SIMD width).
  std::vector<LoraPair> pairs, f32_pairs;
  for (int rank : {4, 8, 12}) {
    auto a = Random(in * rank, 10 + rank), b = Random(rank * out, 20 + rank);
    pairs.push_back(UploadPair(*be, a, b, rank, 0.25f * rank, dtype));
    // The same weights as float32 after the storage rounding: 16-bit storage
    // must change nothing but that rounding (accumulation stays float32).
    f32_pairs.push_back(UploadPair(*be, Rounded(a, dtype), Rounded(b, dtype), rank, 0.25f * rank, LoraDtype::kF32));
  }
  Mat x = *be->AllocateMat(n, in), y = *be->AllocateMat(n, out), y32 = *be->AllocateMat(n, out);
  const auto xv = Random(n * in, 3), yv = Random(n * out, 4);
  Fill(x, xv);
  Fill(y, yv);
  Fill(y32, yv);
  // Rows 0,3,6 -> adapter 0; 1,4 -> adapter 1; 2,7,8 -> adapter 2; row 5 none.
  const std::vector<int32_t> g0 = {0, 3, 6}, g1 = {1, 4}, g2 = {2, 7, 8};
  const LoraGroup groups[] = {{g0, pairs[0]}, {g1, pairs[1]}, {g2, pairs[2]}};
  be->LoraApply(x, groups, y);
  const LoraGroup groups32[] = {{g0, f32_pairs[0]}, {g1, f32_pairs[1]}, {g2, f32_pairs[2]}};
  be->LoraApply(x, groups32, y32);
  auto adapter_of = [](int r) { return r == 5 ? -1 : r == 1 || r == 4 ? 1 : r == 2 || r == 7 || r == 8 ? 2 : 0; };
  for (int r = 0; r < n; ++r) {
    Mat x1 = *be->AllocateMat(1, in), y1 = *be->AllocateMat(1, out), yr = *be->AllocateMat(1, out);
    Fill(x1, std::vector<float>(xv.begin() + r * in, xv.begin() + (r + 1) * in));
    Fill(y1, std::vector<float>(yv.begin() + r * out, yv.begin() + (r + 1) * out));
    Fill(yr, std::vector<float>(yv.begin() + r * out, yv.begin() + (r + 1) * out));
    const int a = adapter_of(r);
    const std::vector<int32_t> only = {0};
    if (a >= 0) {
      const LoraGroup g[] = {{only, pairs[a]}};
      be->LoraApply(x1, g, y1);
      // The portable reference kernel agrees with the SIMD one bit for bit.
      std::vector<float> scratch(4 * 16 + out);
      const float* xs[] = {x1.row(0)};
      float* ys[] = {yr.row(0)};
      cpu::LoraRowsReference()(1, xs, in, pairs[a], out, ys, scratch.data());
    }
    for (int64_t o = 0; o < out; ++o) {
      EXPECT_EQ(y.row(r)[o], y1.row(0)[o]) << r << "," << o;
      EXPECT_EQ(y.row(r)[o], y32.row(r)[o]) << r << "," << o;
      EXPECT_EQ(y.row(r)[o], yr.row(0)[o]) << r << "," << o;
    }
    if (a < 0) {
      for (int64_t o = 0; o < out; ++o) EXPECT_EQ(y.row(r)[o], yv[r * out + o]);
    }
  }
  for (auto& p : pairs) be->FreeAdapterBuffer(const_cast<void*>(p.a_t));
  for (auto& p : f32_pairs) be->FreeAdapterBuffer(const_cast<void*>(p.a_t));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CpuLoraTest, ::testing::Values(LoraDtype::kF32, LoraDtype::kF16, LoraDtype::kBF16),
                         [](const auto& info) { return std::string(LoraDtypeName(info.param)); });

TEST(CpuBackendTest, MatMulMatchesRowDotsForAnyBatch) {
  auto be = CreateCpuBackend({.threads = 2});
  const int64_t rows = 40, cols = 256;
  // F16 weights: exact float products, so the check is tight.
  auto wf = Random(rows * cols, 1, 0.1f);
  std::vector<uint16_t> wh(wf.size());
  for (size_t i = 0; i < wf.size(); ++i) wh[i] = Fp32ToFp16(wf[i]);
  WeightView w{reinterpret_cast<const uint8_t*>(wh.data()), GgmlType::kF16, rows, cols, cols * 2};
  for (int64_t n : {1, 3, 37}) {
    Mat x = *be->AllocateMat(n, cols);
    Mat y = *be->AllocateMat(n, rows);
    auto xv = Random(n * cols, 2);
    Fill(x, xv);
    be->MatMul(w, x, y);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0;
        for (int64_t c = 0; c < cols; ++c) want += double(Fp16ToFp32(wh[r * cols + c])) * xv[t * cols + c];
        EXPECT_NEAR(y.row(t)[r], want, 1e-4) << t << "," << r;
      }
    }
    // A batch row's result does not depend on the batch it is in.
    Mat x1 = *be->AllocateMat(1, cols);
    Mat y1 = *be->AllocateMat(1, rows);
    std::copy(x.row(n - 1), x.row(n - 1) + cols, x1.row(0));
    be->MatMul(w, x1, y1);
    for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(y1.row(0)[r], y.row(n - 1)[r]);
  }
}

TEST(CpuBackendTest, AttentionReadsPagedBlocksInTableOrder) {
  auto be = CreateCpuBackend({.threads = 2});
  const int n_heads = 4, n_kv = 2, hd = 64, block = 4, ctx = 13;
  AttentionShape shape{n_heads, n_kv, hd, 0.125f};
  KvLayer kv_a = *be->AllocateKvLayer(8, block, n_kv * hd);
  KvLayer kv_b = *be->AllocateKvLayer(8, block, n_kv * hd);
  std::vector<int32_t> contiguous = {0, 1, 2, 3};
  std::vector<int32_t> shuffled = {6, 2, 7, 0};
  Mat k = *be->AllocateMat(ctx, n_kv * hd), v = *be->AllocateMat(ctx, n_kv * hd);
  Mat q = *be->AllocateMat(ctx, n_heads * hd);
  Fill(k, Random(ctx * n_kv * hd, 3));
  Fill(v, Random(ctx * n_kv * hd, 4));
  Fill(q, Random(ctx * n_heads * hd, 5));
  std::vector<int32_t> pos(ctx), seq(ctx, 0);
  std::iota(pos.begin(), pos.end(), 0);
  auto run = [&](std::vector<int32_t>& table, KvLayer kv) {
    std::span<const int32_t> tables[1] = {table};
    BatchLayout layout{pos, seq, tables};
    be->StoreKv(k, v, layout, kv);
    Mat out = *be->AllocateMat(ctx, n_heads * hd);
    be->Attention(q, kv, layout, shape, out);
    return out;
  };
  Mat a = run(contiguous, kv_a), b = run(shuffled, kv_b);
  for (int t = 0; t < ctx; ++t)
    for (int c = 0; c < n_heads * hd; ++c) ASSERT_EQ(a.row(t)[c], b.row(t)[c]);
  // Row 0 attends only to itself: its output is V[0] of its KV head (halved).
  for (int h = 0; h < n_heads; ++h) {
    const int g = h / (n_heads / n_kv);
    for (int d = 0; d < hd; ++d) {
      EXPECT_EQ(a.row(0)[h * hd + d], Fp16ToFp32(Fp32ToFp16(v.row(0)[g * hd + d])));
    }
  }
  // A later row against a float reference.
  const int t = ctx - 1, h = 3, g = 1;
  std::vector<double> s(ctx);
  double mx = -1e30;
  for (int j = 0; j < ctx; ++j) {
    double dot = 0;
    for (int d = 0; d < hd; ++d) dot += double(q.row(t)[h * hd + d]) * k.row(j)[g * hd + d];
    s[j] = dot * shape.scale;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (auto& x : s) sum += (x = std::exp(x - mx));
  for (int d = 0; d < hd; ++d) {
    double want = 0;
    for (int j = 0; j < ctx; ++j) want += s[j] / sum * v.row(j)[g * hd + d];
    EXPECT_NEAR(a.row(t)[h * hd + d], want, 5e-3) << d;
  }
}

TEST(CpuBackendTest, RopeRotatesPairsByPosition) {
  auto be = CreateCpuBackend({.threads = 1});
  for (bool neox : {false, true}) {
    Mat x = *be->AllocateMat(2, 8);
    for (int c = 0; c < 8; ++c) x.row(0)[c] = x.row(1)[c] = static_cast<float>(c + 1);
    std::vector<int32_t> pos = {0, 3};
    RopeParams p;
    p.n_rot = 8;
    p.freq_base = 10000.f;
    p.neox = neox;
    be->Rope(x, 1, 8, pos, p);
    for (int c = 0; c < 8; ++c) EXPECT_FLOAT_EQ(x.row(0)[c], c + 1.f);  // position 0: identity
    for (int i = 0; i < 4; ++i) {
      const int i0 = neox ? i : 2 * i, i1 = neox ? i + 4 : 2 * i + 1;
      const double theta = 3.0 * std::pow(10000.0, -2.0 * i / 8);
      const double a = i0 + 1, b = i1 + 1;
      EXPECT_NEAR(x.row(1)[i0], a * std::cos(theta) - b * std::sin(theta), 1e-4);
      EXPECT_NEAR(x.row(1)[i1], a * std::sin(theta) + b * std::cos(theta), 1e-4);
    }
  }
}

TEST(CpuBackendTest, RmsNormAndSwiGlu) {
  auto be = CreateCpuBackend({.threads = 1});
  Mat x = *be->AllocateMat(1, 4), y = *be->AllocateMat(1, 4);
  const float xs[4] = {1, -2, 3, -4};
  const float g[4] = {1, 1, 2, 0.5f};
  for (int i = 0; i < 4; ++i) x.row(0)[i] = xs[i];
  WeightView gw{reinterpret_cast<const uint8_t*>(g), GgmlType::kF32, 1, 4, 16};
  be->RmsNorm(x, gw, 1e-6f, y);
  const double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y.row(0)[i], xs[i] / rms * g[i], 1e-6);
  Mat o = *be->AllocateMat(1, 4);
  be->SwiGlu(x, y, o);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(o.row(0)[i], xs[i] / (1 + std::exp(-xs[i])) * y.row(0)[i], 1e-5);
}

}  // namespace
}  // namespace tessera
