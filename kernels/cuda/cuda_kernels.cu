// CUDA kernels of the backend ops other than the weight formats' matmul:
// norms, rotary embedding, SwiGLU, KV stores, paged attention and LoRA.
// Launch wrappers are declared in cuda_kernels.h.
#include <cuda_fp16.h>

#include <cfloat>
#include <cmath>

#include "kernels/cuda/cuda_kernels.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) over the block; every thread gets the result. `scratch` holds
// one float per warp.
template <bool kMax>
__device__ float BlockReduce(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = kMax ? WarpMax(v) : WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = kMax ? -INFINITY : 0.f;
  for (int w = 0; w < warps; ++w) r = kMax ? fmaxf(r, scratch[w]) : r + scratch[w];
  return r;
}

__global__ void RmsNormKernel(const float* x, int64_t x_stride, const float* gamma, float eps, int64_t cols, float* y,
                              int64_t y_stride) {
  __shared__ float scratch[32];
  const float* xr = x + blockIdx.x * x_stride;
  float* yr = y + blockIdx.x * y_stride;
  float ss = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) ss += xr[c] * xr[c];
  ss = BlockReduce<false>(ss, scratch);
  const float scale = rsqrtf(ss / cols + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = xr[c] * scale * gamma[c];
}

__global__ void AddKernel(const float* x, int64_t x_stride, int64_t cols, float* y, int64_t y_stride) {
  const float* xr = x + blockIdx.x * x_stride;
  float* yr = y + blockIdx.x * y_stride;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] += xr[c];
}

__global__ void AddBiasKernel(const float* b, int64_t cols, float* y, int64_t y_stride) {
  float* yr = y + blockIdx.x * y_stride;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] += b[c];
}

__global__ void SwiGluKernel(const float* g, int64_t g_stride, const float* u, int64_t u_stride, int64_t cols,
                             float* o, int64_t o_stride) {
  const float* gr = g + blockIdx.x * g_stride;
  const float* ur = u + blockIdx.x * u_stride;
  float* orow = o + blockIdx.x * o_stride;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float a = gr[c];
    orow[c] = a / (1.f + expf(-a)) * ur[c];
  }
}

__global__ void CopyRowsKernel(const float* src, int64_t src_stride, const int32_t* rows, int64_t cols, float* dst,
                               int64_t dst_stride) {
  const float* s = src + static_cast<int64_t>(rows[blockIdx.x]) * src_stride;
  float* d = dst + blockIdx.x * dst_stride;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) d[c] = s[c];
}

// One block per row; threads over (head, pair). Angles are built as the CPU
// backend builds them: theta_i = pos * base^(-2i/n_rot) by repeated float
// multiplication.
__global__ void RopeKernel(float* x, int64_t stride, int n_heads, int head_dim, const int32_t* positions, int n_rot,
                           float theta_scale, float freq_scale, const float* freq_factors, bool neox) {
  const int half = n_rot / 2;
  float* row = x + blockIdx.x * stride;
  const float pos = static_cast<float>(positions[blockIdx.x]);
  for (int item = threadIdx.x; item < n_heads * half; item += blockDim.x) {
    const int h = item / half, i = item % half;
    float theta = pos;
    for (int k = 0; k < i; ++k) theta *= theta_scale;
    const float ff = freq_factors != nullptr ? freq_factors[i] : 1.f;
    const float t = freq_scale * (theta / ff);
    float sn, cs;
    sincosf(t, &sn, &cs);
    float* v = row + static_cast<int64_t>(h) * head_dim;
    const int i0 = neox ? i : 2 * i;
    const int i1 = neox ? i + half : 2 * i + 1;
    const float a = v[i0], b = v[i1];
    v[i0] = fmaf(a, cs, -(b * sn));
    v[i1] = fmaf(a, sn, b * cs);
  }
}

__device__ __forceinline__ int64_t SlotOf(const int32_t* table, int block_size, int64_t t) {
  return static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size;
}

__global__ void StoreKvKernel(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                              const int32_t* positions, const int32_t* row_sequence, const int32_t* tables,
                              const int32_t* table_offsets, int block_size, int kv_dim, __half* kc, __half* vc) {
  const int r = blockIdx.x;
  const int64_t slot = SlotOf(tables + table_offsets[row_sequence[r]], block_size, positions[r]);
  for (int c = threadIdx.x; c < kv_dim; c += blockDim.x) {
    kc[slot * kv_dim + c] = __float2half_rn(k[r * k_stride + c]);
    vc[slot * kv_dim + c] = __float2half_rn(v[r * v_stride + c]);
  }
}

// Paged attention, one block per (head, row): the row's context is read in
// tiles of blockDim.x positions, one score per thread, with a running
// (online) softmax; each thread accumulates head_dim / blockDim.x output
// dimensions. Prefill rows and decode rows are handled alike (a row attends
// to [0, its position]).
constexpr int kAttnThreads = 128;
constexpr int kMaxHeadDim = 256;

__global__ void AttentionKernel(const float* q, int64_t q_stride, const __half* kc, const __half* vc, int block_size,
                                int kv_dim, const int32_t* positions, const int32_t* row_sequence,
                                const int32_t* tables, const int32_t* table_offsets, int n_heads, int n_kv_heads,
                                int head_dim, float scale, float* out, int64_t out_stride) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float p_s[kAttnThreads];
  __shared__ int64_t slot_s[kAttnThreads];
  __shared__ float scratch[32];
  const int h = blockIdx.x, r = blockIdx.y;
  const int kv_head = h / (n_heads / n_kv_heads);
  const int64_t n_ctx = static_cast<int64_t>(positions[r]) + 1;
  const int32_t* table = tables + table_offsets[row_sequence[r]];
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) q_s[d] = q[r * q_stride + h * head_dim + d];
  __syncthreads();
  constexpr int kPerThread = kMaxHeadDim / kAttnThreads;
  float acc[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) acc[j] = 0.f;
  float m = -INFINITY, l = 0.f;
  const int64_t head_off = static_cast<int64_t>(kv_head) * head_dim;
  for (int64_t t0 = 0; t0 < n_ctx; t0 += blockDim.x) {
    const int64_t t = t0 + threadIdx.x;
    float s = -INFINITY;
    if (t < n_ctx) {
      const int64_t slot = SlotOf(table, block_size, t);
      slot_s[threadIdx.x] = slot;
      const __half2* kp = reinterpret_cast<const __half2*>(kc + slot * kv_dim + head_off);
      float dot = 0.f;
      for (int d = 0; d < head_dim / 2; ++d) {
        const float2 kf = __half22float2(kp[d]);
        dot = fmaf(kf.x, q_s[2 * d], dot);
        dot = fmaf(kf.y, q_s[2 * d + 1], dot);
      }
      s = dot * scale;
    }
    const float tile_max = BlockReduce<true>(s, scratch);
    const float new_m = fmaxf(m, tile_max);
    const float p = t < n_ctx ? __expf(s - new_m) : 0.f;
    p_s[threadIdx.x] = p;
    const float tile_sum = BlockReduce<false>(p, scratch);  // also orders p_s and slot_s writes
    const float correction = __expf(m - new_m);
    l = l * correction + tile_sum;
    m = new_m;
    const int64_t tile = min(static_cast<int64_t>(blockDim.x), n_ctx - t0);
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int d = threadIdx.x + j * kAttnThreads;
      if (d >= head_dim) break;
      float a = acc[j] * correction;
      for (int64_t k = 0; k < tile; ++k) a = fmaf(p_s[k], __half2float(vc[slot_s[k] * kv_dim + head_off + d]), a);
      acc[j] = a;
    }
    __syncthreads();  // p_s and slot_s are rewritten by the next tile
  }
  const float inv = 1.f / l;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int d = threadIdx.x + j * kAttnThreads;
    if (d < head_dim) out[r * out_stride + h * head_dim + d] = acc[j] * inv;
  }
}

// One block per row of a LoRA group: shrink to the rank into shared memory,
// then expand and add. A is [in][rank] and B [rank][out], so both phases read
// consecutive floats across threads.
constexpr int kMaxRank = 1024;

template <typename T>
__device__ __forceinline__ float LoraElement(const T* p, int64_t i);
template <>
__device__ __forceinline__ float LoraElement<float>(const float* p, int64_t i) { return p[i]; }
template <>
__device__ __forceinline__ float LoraElement<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <>
__device__ __forceinline__ float LoraElement<uint16_t>(const uint16_t* p, int64_t i) {  // bfloat16 bits
  return __uint_as_float(static_cast<uint32_t>(p[i]) << 16);
}

// One block per row: the shrink into shared memory, then the expand. Weights
// of any LoraDtype; float32 accumulation.
template <typename T>
__global__ void LoraKernel(const float* x, int64_t x_stride, const int32_t* rows, const T* a_t, const T* b_t,
                           int rank, float scale, int64_t in_dim, int64_t out_dim, float* y, int64_t y_stride) {
  __shared__ float t_s[kMaxRank];
  const int64_t r = rows[blockIdx.x];
  const float* xr = x + r * x_stride;
  for (int k = threadIdx.x; k < rank; k += blockDim.x) {
    float sum = 0.f;
    for (int64_t i = 0; i < in_dim; ++i) sum = fmaf(xr[i], LoraElement(a_t, i * rank + k), sum);
    t_s[k] = sum;
  }
  __syncthreads();
  float* yr = y + r * y_stride;
  for (int64_t j = threadIdx.x; j < out_dim; j += blockDim.x) {
    float sum = 0.f;
    for (int k = 0; k < rank; ++k) sum = fmaf(t_s[k], LoraElement(b_t, static_cast<int64_t>(k) * out_dim + j), sum);
    yr[j] += scale * sum;
  }
}

__global__ void FloatToHalfKernel(const float* x, int64_t x_stride, int64_t cols, __half* y) {
  const float* xr = x + blockIdx.x * x_stride;
  __half* yr = y + blockIdx.x * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = __float2half_rn(xr[c]);
}

__global__ void FloatToBf16Kernel(const float* x, int64_t x_stride, int64_t cols, uint16_t* y) {
  const float* xr = x + blockIdx.x * x_stride;
  uint16_t* yr = y + blockIdx.x * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const uint32_t bits = __float_as_uint(xr[c]);
    yr[c] = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);  // round to nearest even
  }
}

}  // namespace

bool AttentionShapeSupported(int head_dim) { return head_dim % 2 == 0 && head_dim <= kMaxHeadDim; }
bool LoraRankSupported(int rank) { return rank >= 1 && rank <= kMaxRank; }

void LaunchRmsNorm(cudaStream_t s, const Mat& x, const float* gamma, float eps, Mat y) {
  RmsNormKernel<<<x.rows, kThreads, 0, s>>>(x.data, x.stride, gamma, eps, x.cols, y.data, y.stride);
}

void LaunchAdd(cudaStream_t s, const Mat& x, Mat y) {
  AddKernel<<<x.rows, kThreads, 0, s>>>(x.data, x.stride, x.cols, y.data, y.stride);
}

void LaunchAddBias(cudaStream_t s, const float* bias, Mat y) {
  AddBiasKernel<<<y.rows, kThreads, 0, s>>>(bias, y.cols, y.data, y.stride);
}

void LaunchSwiGlu(cudaStream_t s, const Mat& gate, const Mat& up, Mat out) {
  SwiGluKernel<<<gate.rows, kThreads, 0, s>>>(gate.data, gate.stride, up.data, up.stride, gate.cols, out.data,
                                              out.stride);
}

__global__ void GatherColumnsKernel(const float* src, int64_t src_stride, const int32_t* perm, int64_t cols,
                                    float* dst, int64_t dst_stride) {
  const float* s = src + static_cast<int64_t>(blockIdx.x) * src_stride;
  float* d = dst + static_cast<int64_t>(blockIdx.x) * dst_stride;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) d[j] = s[perm[j]];
}

void LaunchGatherColumns(cudaStream_t s, const Mat& src, const int32_t* perm, Mat dst) {
  GatherColumnsKernel<<<static_cast<unsigned>(src.rows), kThreads, 0, s>>>(src.data, src.stride, perm, dst.cols,
                                                                          dst.data, dst.stride);
}

void LaunchCopyRows(cudaStream_t s, const Mat& src, const int32_t* rows, int64_t n, Mat dst) {
  CopyRowsKernel<<<n, kThreads, 0, s>>>(src.data, src.stride, rows, src.cols, dst.data, dst.stride);
}

void LaunchRope(cudaStream_t s, Mat x, int n_heads, int head_dim, const int32_t* positions, const RopeParams& p,
                const float* freq_factors) {
  const float theta_scale = std::pow(p.freq_base, -2.0f / p.n_rot);
  RopeKernel<<<x.rows, kThreads, 0, s>>>(x.data, x.stride, n_heads, head_dim, positions, p.n_rot, theta_scale,
                                         p.freq_scale, freq_factors, p.neox);
}

void LaunchStoreKv(cudaStream_t s, const Mat& k, const Mat& v, const DeviceLayout& layout, const KvLayer& kv) {
  StoreKvKernel<<<k.rows, kThreads, 0, s>>>(k.data, k.stride, v.data, v.stride, layout.positions,
                                            layout.row_sequence, layout.tables, layout.table_offsets, kv.block_size,
                                            kv.kv_dim, reinterpret_cast<__half*>(kv.k),
                                            reinterpret_cast<__half*>(kv.v));
}

void LaunchAttention(cudaStream_t s, const Mat& q, const KvLayer& kv, const DeviceLayout& layout,
                     const AttentionShape& shape, Mat out) {
  const dim3 grid(shape.n_heads, static_cast<unsigned>(q.rows));
  AttentionKernel<<<grid, kAttnThreads, 0, s>>>(
      q.data, q.stride, reinterpret_cast<const __half*>(kv.k), reinterpret_cast<const __half*>(kv.v), kv.block_size,
      kv.kv_dim, layout.positions, layout.row_sequence, layout.tables, layout.table_offsets, shape.n_heads,
      shape.n_kv_heads, shape.head_dim, shape.scale, out.data, out.stride);
}

void LaunchLora(cudaStream_t s, const Mat& x, const int32_t* rows, int64_t n, const LoraPair& pair, Mat y) {
  switch (pair.dtype) {
    case LoraDtype::kF32:
      LoraKernel<<<n, kThreads, 0, s>>>(x.data, x.stride, rows, static_cast<const float*>(pair.a_t),
                                        static_cast<const float*>(pair.b_t), pair.rank, pair.scale, x.cols, y.cols,
                                        y.data, y.stride);
      break;
    case LoraDtype::kF16:
      LoraKernel<<<n, kThreads, 0, s>>>(x.data, x.stride, rows, static_cast<const __half*>(pair.a_t),
                                        static_cast<const __half*>(pair.b_t), pair.rank, pair.scale, x.cols, y.cols,
                                        y.data, y.stride);
      break;
    case LoraDtype::kBF16:
      LoraKernel<<<n, kThreads, 0, s>>>(x.data, x.stride, rows, static_cast<const uint16_t*>(pair.a_t),
                                        static_cast<const uint16_t*>(pair.b_t), pair.rank, pair.scale, x.cols, y.cols,
                                        y.data, y.stride);
      break;
  }
}

void LaunchToHalf(cudaStream_t s, const Mat& x, void* dst) {
  FloatToHalfKernel<<<x.rows, kThreads, 0, s>>>(x.data, x.stride, x.cols, static_cast<__half*>(dst));
}

void LaunchToBf16(cudaStream_t s, const Mat& x, void* dst) {
  FloatToBf16Kernel<<<x.rows, kThreads, 0, s>>>(x.data, x.stride, x.cols, static_cast<uint16_t*>(dst));
}

}  // namespace tessera::cuda
