// The CPU backend: OpenMP threads over rows, SIMD through the kernel registry.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/fp16.h"
#include "kernels/backend.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/ggml_numerics.h"
#include "kernels/cpu/lora_kernels.h"
#include "kernels/cpu/quant_kernels.h"

namespace tessera {
namespace {

// Owns every buffer it hands out; buffers live as long as the backend.
class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& o)
      : threads_(o.threads > 0 ? o.threads : omp_get_max_threads()) {}

  std::string_view name() const override { return "cpu"; }

  bool SupportsWeightType(GgmlType type) const override { return cpu::KernelsFor(type) != nullptr; }

  absl::StatusOr<Mat> AllocateMat(int64_t rows, int64_t cols) override {
    if (rows <= 0 || cols <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad matrix shape ", rows, "x", cols));
    }
    // Rows padded to 64 bytes so each row starts on its own cache line.
    const int64_t stride = (cols + 15) / 16 * 16;
    auto buf = AllocateBytes(static_cast<size_t>(rows * stride) * sizeof(float));
    if (!buf.ok()) return buf.status();
    return Mat{static_cast<float*>(*buf), rows, cols, stride};
  }

  absl::StatusOr<KvLayer> AllocateKvLayer(int64_t num_blocks, int block_size, int kv_dim) override {
    const size_t halves = static_cast<size_t>(num_blocks) * block_size * kv_dim;
    auto k = AllocateBytes(halves * 2);
    if (!k.ok()) return k.status();
    auto v = AllocateBytes(halves * 2);
    if (!v.ok()) return v.status();
    return KvLayer{static_cast<uint16_t*>(*k), static_cast<uint16_t*>(*v), block_size, kv_dim, num_blocks};
  }

  void CopyToHost(const Mat& src, int64_t row, float* dst) override {
    std::memcpy(dst, src.row(row), src.cols * sizeof(float));
  }

  void CopyRows(const Mat& src, std::span<const int32_t> rows, Mat dst) override {
    for (size_t i = 0; i < rows.size(); ++i) {
      std::memcpy(dst.row(static_cast<int64_t>(i)), src.row(rows[i]), sizeof(float) * src.cols);
    }
  }

  void GetRows(const WeightView& table, std::span<const int32_t> ids, Mat out) override {
    const cpu::WeightKernels* k = cpu::KernelsFor(table.type);
    for (size_t i = 0; i < ids.size(); ++i) {
      k->dequant(table.data + table.row_bytes * ids[i], out.row(i), table.cols);
    }
  }

  void MatMul(const WeightView& w, const Mat& x, Mat y, bool accumulate) override;

  void AddBias(const WeightView& bias, Mat y) override {
    const float* b = reinterpret_cast<const float*>(bias.data);
    for (int64_t r = 0; r < y.rows; ++r) {
      float* yr = y.row(r);
      for (int64_t c = 0; c < y.cols; ++c) yr[c] += b[c];
    }
  }

  void RmsNorm(const Mat& x, const WeightView& gamma, float eps, Mat y) override {
    const float* g = reinterpret_cast<const float*>(gamma.data);
#pragma omp parallel for num_threads(threads_) if (x.rows > 4)
    for (int64_t r = 0; r < x.rows; ++r) {
      const float* xr = x.row(r);
      float* yr = y.row(r);
      double ss = 0;
      // Squares in float, summed in double, as ggml does.
      for (int64_t c = 0; c < x.cols; ++c) ss += static_cast<double>(xr[c] * xr[c]);
      const float scale = 1.f / std::sqrt(static_cast<float>(ss / x.cols) + eps);
      for (int64_t c = 0; c < x.cols; ++c) yr[c] = xr[c] * scale * g[c];
    }
  }

  void Add(const Mat& x, Mat y) override {
    for (int64_t r = 0; r < x.rows; ++r) {
      const float* xr = x.row(r);
      float* yr = y.row(r);
      for (int64_t c = 0; c < x.cols; ++c) yr[c] += xr[c];
    }
  }

  void SwiGlu(const Mat& gate, const Mat& up, Mat out) override {
#pragma omp parallel for num_threads(threads_) if (gate.rows > 4)
    for (int64_t r = 0; r < gate.rows; ++r) {
      const float* g = gate.row(r);
      const float* u = up.row(r);
      float* o = out.row(r);
      cpu::BestVectorKernels().silu_mul(g, u, o, gate.cols);
    }
  }

  void Rope(Mat x, int n_heads, int head_dim, std::span<const int32_t> positions,
            const RopeParams& p) override {
    const int half = p.n_rot / 2;
    // theta_i = pos * base^(-2i/n_rot), built by repeated multiplication in
    // float exactly as ggml does, so positions rotate identically.
    const float theta_scale = std::pow(p.freq_base, -2.0f / p.n_rot);
#pragma omp parallel for num_threads(threads_) if (x.rows > 4)
    for (int64_t r = 0; r < x.rows; ++r) {
      std::vector<float> cs(half), sn(half);
      float theta = static_cast<float>(positions[r]);
      for (int i = 0; i < half; ++i) {
        const float ff = p.freq_factors ? p.freq_factors[i] : 1.f;
        const float t = p.freq_scale * (theta / ff);
        cs[i] = std::cos(t);
        sn[i] = std::sin(t);
        theta *= theta_scale;
      }
      for (int h = 0; h < n_heads; ++h) {
        float* v = x.row(r) + static_cast<int64_t>(h) * head_dim;
        for (int i = 0; i < half; ++i) {
          const int i0 = p.neox ? i : 2 * i;
          const int i1 = p.neox ? i + half : 2 * i + 1;
          const float a = v[i0], b = v[i1];
          // Fused as ggml's compiled rotation is (see ggml_numerics.h).
          v[i0] = std::fma(a, cs[i], -(b * sn[i]));
          v[i1] = std::fma(a, sn[i], b * cs[i]);
        }
      }
    }
  }

  void StoreKv(const Mat& k, const Mat& v, const BatchLayout& layout, KvLayer kv) override {
    for (int64_t r = 0; r < k.rows; ++r) {
      const int32_t pos = layout.positions[r];
      const auto& table = layout.block_tables[layout.row_sequence[r]];
      const int64_t slot = static_cast<int64_t>(table[pos / kv.block_size]) * kv.block_size +
                           pos % kv.block_size;
      uint16_t* kd = kv.k + slot * kv.kv_dim;
      uint16_t* vd = kv.v + slot * kv.kv_dim;
      cpu::FloatToHalfRow(k.row(r), kd, kv.kv_dim);
      cpu::FloatToHalfRow(v.row(r), vd, kv.kv_dim);
    }
  }

  void Attention(const Mat& q, const KvLayer& kv, const BatchLayout& layout,
                 const AttentionShape& shape, Mat out) override {
    const int64_t rows = q.rows;
    const int64_t items = rows * shape.n_heads;
#pragma omp parallel num_threads(threads_)
    {
      cpu::AttentionScratch scratch;
#pragma omp for schedule(dynamic, 4)
      for (int64_t it = 0; it < items; ++it) {
        const int64_t r = it / shape.n_heads;
        const int h = static_cast<int>(it % shape.n_heads);
        cpu::AttendOneHead(q.row(r) + static_cast<int64_t>(h) * shape.head_dim, kv,
                           layout.block_tables[layout.row_sequence[r]], layout.positions[r] + 1,
                           h / (shape.n_heads / shape.n_kv_heads), shape,
                           out.row(r) + static_cast<int64_t>(h) * shape.head_dim, scratch);
      }
    }
  }

  absl::StatusOr<void*> AllocateAdapterBuffer(int64_t bytes) override {
    if (bytes <= 0) return absl::InvalidArgumentError(absl::StrCat("bad adapter buffer size ", bytes));
    void* p = std::aligned_alloc(64, (static_cast<size_t>(bytes) + 63) / 64 * 64);
    if (p == nullptr) return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
    return p;
  }
  void FreeAdapterBuffer(void* buffer) override { std::free(buffer); }
  void CopyToAdapterBuffer(const void* src, int64_t bytes, void* dst) override {
    std::memcpy(dst, src, static_cast<size_t>(bytes));
  }

  void LoraApply(const Mat& x, std::span<const LoraGroup> groups, Mat y) override {
    // One work item per (group, up to 4 of its rows): a group's A and B are
    // read once for 4 rows (the grouped, SGMV-style product).
    struct Item {
      int32_t group;
      int32_t first;  // index into the group's rows
      int32_t count;
    };
    std::vector<Item> items;
    int max_rank = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      max_rank = std::max(max_rank, groups[g].pair.rank);
      const int32_t n = static_cast<int32_t>(groups[g].rows.size());
      for (int32_t i = 0; i < n; i += 4) items.push_back({static_cast<int32_t>(g), i, std::min(4, n - i)});
    }
    if (items.empty()) return;
    const cpu::LoraRowsFn lora_rows = cpu::BestLoraRows();
    const size_t scratch_floats = 4 * static_cast<size_t>(max_rank);
#pragma omp parallel num_threads(threads_) if (items.size() > 1)
    {
      std::vector<float> scratch(scratch_floats);
#pragma omp for schedule(dynamic, 1)
      for (size_t it = 0; it < items.size(); ++it) {
        const LoraGroup& g = groups[items[it].group];
        const float* xs[4];
        float* ys[4];
        for (int j = 0; j < items[it].count; ++j) {
          const int32_t r = g.rows[items[it].first + j];
          xs[j] = x.row(r);
          ys[j] = y.row(r);
        }
        lora_rows(items[it].count, xs, x.cols, g.pair, y.cols, ys, scratch.data());
      }
    }
  }

 private:
  absl::StatusOr<void*> AllocateBytes(size_t bytes) {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
    }
    std::memset(p, 0, bytes);
    buffers_.emplace_back(p);
    return p;
  }

  struct FreeDeleter { void operator()(void* p) const { std::free(p); } };

  const int threads_;
  std::vector<std::unique_ptr<void, FreeDeleter>> buffers_;
  std::vector<uint8_t> act_scratch_;
  std::vector<float> scale_scratch_;
};

void CpuBackend::MatMul(const WeightView& w, const Mat& x, Mat y, bool accumulate) {
  const cpu::WeightKernels* k = cpu::KernelsFor(w.type);
  const int64_t cols = w.cols;
  // What the weight kernels take as the row length (mixed-width rows: with their 8-bit columns).
  const int64_t kn = IsMixedWidth(w.type) ? cpu::MixedWidthN(cols, w.wide_cols) : cols;
  const size_t act_row = cpu::ActRowBytes(k->act_type, cols);
  act_scratch_.resize(act_row * x.rows);
  uint8_t* act = act_scratch_.data();
  // Weight bytes of column col_offset within a row (tensor-parallel row split).
  const auto traits = *TraitsOf(w.type);
  const size_t col_byte_offset = static_cast<size_t>(w.col_offset / traits.block_elems) * traits.block_bytes;

  const int64_t n = x.rows;
  // Tile: a block of weight rows stays in L1/L2 while every activation row
  // passes over it; threads split the weight rows.
  constexpr int64_t kRowBlock = 16;
  const int64_t row_blocks = (w.rows + kRowBlock - 1) / kRowBlock;
  // Float copies of the activation scales for the 4-row kernels.
  const size_t scales_stride = static_cast<size_t>(cols / 32) * 2;
  const bool use_x4 = k->vec_dot_x4 != nullptr && n >= 4;
  if (use_x4) scale_scratch_.resize(scales_stride * n);
  float* scales = scale_scratch_.data();
#pragma omp parallel num_threads(threads_)
  {
    // Act-order weights: the input is gathered into stored column order
    // first (one pass over a row of activations, not of weights).
    std::vector<float> gathered(w.input_perm != nullptr ? cols : 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      const float* xr = x.row(r);
      if (w.input_perm != nullptr) {
        for (int64_t j = 0; j < cols; ++j) gathered[j] = xr[w.input_perm[j]];
        xr = gathered.data();
      }
      k->quantize_act(xr, act + act_row * r, cols);
      if (use_x4) cpu::ActScales(k->act_type, act + act_row * r, cols, scales + scales_stride * r);
    }
#pragma omp for schedule(static)
    for (int64_t rb = 0; rb < row_blocks; ++rb) {
      const int64_t r0 = rb * kRowBlock;
      const int64_t r1 = std::min(w.rows, r0 + kRowBlock);
      int64_t t = 0;
      if (use_x4) {
        float out4[4];
        for (; t + 4 <= n; t += 4) {
          const uint8_t* xa = act + act_row * t;
          const float* xs = scales + scales_stride * t;
          int64_t r = r0;
          if (k->vec_dot_4x4 != nullptr) {
            float out16[16];
            for (; r + 4 <= r1; r += 4) {
              k->vec_dot_4x4(kn, w.data + w.row_bytes * r + col_byte_offset, w.row_bytes, xa, act_row, xs,
                             scales_stride, out16);
              for (int h = 0; h < 4; ++h) {
                for (int j = 0; j < 4; ++j) {
                  float* yr = y.row(t + j) + r + h;
                  *yr = accumulate ? *yr + out16[h * 4 + j] : out16[h * 4 + j];
                }
              }
            }
          }
          if (k->vec_dot_2x4 != nullptr) {
            float out8[8];
            for (; r + 2 <= r1; r += 2) {
              k->vec_dot_2x4(kn, w.data + w.row_bytes * r + col_byte_offset, w.row_bytes, xa, act_row, xs,
                             scales_stride, out8);
              for (int h = 0; h < 2; ++h) {
                for (int j = 0; j < 4; ++j) {
                  float* yr = y.row(t + j) + r + h;
                  *yr = accumulate ? *yr + out8[h * 4 + j] : out8[h * 4 + j];
                }
              }
            }
          }
          for (; r < r1; ++r) {
            k->vec_dot_x4(kn, w.data + w.row_bytes * r + col_byte_offset, xa, act_row, xs, scales_stride, out4);
            for (int j = 0; j < 4; ++j) {
              float* yr = y.row(t + j) + r;
              *yr = accumulate ? *yr + out4[j] : out4[j];
            }
          }
        }
      }
      for (; t < n; ++t) {
        const uint8_t* xa = act + act_row * t;
        float* yt = y.row(t);
        for (int64_t r = r0; r < r1; ++r) {
          const float v = k->vec_dot(kn, w.data + w.row_bytes * r + col_byte_offset, xa);
          yt[r] = accumulate ? yt[r] + v : v;
        }
      }
    }
  }
}

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace tessera
