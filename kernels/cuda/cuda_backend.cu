// CudaBackend: the Backend op set on one CUDA device (see cuda_backend.h).
#include "kernels/backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_kernels.h"

namespace tessera {
namespace {

using cuda::DeviceLayout;
using cuda::DeviceWeight;

// Backend ops return nothing: a failing CUDA call leaves the context
// unusable (errors are sticky), so it ends the process with the reason
// rather than computing garbage.
void Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "tessera cuda backend: %s: %s\n", what, cudaGetErrorString(e));
  std::abort();
}

void Check(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return;
  std::fprintf(stderr, "tessera cuda backend: %s: cuBLAS status %d\n", what, static_cast<int>(e));
  std::abort();
}

// Batches up to this many rows use the GEMV kernels (in slices).
constexpr int64_t kMaxGemvBatch = 64;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}

  absl::Status Init() {
    if (cudaSetDevice(device_) != cudaSuccess) return absl::UnavailableError(absl::StrCat("cannot use CUDA device ", device_));
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, device_);
    name_ = absl::StrCat("cuda:", device_, " (", prop.name, ")");
    if (cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking) != cudaSuccess) {
      return absl::UnavailableError("cannot create a CUDA stream");
    }
    if (cublasCreate(&cublas_) != CUBLAS_STATUS_SUCCESS) return absl::UnavailableError("cannot initialize cuBLAS");
    cublasSetStream(cublas_, stream_);
    cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH);
    return absl::OkStatus();
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    for (void* p : allocations_) cudaFree(p);
    for (auto& [key, w] : weights_) cudaFree(const_cast<uint8_t*>(w.data));
    for (auto& [key, f] : small_tables_) cudaFree(f);
    for (auto& [key, t] : index_tables_) cudaFree(t);
    cudaFree(scratch_perm_);
    cudaFree(staging_);
    cudaFree(scratch_a_);
    cudaFree(scratch_b_);
    {
      std::lock_guard<std::mutex> lock(adapter_mu_);
      for (void* p : adapter_buffers_) cudaFree(p);
    }
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string_view name() const override { return name_; }

  bool SupportsWeightType(GgmlType type) const override { return cuda::MatMulTypeSupported(type); }

  absl::Status SupportsHeadDim(int head_dim) const override {
    if (cuda::AttentionShapeSupported(head_dim)) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("head dimension ", head_dim, " is not supported by the ", name_, " backend (even, at most 256)"));
  }

  absl::StatusOr<Mat> AllocateMat(int64_t rows, int64_t cols) override {
    // Rows padded to 32 floats: the GEMV kernels read activations as float4.
    const int64_t stride = (cols + 31) / 32 * 32;
    void* p = nullptr;
    if (cudaMalloc(&p, static_cast<size_t>(rows * stride) * sizeof(float)) != cudaSuccess) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate a ", rows, "x", cols, " matrix on ", name_));
    }
    cudaMemsetAsync(p, 0, static_cast<size_t>(rows * stride) * sizeof(float), stream_);
    allocations_.push_back(p);
    return Mat{static_cast<float*>(p), rows, cols, stride};
  }

  absl::StatusOr<KvLayer> AllocateKvLayer(int64_t num_blocks, int block_size, int kv_dim) override {
    const size_t halves = static_cast<size_t>(num_blocks) * block_size * kv_dim;
    void *k = nullptr, *v = nullptr;
    if (cudaMalloc(&k, halves * 2) != cudaSuccess || cudaMalloc(&v, halves * 2) != cudaSuccess) {
      cudaFree(k);
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", 4 * halves >> 20, " MiB of KV cache on ", name_));
    }
    allocations_.push_back(k);
    allocations_.push_back(v);
    return KvLayer{static_cast<uint16_t*>(k), static_cast<uint16_t*>(v), block_size, kv_dim, num_blocks};
  }

  void Synchronize() override { Check(cudaStreamSynchronize(stream_), "step"); }
  void BindToCallingThread() override { Check(cudaSetDevice(device_), "set device"); }

  void CopyToHost(const Mat& src, int64_t row, float* dst) override {
    Check(cudaMemcpyAsync(dst, src.row(row), src.cols * sizeof(float), cudaMemcpyDeviceToHost, stream_), "copy to host");
    Check(cudaStreamSynchronize(stream_), "step");
  }

  void CopyRows(const Mat& src, std::span<const int32_t> rows, Mat dst) override {
    if (rows.empty()) return;
    const int32_t* d = Stage(rows);
    cuda::LaunchCopyRows(stream_, src, d, static_cast<int64_t>(rows.size()), dst);
  }

  void GetRows(const WeightView& table, std::span<const int32_t> ids, Mat out) override {
    if (ids.empty()) return;
    if (table.cols % 32 != 0) {
      std::fprintf(stderr, "tessera cuda backend: embedding rows of %lld elements are not a multiple of 32\n",
                   static_cast<long long>(table.cols));
      std::abort();
    }
    const DeviceWeight w = Upload(table);
    cuda::LaunchGetRows(stream_, w, Stage(ids), static_cast<int64_t>(ids.size()), out);
  }

  void MatMul(const WeightView& view, const Mat& in, Mat y, bool accumulate) override {
    const DeviceWeight w = Upload(view);
    Mat x = in;
    if (view.input_perm != nullptr) {
      // Act-order weight: gather the input into stored column order first.
      const int64_t stride = (in.cols + 31) / 32 * 32;
      float* g = static_cast<float*>(
          Scratch(&scratch_perm_, &scratch_perm_bytes_, static_cast<size_t>(in.rows * stride) * sizeof(float)));
      x = Mat{g, in.rows, in.cols, stride};
      cuda::LaunchGatherColumns(stream_, in, IndexTable(view.input_perm, static_cast<int>(view.cols)), x);
    }
    const bool aligned = x.stride % 4 == 0 && reinterpret_cast<uintptr_t>(x.data) % 16 == 0 && w.cols % 32 == 0;
    if (w.type != GgmlType::kF32 && x.rows <= kMaxGemvBatch && aligned) {
      // Slices of kMaxGemvRows rows: the weight is read once per slice,
      // which up to kMaxGemvBatch rows costs less than dequantizing it whole.
      for (int64_t r = 0; r < x.rows; r += cuda::kMaxGemvRows) {
        const int64_t n = std::min<int64_t>(cuda::kMaxGemvRows, x.rows - r);
        cuda::LaunchGemv(stream_, w, Mat{x.row(r), n, x.cols, x.stride}, Mat{y.row(r), n, y.cols, y.stride},
                         accumulate);
      }
      return;
    }
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    // Row-major y[x.rows][w.rows] = x · wᵀ is column-major yᵀ = w · xᵀ:
    // cuBLAS sees w (row-major [rows][cols]) as column-major [cols][rows]
    // and transposes it.
    if (w.type == GgmlType::kF32) {
      Check(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), static_cast<int>(x.rows),
                        static_cast<int>(w.cols), &alpha, reinterpret_cast<const float*>(w.data),
                        static_cast<int>(w.row_bytes / 4), x.data, static_cast<int>(x.stride), &beta, y.data,
                        static_cast<int>(y.stride)),
            "sgemm");
      return;
    }
    const bool bf16 = w.type == GgmlType::kBF16;
    const void* a = w.data;
    int lda = static_cast<int>(w.row_bytes / 2);
    if (w.type != GgmlType::kF16 && !bf16) {
      void* dense = Scratch(&scratch_a_, &scratch_a_bytes_, static_cast<size_t>(w.rows * w.cols) * 2);
      cuda::LaunchDequantToHalf(stream_, w, dense);
      a = dense;
      lda = static_cast<int>(w.cols);
    }
    void* xb = Scratch(&scratch_b_, &scratch_b_bytes_, static_cast<size_t>(x.rows * x.cols) * 2);
    if (bf16) {
      cuda::LaunchToBf16(stream_, x, xb);
    } else {
      cuda::LaunchToHalf(stream_, x, xb);
    }
    const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    Check(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), static_cast<int>(x.rows),
                       static_cast<int>(w.cols), &alpha, a, t, lda, xb, t, static_cast<int>(x.cols), &beta, y.data,
                       CUDA_R_32F, static_cast<int>(y.stride), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "gemm");
  }

  void AddBias(const WeightView& bias, Mat y) override {
    cuda::LaunchAddBias(stream_, reinterpret_cast<const float*>(Upload(bias).data), y);
  }

  void RmsNorm(const Mat& x, const WeightView& gamma, float eps, Mat y) override {
    cuda::LaunchRmsNorm(stream_, x, reinterpret_cast<const float*>(Upload(gamma).data), eps, y);
  }

  void Add(const Mat& x, Mat y) override { cuda::LaunchAdd(stream_, x, y); }

  void SwiGlu(const Mat& gate, const Mat& up, Mat out) override { cuda::LaunchSwiGlu(stream_, gate, up, out); }

  void Rope(Mat x, int n_heads, int head_dim, std::span<const int32_t> positions, const RopeParams& p) override {
    const float* factors = nullptr;
    if (p.freq_factors != nullptr) factors = SmallTable(p.freq_factors, p.n_rot / 2);
    cuda::LaunchRope(stream_, x, n_heads, head_dim, Stage(positions), p, factors);
  }

  void StoreKv(const Mat& k, const Mat& v, const BatchLayout& layout, KvLayer kv) override {
    cuda::LaunchStoreKv(stream_, k, v, StageLayout(layout), kv);
  }

  void Attention(const Mat& q, const KvLayer& kv, const BatchLayout& layout, const AttentionShape& shape,
                 Mat out) override {
    if (!cuda::AttentionShapeSupported(shape.head_dim)) {
      std::fprintf(stderr, "tessera cuda backend: head_dim %d is not supported (even, at most 256)\n", shape.head_dim);
      std::abort();
    }
    cuda::LaunchAttention(stream_, q, kv, StageLayout(layout), shape, out);
  }

  absl::StatusOr<void*> AllocateAdapterBuffer(int64_t bytes) override {
    if (bytes <= 0) return absl::InvalidArgumentError(absl::StrCat("bad adapter buffer size ", bytes));
    cudaSetDevice(device_);  // the loader thread has its own current device
    void* p = nullptr;
    if (cudaMalloc(&p, static_cast<size_t>(bytes)) != cudaSuccess) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes of adapter memory"));
    }
    std::lock_guard<std::mutex> lock(adapter_mu_);
    adapter_buffers_.push_back(p);
    return p;
  }

  void FreeAdapterBuffer(void* buffer) override {
    cudaSetDevice(device_);
    {
      std::lock_guard<std::mutex> lock(adapter_mu_);
      std::erase(adapter_buffers_, buffer);
    }
    cudaFree(buffer);  // waits for work that may still read it
  }

  void CopyToAdapterBuffer(const void* src, int64_t bytes, void* dst) override {
    cudaSetDevice(device_);
    Check(cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice), "adapter upload");
  }

  void LoraApply(const Mat& x, std::span<const LoraGroup> groups, Mat y) override {
    for (const LoraGroup& g : groups) {
      if (g.rows.empty()) continue;
      if (!cuda::LoraRankSupported(g.pair.rank)) {
        std::fprintf(stderr, "tessera cuda backend: LoRA rank %d is not supported (at most 1024)\n", g.pair.rank);
        std::abort();
      }
      cuda::LaunchLora(stream_, x, Stage(g.rows), static_cast<int64_t>(g.rows.size()), g.pair, y);
    }
  }

 private:
  // Weights are copied to the device once, whole rows; the key is the host
  // address and shape (column-split views of a tensor share its copy).
  DeviceWeight Upload(const WeightView& v) {
    const Key key{v.data, v.rows, v.row_bytes};
    auto it = weights_.find(key);
    if (it == weights_.end()) {
      const size_t bytes = static_cast<size_t>(v.rows) * v.row_bytes;
      void* p = nullptr;
      Check(cudaMalloc(&p, bytes), "weight allocation");
      Check(cudaMemcpy(p, v.data, bytes, cudaMemcpyHostToDevice), "weight upload");
      it = weights_.emplace(key, DeviceWeight{static_cast<const uint8_t*>(p), v.type, v.rows, v.cols, v.row_bytes}).first;
    }
    DeviceWeight w = it->second;
    w.cols = v.cols;
    if (v.col_offset != 0) {
      // col_offset is a multiple of the block: whole blocks are skipped.
      w.data += cuda::ColumnBytes(v.type, v.col_offset);
    }
    return w;
  }

  // An int32 table (an act-order permutation) copied to the device once.
  const int32_t* IndexTable(const int32_t* host, int n) {
    auto it = index_tables_.find(host);
    if (it != index_tables_.end()) return it->second;
    void* p = nullptr;
    Check(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(int32_t)), "table allocation");
    Check(cudaMemcpy(p, host, static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyHostToDevice), "table upload");
    index_tables_.emplace(host, static_cast<int32_t*>(p));
    return static_cast<int32_t*>(p);
  }

  const float* SmallTable(const float* host, int n) {
    auto it = small_tables_.find(host);
    if (it != small_tables_.end()) return it->second;
    void* p = nullptr;
    Check(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(float)), "table allocation");
    Check(cudaMemcpy(p, host, static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice), "table upload");
    small_tables_.emplace(host, static_cast<float*>(p));
    return static_cast<float*>(p);
  }

  // Copies host ints to the device for the next kernel. Staging memory is
  // reused once the stream has consumed it: each step's ops are few and
  // small, so the buffer is bump-allocated and reset at every sync point.
  const int32_t* Stage(std::span<const int32_t> v) { return StageRaw(v.data(), v.size()); }

  const int32_t* StageRaw(const int32_t* data, size_t n) {
    const size_t bytes = (n * sizeof(int32_t) + 255) / 256 * 256;
    if (staging_used_ + bytes > staging_bytes_) {
      // Grow: wait for the kernels that read the old buffer.
      Check(cudaStreamSynchronize(stream_), "staging");
      cudaFree(staging_);
      staging_bytes_ = std::max<size_t>(2 * (staging_bytes_ + bytes), 1 << 20);
      Check(cudaMalloc(&staging_, staging_bytes_), "staging allocation");
      staging_used_ = 0;
    }
    int32_t* dst = reinterpret_cast<int32_t*>(static_cast<uint8_t*>(staging_) + staging_used_);
    Check(cudaMemcpyAsync(dst, data, n * sizeof(int32_t), cudaMemcpyHostToDevice, stream_), "staging copy");
    // Pageable source memory: the copy has been taken when this returns.
    staging_used_ += bytes;
    if (staging_used_ > staging_bytes_ / 2) {
      Check(cudaStreamSynchronize(stream_), "staging");
      staging_used_ = 0;
    }
    return dst;
  }

  DeviceLayout StageLayout(const BatchLayout& layout) {
    flat_tables_.clear();
    table_offsets_.clear();
    for (const auto& t : layout.block_tables) {
      table_offsets_.push_back(static_cast<int32_t>(flat_tables_.size()));
      flat_tables_.insert(flat_tables_.end(), t.begin(), t.end());
    }
    if (flat_tables_.empty()) flat_tables_.push_back(0);
    DeviceLayout d;
    d.positions = Stage(layout.positions);
    d.row_sequence = Stage(layout.row_sequence);
    d.tables = StageRaw(flat_tables_.data(), flat_tables_.size());
    d.table_offsets = StageRaw(table_offsets_.data(), table_offsets_.size());
    return d;
  }

  void* Scratch(void** buffer, size_t* have, size_t bytes) {
    if (bytes > *have) {
      Check(cudaStreamSynchronize(stream_), "scratch");
      cudaFree(*buffer);
      Check(cudaMalloc(buffer, bytes), "scratch allocation");
      *have = bytes;
    }
    return *buffer;
  }

  struct Key {
    const uint8_t* data;
    int64_t rows;
    size_t row_bytes;
    bool operator==(const Key& o) const { return data == o.data && rows == o.rows && row_bytes == o.row_bytes; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<const void*>()(k.data) ^ (static_cast<size_t>(k.rows) * 0x9e3779b97f4a7c15ull);
    }
  };

  int device_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::vector<void*> allocations_;
  std::unordered_map<Key, DeviceWeight, KeyHash> weights_;
  std::unordered_map<const float*, float*> small_tables_;
  std::unordered_map<const int32_t*, int32_t*> index_tables_;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0, staging_used_ = 0;
  void *scratch_a_ = nullptr, *scratch_b_ = nullptr, *scratch_perm_ = nullptr;
  size_t scratch_a_bytes_ = 0, scratch_b_bytes_ = 0, scratch_perm_bytes_ = 0;
  std::vector<int32_t> flat_tables_, table_offsets_;
  std::mutex adapter_mu_;
  std::vector<void*> adapter_buffers_;
};

}  // namespace

}  // namespace tessera

// The module's entry points, looked up by kernels/cuda/cuda_loader.cc. The
// module is built with the same toolchain as the binaries that load it, so
// the C++ Backend object crosses the boundary as is.
extern "C" __attribute__((visibility("default"))) int TesseraCudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

extern "C" __attribute__((visibility("default"))) tessera::Backend* TesseraCreateCudaBackend(int device, char* error,
                                                                                              size_t error_size) {
  auto fail = [&](const std::string& m) -> tessera::Backend* {
    std::snprintf(error, error_size, "%s", m.c_str());
    return nullptr;
  };
  const int n = TesseraCudaDeviceCount();
  if (n == 0) return fail("no CUDA device is visible to this process");
  if (device < 0 || device >= n) return fail(absl::StrCat("CUDA device ", device, " does not exist (", n, " visible)"));
  auto b = std::make_unique<tessera::CudaBackend>(device);
  if (absl::Status s = b->Init(); !s.ok()) return fail(std::string(s.message()));
  return b.release();
}
