// Launch wrappers of the CUDA backend's kernels (cuda_kernels.cu,
// cuda_matmul.cu). All pointers are device pointers; every launch goes to
// stream `s` and returns at once.
#ifndef TESSERA_KERNELS_CUDA_CUDA_KERNELS_H_
#define TESSERA_KERNELS_CUDA_CUDA_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "common/ggml_types.h"
#include "kernels/backend.h"

namespace tessera::cuda {

// A BatchLayout staged in device memory: block tables concatenated, with
// each sequence's offset into them.
struct DeviceLayout {
  const int32_t* positions = nullptr;
  const int32_t* row_sequence = nullptr;
  const int32_t* tables = nullptr;
  const int32_t* table_offsets = nullptr;
};

bool AttentionShapeSupported(int head_dim);
bool LoraRankSupported(int rank);

void LaunchRmsNorm(cudaStream_t s, const Mat& x, const float* gamma, float eps, Mat y);
void LaunchAdd(cudaStream_t s, const Mat& x, Mat y);
void LaunchAddBias(cudaStream_t s, const float* bias, Mat y);
void LaunchSwiGlu(cudaStream_t s, const Mat& gate, const Mat& up, Mat out);
void LaunchCopyRows(cudaStream_t s, const Mat& src, const int32_t* rows, int64_t n, Mat dst);
// dst[r][j] = src[r][perm[j]] for j < dst.cols (act-order weights' inputs).
void LaunchGatherColumns(cudaStream_t s, const Mat& src, const int32_t* perm, Mat dst);
void LaunchRope(cudaStream_t s, Mat x, int n_heads, int head_dim, const int32_t* positions, const RopeParams& p,
                const float* freq_factors);
void LaunchStoreKv(cudaStream_t s, const Mat& k, const Mat& v, const DeviceLayout& layout, const KvLayer& kv);
void LaunchAttention(cudaStream_t s, const Mat& q, const KvLayer& kv, const DeviceLayout& layout,
                     const AttentionShape& shape, Mat out);
void LaunchLora(cudaStream_t s, const Mat& x, const int32_t* rows, int64_t n, const LoraPair& pair, Mat y);
// x (f32 rows) -> dense [x.rows][x.cols] half / bfloat16 at dst.
void LaunchToHalf(cudaStream_t s, const Mat& x, void* dst);
void LaunchToBf16(cudaStream_t s, const Mat& x, void* dst);

// Weight formats (cuda_matmul.cu). `w` points at the view's first row and
// first column (col_offset applied), rows row_bytes apart.
struct DeviceWeight {
  const uint8_t* data = nullptr;
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
};
bool MatMulTypeSupported(GgmlType type);
// Bytes the first `columns` elements of a row take. REQUIRES: for block
// formats, `columns` is a multiple of the block.
size_t ColumnBytes(GgmlType type, int64_t columns);
// Largest x.rows the fused GEMV kernels take; larger batches dequantize.
inline constexpr int kMaxGemvRows = 8;
// y (+)= x · wᵀ for x.rows <= kMaxGemvRows.
void LaunchGemv(cudaStream_t s, const DeviceWeight& w, const Mat& x, Mat y, bool accumulate);
// Dequantizes rows [0, w.rows) of w into dense half precision at dst
// ([w.rows][w.cols]).
void LaunchDequantToHalf(cudaStream_t s, const DeviceWeight& w, void* dst);
// out row i = w row ids[i], dequantized to f32.
void LaunchGetRows(cudaStream_t s, const DeviceWeight& w, const int32_t* ids, int64_t n, Mat out);

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_CUDA_KERNELS_H_
