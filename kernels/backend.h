// Backend: the op set that model code is written against.
//
// Model code (worker/model) only ever calls these ops on handles; it never
// dereferences activation or KV memory, so a CUDA backend with device memory
// and streams implements the same interface without touching the model.
// Weights stay in their file encoding (WeightView) and are multiplied in
// place; a backend that needs another layout (device copies, repacking)
// converts them once in PrepareWeight.
//
// Tensor parallelism: a linear layer split column-wise across ranks is a
// WeightView over a row range of the weight (rows = output features); split
// row-wise it is a view over a column range aligned to the block size
// (WeightView::col_offset), followed by an all-reduce of the outputs. Both
// are plain views, so the ops below need no rank awareness.
//
// Thread-safety: a Backend instance is used by one engine thread at a time;
// ops may use internal parallelism.
#ifndef TESSERA_KERNELS_BACKEND_H_
#define TESSERA_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/ggml_types.h"

namespace tessera {

// A dense row-major f32 matrix in backend memory: element (r, c) is at
// data[r * stride + c].
struct Mat {
  float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;
  float* row(int64_t r) const { return data + r * stride; }
};

// A weight matrix [rows = output features][cols = input features] in its
// file encoding. For 1-D tensors (norm weights, biases) rows == 1.
struct WeightView {
  const uint8_t* data = nullptr;
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;   // bytes between consecutive rows
  int64_t col_offset = 0; // first column (tensor-parallel row split); multiple of the block size
  // Act-order checkpoints (GPTQ desc_act) are stored with their columns
  // permuted so that each quantization group is contiguous: stored column j
  // multiplies input element input_perm[j]. nullptr is the identity. Only
  // MatMul honours it (a permuted table cannot be an embedding), and only
  // with col_offset == 0. `cols` entries, each in [0, cols), owned by the
  // weight's checkpoint.
  const int32_t* input_perm = nullptr;
  // Mixed-width layouts (IsMixedWidth(type)) only: the stored columns whose
  // blocks are 8-bit; a multiple of the block size, 0 < wide_cols < cols.
  int64_t wide_cols = 0;
};

struct RopeParams {
  int n_rot = 0;              // rotated dimensions per head (<= head_dim)
  float freq_base = 10000.f;
  float freq_scale = 1.f;     // linear scaling: positions are multiplied by it
  const float* freq_factors = nullptr;  // optional, n_rot/2 divisors (Llama 3 rope_freqs)
  bool neox = false;          // pairs (i, i + n_rot/2) instead of (2i, 2i+1)
};

// Paged KV storage of one layer: blocks of `block_size` token slots, each
// slot holding kv_dim = n_kv_heads * head_dim halves for K and for V.
struct KvLayer {
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
  int block_size = 0;
  int kv_dim = 0;
  int64_t num_blocks = 0;
};

// Where each row of a batch lives: its absolute position and the block table
// of its sequence. A row attends to positions [0, position] of its sequence.
struct BatchLayout {
  std::span<const int32_t> positions;                    // one per row
  std::span<const int32_t> row_sequence;                 // one per row: index into block_tables
  std::span<const std::span<const int32_t>> block_tables;  // one per sequence
};

struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 1.f;
};

// The element type of LoRA weights in backend and host memory (vLLM's
// --lora-dtype). Shrink and expand always accumulate in float32; 16-bit
// storage halves the bytes each adapter row read costs and the memory an
// adapter holds.
enum class LoraDtype : uint8_t { kF32, kF16, kBF16 };
inline std::string_view LoraDtypeName(LoraDtype d) {
  return d == LoraDtype::kF32 ? "float32" : d == LoraDtype::kF16 ? "float16" : "bfloat16";
}
inline size_t LoraDtypeBytes(LoraDtype d) { return d == LoraDtype::kF32 ? 4 : 2; }

// One projection of a LoRA adapter in backend memory: delta(x) = scale *
// B (A x). A is stored transposed, [in][rank], and B transposed, [rank][out],
// so that shrink and expand are both row-wise multiply-adds; elements are of
// `dtype` (float, or IEEE half / bfloat16 bits as uint16_t).
struct LoraPair {
  const void* a_t = nullptr;
  const void* b_t = nullptr;
  int rank = 0;
  float scale = 0;
  LoraDtype dtype = LoraDtype::kF32;
};

// The rows of a batch that use one adapter's pair for a projection.
struct LoraGroup {
  std::span<const int32_t> rows;
  LoraPair pair;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // Whether MatMul accepts weights of `type`. Checked at model load so that an
  // unsupported file fails with a Status, never mid-generation.
  virtual bool SupportsWeightType(GgmlType type) const = 0;
  // Whether Attention takes heads of `head_dim` values; checked at model
  // load like the weight types. InvalidArgument naming the limit if not.
  virtual absl::Status SupportsHeadDim(int head_dim) const { return absl::OkStatus(); }

  // Allocates an f32 matrix (activations, scratch); freed with the backend.
  virtual absl::StatusOr<Mat> AllocateMat(int64_t rows, int64_t cols) = 0;
  // Allocates paged KV storage for one layer.
  virtual absl::StatusOr<KvLayer> AllocateKvLayer(int64_t num_blocks, int block_size, int kv_dim) = 0;
  virtual void CopyToHost(const Mat& src, int64_t row, float* dst) = 0;
  // Returns when every op issued so far has finished (a device backend's
  // stream drained). Collectives on another stream (NCCL) read backend
  // memory only after it; the CPU backend's ops finish before they return.
  virtual void Synchronize() {}
  // Lets the calling thread issue this backend's ops (a CUDA backend makes
  // its device the thread's current one). Tensor-parallel ranks call it from
  // their own threads; a single backend's engine thread need not.
  virtual void BindToCallingThread() {}
  // dst row i = src row rows[i]. REQUIRES: dst does not overlap src.
  virtual void CopyRows(const Mat& src, std::span<const int32_t> rows, Mat dst) = 0;

  // out[i] = table row ids[i], dequantized.
  virtual void GetRows(const WeightView& table, std::span<const int32_t> ids, Mat out) = 0;
  // y = x · wᵀ (+ y if accumulate). REQUIRES: x.cols == w.cols, y.cols == w.rows.
  virtual void MatMul(const WeightView& w, const Mat& x, Mat y, bool accumulate = false) = 0;
  // y[r] += bias (a 1-D F32 weight of y.cols elements).
  virtual void AddBias(const WeightView& bias, Mat y) = 0;
  // y = x / rms(x) * gamma, row-wise.
  virtual void RmsNorm(const Mat& x, const WeightView& gamma, float eps, Mat y) = 0;
  // y += x.
  virtual void Add(const Mat& x, Mat y) = 0;
  // out = silu(gate) * up.
  virtual void SwiGlu(const Mat& gate, const Mat& up, Mat out) = 0;
  // Rotates each head of x (rows of n_heads * head_dim) by its row's position.
  virtual void Rope(Mat x, int n_heads, int head_dim, std::span<const int32_t> positions,
                    const RopeParams& p) = 0;
  // Writes rows of k and v into their sequences' KV slots.
  virtual void StoreKv(const Mat& k, const Mat& v, const BatchLayout& layout, KvLayer kv) = 0;
  // Causal attention of q rows over their sequences' cached K/V.
  virtual void Attention(const Mat& q, const KvLayer& kv, const BatchLayout& layout,
                         const AttentionShape& shape, Mat out) = 0;

  // Adapter memory. Unlike the rest of the interface these three are
  // thread-safe: adapters are uploaded by a loader thread while the engine
  // thread runs steps, so a cold adapter never stalls the batch.
  virtual absl::StatusOr<void*> AllocateAdapterBuffer(int64_t bytes) = 0;
  virtual void FreeAdapterBuffer(void* buffer) = 0;
  virtual void CopyToAdapterBuffer(const void* src, int64_t bytes, void* dst) = 0;
  // Whether LoraApply reads pairs of `dtype`; checked when adapters are set
  // up, never mid-step.
  virtual bool SupportsLoraDtype(LoraDtype dtype) const { return true; }
  // y[r] += scale * B (A x[r]) for every row of every group: per group a
  // shrink to the adapter's rank, then an expand (the SGMV idea of Punica and
  // S-LoRA: grouped by adapter, never merged into the base weights). Each
  // row's result depends on that row alone, so batching never changes bits.
  // REQUIRES: rows are distinct across groups and within [0, x.rows).
  virtual void LoraApply(const Mat& x, std::span<const LoraGroup> groups, Mat y) = 0;
};

struct CpuBackendOptions {
  int threads = 0;  // 0: all hardware threads
};
std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options = {});

}  // namespace tessera

#endif  // TESSERA_KERNELS_BACKEND_H_
