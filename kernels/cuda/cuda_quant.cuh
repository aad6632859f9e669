// Device-side decoding of the GGUF weight encodings, 32 elements at a time.
//
// Every supported type is read in "chunks" of 32 consecutive elements of a
// row: a whole block of the legacy formats (Q4_0, Q4_1, Q8_0), a 32-element
// sub-block of a 256-element super-block (Q4_K, Q6_K), or 32 plain values
// (F32, F16, BF16). Kernels are templates over this trait, so a new format is
// one specialisation here plus its line in the dispatch of cuda_backend.cu.
// The layouts are those of common/quant_blocks.h (the GGUF spec), decoded as
// kernels/cpu/quant_reference.cc decodes them.
#ifndef TESSERA_KERNELS_CUDA_CUDA_QUANT_CUH_
#define TESSERA_KERNELS_CUDA_CUDA_QUANT_CUH_

#include <cuda_fp16.h>

#include <cstdint>

#include "common/ggml_types.h"
#include "common/quant_blocks.h"

namespace tessera::cuda {

__device__ __forceinline__ float HalfBits(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float Bf16Bits(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

template <GgmlType T>
struct Chunked;

// chunk c of a row starts `c / kChunksPerBlock` blocks in, at sub-block
// `c % kChunksPerBlock`. Decode writes its 32 values to out[0..31].
template <>
struct Chunked<GgmlType::kF32> {
  static constexpr int kBlockBytes = 32 * 4, kChunksPerBlock = 1, kBlockElems = 32;
  __device__ static void Decode(const uint8_t* block, int, float* out) {
    const float* v = reinterpret_cast<const float*>(block);
#pragma unroll
    for (int l = 0; l < 32; ++l) out[l] = v[l];
  }
};

template <>
struct Chunked<GgmlType::kF16> {
  static constexpr int kBlockBytes = 32 * 2, kChunksPerBlock = 1, kBlockElems = 32;
  __device__ static void Decode(const uint8_t* block, int, float* out) {
    const uint16_t* v = reinterpret_cast<const uint16_t*>(block);
#pragma unroll
    for (int l = 0; l < 32; ++l) out[l] = HalfBits(v[l]);
  }
};

template <>
struct Chunked<GgmlType::kBF16> {
  static constexpr int kBlockBytes = 32 * 2, kChunksPerBlock = 1, kBlockElems = 32;
  __device__ static void Decode(const uint8_t* block, int, float* out) {
    const uint16_t* v = reinterpret_cast<const uint16_t*>(block);
#pragma unroll
    for (int l = 0; l < 32; ++l) out[l] = Bf16Bits(v[l]);
  }
};

template <>
struct Chunked<GgmlType::kQ4_0> {
  static constexpr int kBlockBytes = sizeof(BlockQ4_0), kChunksPerBlock = 1, kBlockElems = kQk32;
  __device__ static void Decode(const uint8_t* p, int, float* out) {
    const BlockQ4_0* b = reinterpret_cast<const BlockQ4_0*>(p);
    const float d = HalfBits(b->d);
#pragma unroll
    for (int l = 0; l < 16; ++l) {
      out[l] = (static_cast<int>(b->qs[l] & 0x0F) - 8) * d;
      out[l + 16] = (static_cast<int>(b->qs[l] >> 4) - 8) * d;
    }
  }
};

template <>
struct Chunked<GgmlType::kQ4_1> {
  static constexpr int kBlockBytes = sizeof(BlockQ4_1), kChunksPerBlock = 1, kBlockElems = kQk32;
  __device__ static void Decode(const uint8_t* p, int, float* out) {
    const BlockQ4_1* b = reinterpret_cast<const BlockQ4_1*>(p);
    const float d = HalfBits(b->d), m = HalfBits(b->m);
#pragma unroll
    for (int l = 0; l < 16; ++l) {
      out[l] = (b->qs[l] & 0x0F) * d + m;
      out[l + 16] = (b->qs[l] >> 4) * d + m;
    }
  }
};

template <>
struct Chunked<GgmlType::kQ8_0> {
  static constexpr int kBlockBytes = sizeof(BlockQ8_0), kChunksPerBlock = 1, kBlockElems = kQk32;
  __device__ static void Decode(const uint8_t* p, int, float* out) {
    const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(p);
    const float d = HalfBits(b->d);
#pragma unroll
    for (int l = 0; l < 32; ++l) out[l] = b->qs[l] * d;
  }
};

// Tessera's group layouts (quant_blocks.h): one block per quantization group
// of G elements with f32 scale d and min m; chunk s is elements [32s, 32s+32).
template <int G>
struct ChunkedQ4G {
  static constexpr int kBlockBytes = sizeof(BlockQ4G<G>), kChunksPerBlock = G / 32, kBlockElems = G;
  __device__ static void Decode(const uint8_t* p, int s, float* out) {
    const BlockQ4G<G>* b = reinterpret_cast<const BlockQ4G<G>*>(p);
    const float d = b->d, m = b->m;
    const uint8_t* qs = b->qs + 16 * s;
#pragma unroll
    for (int l = 0; l < 16; ++l) {
      out[l] = (qs[l] & 0x0F) * d + m;
      out[l + 16] = (qs[l] >> 4) * d + m;
    }
  }
};
template <int G>
struct ChunkedQ8G {
  static constexpr int kBlockBytes = sizeof(BlockQ8G<G>), kChunksPerBlock = G / 32, kBlockElems = G;
  __device__ static void Decode(const uint8_t* p, int s, float* out) {
    const BlockQ8G<G>* b = reinterpret_cast<const BlockQ8G<G>*>(p);
    const float d = b->d, m = b->m;
    const int8_t* qs = b->qs + 32 * s;
#pragma unroll
    for (int l = 0; l < 32; ++l) out[l] = qs[l] * d + m;
  }
};
template <> struct Chunked<GgmlType::kQ4G32> : ChunkedQ4G<32> {};
template <> struct Chunked<GgmlType::kQ4G64> : ChunkedQ4G<64> {};
template <> struct Chunked<GgmlType::kQ4G128> : ChunkedQ4G<128> {};
template <> struct Chunked<GgmlType::kQ8G32> : ChunkedQ8G<32> {};
template <> struct Chunked<GgmlType::kQ8G64> : ChunkedQ8G<64> {};
template <> struct Chunked<GgmlType::kQ8G128> : ChunkedQ8G<128> {};

// Sub-block j's 6-bit scale and min of a Q4_K block (12 packed bytes).
__device__ __forceinline__ void ScaleMinK4(int j, const uint8_t* q, int* d, int* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

template <>
struct Chunked<GgmlType::kQ4_K> {
  static constexpr int kBlockBytes = sizeof(BlockQ4_K), kChunksPerBlock = 8, kBlockElems = kQkK;
  // Sub-block s: the low (s even) or high (s odd) nibbles of 32 bytes of
  // group s / 2, with scale and min number s.
  __device__ static void Decode(const uint8_t* p, int s, float* out) {
    const BlockQ4_K* b = reinterpret_cast<const BlockQ4_K*>(p);
    int sc, mn;
    ScaleMinK4(s, b->scales, &sc, &mn);
    const float d = HalfBits(b->d) * sc, m = HalfBits(b->dmin) * mn;
    const uint8_t* q = b->qs + 32 * (s / 2);
    const int shift = (s & 1) * 4;
#pragma unroll
    for (int l = 0; l < 32; ++l) out[l] = d * ((q[l] >> shift) & 0x0F) - m;
  }
};

template <>
struct Chunked<GgmlType::kQ6_K> {
  static constexpr int kBlockBytes = sizeof(BlockQ6_K), kChunksPerBlock = 8, kBlockElems = kQkK;
  // Sub-block s: half s / 4 of the super-block, group g = s % 4 of it.
  __device__ static void Decode(const uint8_t* p, int s, float* out) {
    const BlockQ6_K* b = reinterpret_cast<const BlockQ6_K*>(p);
    const int half = s / 4, g = s % 4;
    const uint8_t* ql = b->ql + 64 * half + (g & 1) * 32;
    const uint8_t* qh = b->qh + 32 * half;
    const int8_t* sc = b->scales + 8 * half + 2 * g;
    const float d = HalfBits(b->d);
    const int low_shift = (g >> 1) * 4, high_shift = 2 * g;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int q = static_cast<int>(((ql[l] >> low_shift) & 0x0F) | (((qh[l] >> high_shift) & 3) << 4)) - 32;
      out[l] = d * sc[l / 16] * q;
    }
  }
};

// The chunk `c` of a row that starts at `row`.
template <GgmlType T>
__device__ __forceinline__ void DecodeChunk(const uint8_t* row, int64_t c, float* out) {
  using C = Chunked<T>;
  Chunked<T>::Decode(row + (c / C::kChunksPerBlock) * C::kBlockBytes, static_cast<int>(c % C::kChunksPerBlock), out);
}

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_CUDA_QUANT_CUH_
