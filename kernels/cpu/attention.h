// CPU attention over the paged KV layout: one query head at a time.
#ifndef TESSERA_KERNELS_CPU_ATTENTION_H_
#define TESSERA_KERNELS_CPU_ATTENTION_H_

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/backend.h"

namespace tessera::cpu {

struct AttentionScratch {
  std::vector<float> scores;
  std::vector<uint16_t> q_half;
  std::vector<float> q_rounded;
  std::vector<float> lanes;
};

// out = softmax(scale * q·K[0..n_ctx)) · V[0..n_ctx) for one head, reading
// K/V of `kv_head` through the sequence's block table, with llama.cpp's
// rounding (see ggml_numerics.h). Dispatches to the best VectorKernels.
// REQUIRES: block_table covers n_ctx positions.
void AttendOneHead(const float* q, const KvLayer& kv, std::span<const int32_t> block_table,
                   int64_t n_ctx, int kv_head, const AttentionShape& shape, float* out,
                   AttentionScratch& scratch);

void FloatToHalfRow(const float* x, uint16_t* y, int n);

// L: the lanes of llama.cpp's sums the variant follows (16: its AVX-512
// build, 8: its AVX2 build; GgmlOrder).
//
// AVX2 variant. REQUIRES: the CPU has AVX2/FMA/F16C; head_dim % 16 == 0.
template <int L>
void AttendOneHeadAvx2(const float* q, const KvLayer& kv, std::span<const int32_t> block_table, int64_t n_ctx,
                       int kv_head, const AttentionShape& shape, float* out, AttentionScratch& scratch);

// The plain C++ variant (the contract the SIMD variants reproduce).
template <int L>
void AttendOneHeadReference(const float* q, const KvLayer& kv, std::span<const int32_t> block_table,
                            int64_t n_ctx, int kv_head, const AttentionShape& shape, float* out,
                            AttentionScratch& scratch);

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_ATTENTION_H_
