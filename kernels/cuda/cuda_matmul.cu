// Fused dequantize-and-multiply for every supported weight encoding:
// a GEMV for small batches (one warp per output feature, the weight read
// once for up to kMaxGemvRows activation rows) and a dequantize-to-half
// kernel that feeds cuBLAS for larger ones.
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_quant.cuh"

namespace tessera::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

template <GgmlType T, int B>
__global__ void GemvKernel(const uint8_t* w, size_t row_bytes, int64_t w_rows, int64_t chunks, const float* x,
                           int64_t x_stride, int x_rows, float* y, int64_t y_stride, bool accumulate) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= w_rows) return;
  const uint8_t* wr = w + row * row_bytes;
  float sum[B];
#pragma unroll
  for (int b = 0; b < B; ++b) sum[b] = 0.f;
  float v[32];
  for (int64_t c = lane; c < chunks; c += 32) {
    DecodeChunk<T>(wr, c, v);
#pragma unroll
    for (int b = 0; b < B; ++b) {
      if (b >= x_rows) break;
      const float4* xp = reinterpret_cast<const float4*>(x + b * x_stride + c * 32);
      float acc = sum[b];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float4 xv = xp[k];
        acc = fmaf(v[4 * k], xv.x, acc);
        acc = fmaf(v[4 * k + 1], xv.y, acc);
        acc = fmaf(v[4 * k + 2], xv.z, acc);
        acc = fmaf(v[4 * k + 3], xv.w, acc);
      }
      sum[b] = acc;
    }
  }
#pragma unroll
  for (int b = 0; b < B; ++b) {
    if (b >= x_rows) break;
    float s = sum[b];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) {
      float* out = y + b * y_stride + row;
      *out = accumulate ? *out + s : s;
    }
  }
}

template <GgmlType T>
__global__ void DequantHalfKernel(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t chunks, __half* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * chunks) return;
  const int64_t row = i / chunks, c = i % chunks;
  float v[32];
  DecodeChunk<T>(w + row * row_bytes, c, v);
  __half* o = out + row * chunks * 32 + c * 32;
#pragma unroll
  for (int l = 0; l < 32; ++l) o[l] = __float2half_rn(v[l]);
}

template <GgmlType T>
__global__ void GetRowsKernel(const uint8_t* w, size_t row_bytes, const int32_t* ids, int64_t n, int64_t chunks,
                              float* out, int64_t out_stride) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * chunks) return;
  const int64_t k = i / chunks, c = i % chunks;
  float v[32];
  DecodeChunk<T>(w + static_cast<int64_t>(ids[k]) * row_bytes, c, v);
  float* o = out + k * out_stride + c * 32;
#pragma unroll
  for (int l = 0; l < 32; ++l) o[l] = v[l];
}

template <GgmlType T>
void Gemv(cudaStream_t s, const DeviceWeight& w, const Mat& x, Mat y, bool accumulate) {
  const unsigned blocks = static_cast<unsigned>((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const int64_t chunks = w.cols / 32;
  const int n = static_cast<int>(x.rows);
#define TESSERA_GEMV(B) \
  GemvKernel<T, B><<<blocks, 32 * kWarpsPerBlock, 0, s>>>(w.data, w.row_bytes, w.rows, chunks, x.data, x.stride, n, \
                                                          y.data, y.stride, accumulate)
  if (n <= 1) {
    TESSERA_GEMV(1);
  } else if (n <= 2) {
    TESSERA_GEMV(2);
  } else if (n <= 4) {
    TESSERA_GEMV(4);
  } else {
    TESSERA_GEMV(8);
  }
#undef TESSERA_GEMV
}

template <GgmlType T>
void DequantToHalf(cudaStream_t s, const DeviceWeight& w, void* dst) {
  const int64_t chunks = w.cols / 32, items = w.rows * chunks;
  DequantHalfKernel<T><<<static_cast<unsigned>((items + 255) / 256), 256, 0, s>>>(w.data, w.row_bytes, w.rows, chunks,
                                                                                   static_cast<__half*>(dst));
}

template <GgmlType T>
void GetRows(cudaStream_t s, const DeviceWeight& w, const int32_t* ids, int64_t n, Mat out) {
  const int64_t chunks = w.cols / 32, items = n * chunks;
  GetRowsKernel<T><<<static_cast<unsigned>((items + 255) / 256), 256, 0, s>>>(w.data, w.row_bytes, ids, n, chunks,
                                                                               out.data, out.stride);
}

// The one place that lists the formats: a new one is a Chunked
// specialisation plus a case here.
template <typename F>
bool Dispatch(GgmlType type, F&& f) {
  switch (type) {
    case GgmlType::kF32: f.template operator()<GgmlType::kF32>(); return true;
    case GgmlType::kF16: f.template operator()<GgmlType::kF16>(); return true;
    case GgmlType::kBF16: f.template operator()<GgmlType::kBF16>(); return true;
    case GgmlType::kQ4_0: f.template operator()<GgmlType::kQ4_0>(); return true;
    case GgmlType::kQ4_1: f.template operator()<GgmlType::kQ4_1>(); return true;
    case GgmlType::kQ8_0: f.template operator()<GgmlType::kQ8_0>(); return true;
    case GgmlType::kQ4_K: f.template operator()<GgmlType::kQ4_K>(); return true;
    case GgmlType::kQ6_K: f.template operator()<GgmlType::kQ6_K>(); return true;
    case GgmlType::kQ4G32: f.template operator()<GgmlType::kQ4G32>(); return true;
    case GgmlType::kQ4G64: f.template operator()<GgmlType::kQ4G64>(); return true;
    case GgmlType::kQ4G128: f.template operator()<GgmlType::kQ4G128>(); return true;
    case GgmlType::kQ8G32: f.template operator()<GgmlType::kQ8G32>(); return true;
    case GgmlType::kQ8G64: f.template operator()<GgmlType::kQ8G64>(); return true;
    case GgmlType::kQ8G128: f.template operator()<GgmlType::kQ8G128>(); return true;
    default: return false;
  }
}

struct NoOp {
  template <GgmlType T>
  void operator()() const {}
};

}  // namespace

bool MatMulTypeSupported(GgmlType type) { return Dispatch(type, NoOp{}); }

size_t ColumnBytes(GgmlType type, int64_t columns) {
  size_t n = 0;
  Dispatch(type, [&]<GgmlType T>() {
    using C = Chunked<T>;
    // Whole blocks, plus (plain types only, whose block is 32 values) a
    // partial one at the width of a value.
    n = static_cast<size_t>(columns / C::kBlockElems) * C::kBlockBytes +
        static_cast<size_t>(columns % C::kBlockElems) * (C::kBlockBytes / C::kBlockElems);
  });
  return n;
}

void LaunchGemv(cudaStream_t s, const DeviceWeight& w, const Mat& x, Mat y, bool accumulate) {
  Dispatch(w.type, [&]<GgmlType T>() { Gemv<T>(s, w, x, y, accumulate); });
}

void LaunchDequantToHalf(cudaStream_t s, const DeviceWeight& w, void* dst) {
  Dispatch(w.type, [&]<GgmlType T>() { DequantToHalf<T>(s, w, dst); });
}

void LaunchGetRows(cudaStream_t s, const DeviceWeight& w, const int32_t* ids, int64_t n, Mat out) {
  Dispatch(w.type, [&]<GgmlType T>() { GetRows<T>(s, w, ids, n, out); });
}

}  // namespace tessera::cuda
