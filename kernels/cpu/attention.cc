#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/fp16.h"
#include "kernels/cpu/ggml_numerics.h"
#include "kernels/cpu/quant_kernels.h"

namespace tessera::cpu {

void FloatToHalfRow(const float* x, uint16_t* y, int n) { BestVectorKernels().from_float(x, y, n); }

void AttendOneHead(const float* q, const KvLayer& kv, std::span<const int32_t> block_table,
                   int64_t n_ctx, int kv_head, const AttentionShape& shape, float* out,
                   AttentionScratch& scratch) {
  BestVectorKernels().attend(q, kv, block_table, n_ctx, kv_head, shape, out, scratch);
}

template <int L>
void AttendOneHeadReference(const float* q, const KvLayer& kv, std::span<const int32_t> block_table,
                            int64_t n_ctx, int kv_head, const AttentionShape& shape, float* out,
                            AttentionScratch& scratch) {
  static const VectorKernels hk = ReferenceVectorKernels(L == 16 ? GgmlOrder::kAvx512 : GgmlOrder::kAvx2);
  auto expf = [](float x) { return L == 16 ? ExpfCompat(x) : ExpfCompatAvx2(x); };
  const int hd = shape.head_dim;
  // The query and the softmax weights are rounded to half precision before
  // they meet the (half) K and V, and sums run in L lanes, as llama.cpp's
  // CPU path does (see ggml_numerics.h for why).
  scratch.q_half.resize(hd);
  scratch.q_rounded.resize(hd);
  hk.from_float(q, scratch.q_half.data(), hd);
  for (int i = 0; i < hd; ++i) scratch.q_rounded[i] = Fp16ToFp32(scratch.q_half[i]);
  const int64_t padded = (n_ctx + L - 1) / L * L;
  scratch.scores.assign(padded, 0.f);
  float* s = scratch.scores.data();
  const int64_t head_off = static_cast<int64_t>(kv_head) * hd;
  auto slot_of = [&](int64_t t) {
    return static_cast<int64_t>(block_table[t / kv.block_size]) * kv.block_size + t % kv.block_size;
  };
  float max_score = -INFINITY;
  for (int64_t t = 0; t < n_ctx; ++t) {
    s[t] = hk.dot(kv.k + slot_of(t) * kv.kv_dim + head_off, scratch.q_rounded.data(), hd) * shape.scale;
    max_score = std::max(max_score, s[t]);
  }
  double sum = 0;
  for (int64_t c = 0; c < padded; c += L) {
    for (int64_t t = c; t < c + L; ++t) s[t] = t < n_ctx ? expf(s[t] - max_score) : 0.f;
    sum += ReduceLanes(s + c, L);
  }
  const float inv = static_cast<float>(1.0 / sum);
  // lanes[l][d] accumulates positions t = l (mod L).
  scratch.lanes.assign(static_cast<size_t>(L) * hd, 0.f);
  for (int64_t t = 0; t < n_ctx; ++t) {
    const float p = Fp16ToFp32(Fp32ToFp16(s[t] * inv));
    hk.axpy(p, kv.v + slot_of(t) * kv.kv_dim + head_off, scratch.lanes.data() + (t % L) * hd, hd);
  }
  float lane[16];
  for (int d = 0; d < hd; ++d) {
    for (int l = 0; l < L; ++l) lane[l] = scratch.lanes[static_cast<size_t>(l) * hd + d];
    out[d] = ReduceLanes(lane, L);
  }
}

template void AttendOneHeadReference<8>(const float*, const KvLayer&, std::span<const int32_t>, int64_t, int,
                                        const AttentionShape&, float*, AttentionScratch&);
template void AttendOneHeadReference<16>(const float*, const KvLayer&, std::span<const int32_t>, int64_t, int,
                                         const AttentionShape&, float*, AttentionScratch&);

}  // namespace tessera::cpu
