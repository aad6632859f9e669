// The CUDA backend against the CPU backend, op by op, over weight types and
// shapes. Labelled `gpu`: every test skips, saying so, where no CUDA device
// (or no CUDA build) exists.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "common/fp16.h"
#include "common/ggml_types.h"
#include "common/quant_blocks.h"
#include "kernels/backend.h"
#include "tests/kernels/random_values.h"
#include "kernels/cuda/cuda_backend.h"

namespace tessera {
namespace {

using testing::Random;

class CudaVsCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaBackendBuilt()) GTEST_SKIP() << "skipped: this build has no CUDA backend";
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "skipped: no CUDA device on this machine";
    auto g = CreateCudaBackend();
    ASSERT_TRUE(g.ok()) << g.status();
    gpu_ = std::move(*g);
    cpu_ = CreateCpuBackend();
  }

  // A matrix on `b` holding `v` ([rows][cols]), loaded through GetRows of an
  // F32 table (the interface has no other way in, as model code needs none).
  Mat Load(Backend& b, const std::vector<float>& v, int64_t rows, int64_t cols) {
    tables_.push_back(v);
    WeightView w{reinterpret_cast<const uint8_t*>(tables_.back().data()), GgmlType::kF32, rows, cols,
                 static_cast<size_t>(cols) * 4, 0};
    Mat m = *b.AllocateMat(rows, cols);
    std::vector<int32_t> ids(rows);
    std::iota(ids.begin(), ids.end(), 0);
    b.GetRows(w, ids, m);
    return m;
  }

  std::vector<float> Read(Backend& b, const Mat& m) {
    std::vector<float> out(m.rows * m.cols);
    for (int64_t r = 0; r < m.rows; ++r) b.CopyToHost(m, r, out.data() + r * m.cols);
    return out;
  }

  static void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float rel, const char* what) {
    ASSERT_EQ(got.size(), want.size());
    float scale = 0;
    for (float w : want) scale = std::max(scale, std::fabs(w));
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], rel * scale + 1e-4f) << what << " at " << i;
    }
  }

  std::unique_ptr<Backend> gpu_, cpu_;
  std::vector<std::vector<float>> tables_;
};

// Random but well-formed encodings: scale fields are modest halves, quant
// bits are random.
std::vector<uint8_t> RandomWeights(GgmlType t, int64_t rows, int64_t cols, uint32_t seed, size_t* row_bytes) {
  const auto traits = TraitsOf(t);
  *row_bytes = static_cast<size_t>(cols / traits->block_elems) * traits->block_bytes;
  std::vector<uint8_t> w(*row_bytes * rows);
  std::mt19937 rng(seed);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  auto half = [&](uint8_t* p) {
    const uint16_t h = Fp32ToFp16(scale(rng));
    std::memcpy(p, &h, 2);
  };
  const size_t n_blocks = w.size() / traits->block_bytes;
  for (size_t i = 0; i < n_blocks; ++i) {
    uint8_t* b = w.data() + i * traits->block_bytes;
    switch (t) {
      case GgmlType::kF32:
      case GgmlType::kF16:
      case GgmlType::kBF16: break;
      case GgmlType::kQ4_0:
      case GgmlType::kQ8_0: half(b); break;
      case GgmlType::kQ4_1: half(b); half(b + 2); break;
      case GgmlType::kQ4_K: half(b); half(b + 2); break;  // d, dmin
      case GgmlType::kQ6_K: half(b + offsetof(BlockQ6_K, d)); break;
      case GgmlType::kQ4G32: case GgmlType::kQ4G64: case GgmlType::kQ4G128:
      case GgmlType::kQ8G32: case GgmlType::kQ8G64: case GgmlType::kQ8G128: {
        const float dm[2] = {scale(rng), -8 * scale(rng)};  // f32 scale and offset
        std::memcpy(b, dm, sizeof(dm));
        break;
      }
      default: break;
    }
  }
  if (t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16) {
    const auto f = Random(rows * cols, seed, 0.05f);
    for (size_t i = 0; i < f.size(); ++i) {
      if (t == GgmlType::kF32) {
        std::memcpy(w.data() + 4 * i, &f[i], 4);
      } else {
        const uint16_t h = t == GgmlType::kF16 ? Fp32ToFp16(f[i]) : Fp32ToBf16(f[i]);
        std::memcpy(w.data() + 2 * i, &h, 2);
      }
    }
  }
  return w;
}

TEST_F(CudaVsCpu, MatMulOverTypesAndBatches) {
  const GgmlType types[] = {GgmlType::kF32,   GgmlType::kF16,   GgmlType::kBF16,   GgmlType::kQ4_0,
                            GgmlType::kQ4_1,  GgmlType::kQ8_0,  GgmlType::kQ4_K,   GgmlType::kQ6_K,
                            GgmlType::kQ4G32, GgmlType::kQ4G64, GgmlType::kQ4G128, GgmlType::kQ8G32,
                            GgmlType::kQ8G64, GgmlType::kQ8G128};
  for (GgmlType t : types) {
    ASSERT_TRUE(gpu_->SupportsWeightType(t)) << TypeName(t);
    for (int64_t n : {1, 3, 8, 9, 33}) {
      const int64_t rows = 96, cols = 512;
      size_t row_bytes = 0;
      const auto bytes = RandomWeights(t, rows, cols, 7 + static_cast<uint32_t>(n), &row_bytes);
      const WeightView w{bytes.data(), t, rows, cols, row_bytes, 0};
      const auto xv = Random(n * cols, 3);
      for (bool accumulate : {false, true}) {
        const auto yv = Random(n * rows, 4);
        Mat xg = Load(*gpu_, xv, n, cols), xc = Load(*cpu_, xv, n, cols);
        Mat yg = Load(*gpu_, yv, n, rows), yc = Load(*cpu_, yv, n, rows);
        gpu_->MatMul(w, xg, yg, accumulate);
        cpu_->MatMul(w, xc, yc, accumulate);
        // The CPU path quantizes activations to 8 bits (llama.cpp's
        // numerics); the GPU multiplies them in f32 or f16.
        ExpectClose(Read(*gpu_, yg), Read(*cpu_, yc), 0.02f, std::string(TypeName(t)).c_str());
      }
    }
  }
}

// Act-order weights: the input is gathered by the weight's permutation on
// both backends before the same block kernels run.
TEST_F(CudaVsCpu, PermutedInputWeightsMatchTheCpu) {
  for (GgmlType t : {GgmlType::kQ4G128, GgmlType::kQ8G32}) {
    const int64_t rows = 64, cols = 512;
    size_t row_bytes = 0;
    const auto bytes = RandomWeights(t, rows, cols, 21, &row_bytes);
    std::vector<int32_t> perm(cols);
    for (int64_t j = 0; j < cols; ++j) perm[j] = static_cast<int32_t>((j * 37) % cols);
    WeightView w{bytes.data(), t, rows, cols, row_bytes, 0};
    w.input_perm = perm.data();
    for (int64_t n : {1, 9, 70}) {
      const auto xv = Random(n * cols, 6);
      Mat xg = Load(*gpu_, xv, n, cols), xc = Load(*cpu_, xv, n, cols);
      Mat yg = *gpu_->AllocateMat(n, rows), yc = *cpu_->AllocateMat(n, rows);
      gpu_->MatMul(w, xg, yg);
      cpu_->MatMul(w, xc, yc);
      ExpectClose(Read(*gpu_, yg), Read(*cpu_, yc), 0.02f, std::string(TypeName(t)).c_str());
    }
  }
}

TEST_F(CudaVsCpu, ColumnSplitViewsMatchTheCpu) {
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_K}) {
    const int64_t rows = 64, cols = 1024, half = 512;
    size_t row_bytes = 0;
    const auto bytes = RandomWeights(t, rows, cols, 11, &row_bytes);
    const WeightView w{bytes.data(), t, rows, half, row_bytes, half};
    const auto xv = Random(2 * half, 5);
    Mat xg = Load(*gpu_, xv, 2, half), xc = Load(*cpu_, xv, 2, half);
    Mat yg = *gpu_->AllocateMat(2, rows), yc = *cpu_->AllocateMat(2, rows);
    gpu_->MatMul(w, xg, yg);
    cpu_->MatMul(w, xc, yc);
    ExpectClose(Read(*gpu_, yg), Read(*cpu_, yc), 0.02f, "column split");
  }
}

TEST_F(CudaVsCpu, GetRowsDequantizesEveryType) {
  for (GgmlType t : {GgmlType::kF16, GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_K,
                     GgmlType::kQ6_K, GgmlType::kQ4G64, GgmlType::kQ8G128}) {
    size_t row_bytes = 0;
    const auto bytes = RandomWeights(t, 40, 256, 13, &row_bytes);
    const WeightView w{bytes.data(), t, 40, 256, row_bytes, 0};
    const std::vector<int32_t> ids = {3, 0, 39, 3, 17};
    Mat g = *gpu_->AllocateMat(5, 256), c = *cpu_->AllocateMat(5, 256);
    gpu_->GetRows(w, ids, g);
    cpu_->GetRows(w, ids, c);
    ExpectClose(Read(*gpu_, g), Read(*cpu_, c), 1e-6f, std::string(TypeName(t)).c_str());
  }
}

TEST_F(CudaVsCpu, NormsActivationsRopeAndRowCopies) {
  const int64_t n = 5, d = 384;
  const auto xv = Random(n * d, 1), uv = Random(n * d, 2), gv = Random(d, 3);
  tables_.push_back(gv);
  const WeightView gamma{reinterpret_cast<const uint8_t*>(tables_.back().data()), GgmlType::kF32, 1, d,
                         static_cast<size_t>(d) * 4, 0};
  Mat xg = Load(*gpu_, xv, n, d), xc = Load(*cpu_, xv, n, d);
  Mat ug = Load(*gpu_, uv, n, d), uc = Load(*cpu_, uv, n, d);
  Mat yg = *gpu_->AllocateMat(n, d), yc = *cpu_->AllocateMat(n, d);
  gpu_->RmsNorm(xg, gamma, 1e-5f, yg);
  cpu_->RmsNorm(xc, gamma, 1e-5f, yc);
  ExpectClose(Read(*gpu_, yg), Read(*cpu_, yc), 1e-5f, "rmsnorm");
  gpu_->SwiGlu(xg, ug, yg);
  cpu_->SwiGlu(xc, uc, yc);
  ExpectClose(Read(*gpu_, yg), Read(*cpu_, yc), 1e-5f, "swiglu");
  gpu_->Add(xg, ug);
  cpu_->Add(xc, uc);
  ExpectClose(Read(*gpu_, ug), Read(*cpu_, uc), 1e-6f, "add");
  gpu_->AddBias(gamma, ug);
  cpu_->AddBias(gamma, uc);
  ExpectClose(Read(*gpu_, ug), Read(*cpu_, uc), 1e-6f, "bias");
  const std::vector<int32_t> positions = {0, 1, 7, 300, 4095};
  std::vector<float> factors(32);
  for (int i = 0; i < 32; ++i) factors[i] = 1.f + i * 0.25f;
  for (bool neox : {false, true}) {
    for (const float* ff : {static_cast<const float*>(nullptr), static_cast<const float*>(factors.data())}) {
      RopeParams p{.n_rot = 64, .freq_base = 500000.f, .freq_scale = 1.f, .freq_factors = ff, .neox = neox};
      Mat rg = Load(*gpu_, xv, n, d), rc = Load(*cpu_, xv, n, d);
      gpu_->Rope(rg, 6, 64, positions, p);
      cpu_->Rope(rc, 6, 64, positions, p);
      ExpectClose(Read(*gpu_, rg), Read(*cpu_, rc), 2e-5f, "rope");
    }
  }
  const std::vector<int32_t> pick = {4, 0, 2};
  Mat sg = *gpu_->AllocateMat(3, d), sc = *cpu_->AllocateMat(3, d);
  gpu_->CopyRows(xg, pick, sg);
  cpu_->CopyRows(xc, pick, sc);
  ExpectClose(Read(*gpu_, sg), Read(*cpu_, sc), 0.f, "copy rows");
}

TEST_F(CudaVsCpu, PagedAttentionOverSequencesPrefillAndDecode) {
  const int n_heads = 8, n_kv = 2, hd = 64, block = 16, kv_dim = n_kv * hd;
  const int64_t num_blocks = 64;
  // Two sequences: one prefilled 40 tokens at once, one decoding its token
  // 150; blocks deliberately out of order.
  std::vector<int32_t> table_a = {9, 3, 60}, table_b(10);
  for (int i = 0; i < 10; ++i) table_b[i] = 50 - 4 * i;
  KvLayer kg = *gpu_->AllocateKvLayer(num_blocks, block, kv_dim), kc = *cpu_->AllocateKvLayer(num_blocks, block, kv_dim);
  // Fill sequence B's first 150 positions, then run the batch.
  std::vector<int32_t> pos_b(150), seq_b(150, 0);
  std::iota(pos_b.begin(), pos_b.end(), 0);
  std::vector<std::span<const int32_t>> only_b = {table_b};
  const auto kb = Random(150 * kv_dim, 21), vb = Random(150 * kv_dim, 22);
  {
    Mat k1 = Load(*gpu_, kb, 150, kv_dim), v1 = Load(*gpu_, vb, 150, kv_dim);
    Mat k2 = Load(*cpu_, kb, 150, kv_dim), v2 = Load(*cpu_, vb, 150, kv_dim);
    gpu_->StoreKv(k1, v1, BatchLayout{pos_b, seq_b, only_b}, kg);
    cpu_->StoreKv(k2, v2, BatchLayout{pos_b, seq_b, only_b}, kc);
  }
  std::vector<int32_t> positions, rows_seq;
  for (int i = 0; i < 40; ++i) positions.push_back(i), rows_seq.push_back(0);
  positions.push_back(150);
  rows_seq.push_back(1);
  const int64_t n = static_cast<int64_t>(positions.size());
  std::vector<std::span<const int32_t>> tables = {table_a, table_b};
  const BatchLayout layout{positions, rows_seq, tables};
  const auto kv = Random(n * kv_dim, 23), vv = Random(n * kv_dim, 24), qv = Random(n * n_heads * hd, 25);
  Mat k1 = Load(*gpu_, kv, n, kv_dim), v1 = Load(*gpu_, vv, n, kv_dim), q1 = Load(*gpu_, qv, n, n_heads * hd);
  Mat k2 = Load(*cpu_, kv, n, kv_dim), v2 = Load(*cpu_, vv, n, kv_dim), q2 = Load(*cpu_, qv, n, n_heads * hd);
  gpu_->StoreKv(k1, v1, layout, kg);
  cpu_->StoreKv(k2, v2, layout, kc);
  const AttentionShape shape{n_heads, n_kv, hd, 1.f / 8.f};
  Mat og = *gpu_->AllocateMat(n, n_heads * hd), oc = *cpu_->AllocateMat(n, n_heads * hd);
  gpu_->Attention(q1, kg, layout, shape, og);
  cpu_->Attention(q2, kc, layout, shape, oc);
  // The CPU rounds queries and softmax weights to half as llama.cpp does.
  ExpectClose(Read(*gpu_, og), Read(*cpu_, oc), 5e-3f, "attention");
}

TEST_F(CudaVsCpu, LoraGroupsMatchTheCpu) {
  const int64_t n = 6, in = 256, out = 192;
  const auto xv = Random(n * in, 1), yv = Random(n * out, 2);
  Mat xg = Load(*gpu_, xv, n, in), xc = Load(*cpu_, xv, n, in);
  Mat yg = Load(*gpu_, yv, n, out), yc = Load(*cpu_, yv, n, out);
  std::vector<LoraGroup> gg, gc;
  const std::vector<std::vector<int32_t>> rows = {{0, 4}, {1, 2, 5}};
  for (int a = 0; a < 2; ++a) {
    const int rank = a == 0 ? 8 : 16;
    const auto at = Random(in * rank, 30 + a), bt = Random(rank * out, 40 + a);
    const int64_t ab = in * rank * 4, bb = rank * out * 4;
    void* ga = *gpu_->AllocateAdapterBuffer(ab);
    void* gb = *gpu_->AllocateAdapterBuffer(bb);
    void* ca = *cpu_->AllocateAdapterBuffer(ab);
    void* cb = *cpu_->AllocateAdapterBuffer(bb);
    gpu_->CopyToAdapterBuffer(at.data(), ab, ga);
    gpu_->CopyToAdapterBuffer(bt.data(), bb, gb);
    cpu_->CopyToAdapterBuffer(at.data(), ab, ca);
    cpu_->CopyToAdapterBuffer(bt.data(), bb, cb);
    gg.push_back({rows[a], LoraPair{ga, gb, rank, 0.5f}});
    gc.push_back({rows[a], LoraPair{ca, cb, rank, 0.5f}});
  }
  gpu_->LoraApply(xg, gg, yg);
  cpu_->LoraApply(xc, gc, yc);
  ExpectClose(Read(*gpu_, yg), Read(*cpu_, yc), 1e-4f, "lora");
}

}  // namespace
}  // namespace tessera
