// How a Llama-family model is split over tensor-parallel ranks (Megatron
// style): each rank owns a contiguous range of attention heads (q, k, v
// column-parallel; o row-parallel over the same heads) and a contiguous range
// of the feed-forward's intermediate features (gate, up column-parallel; down
// row-parallel), so one all-reduce follows o and one follows down. The
// embedding, the norms and the output projection are replicated.
//
// Splits may be uneven (vLLM refuses them): the bundled SmolLM2 has 9 heads
// and 3 KV heads, which no tensor-parallel size of 2 or 4 divides. Heads go
// out by whole KV groups while there are at least as many KV heads as ranks;
// with more ranks than KV heads each rank takes part of one group and holds a
// copy of that group's KV head (KV heads replicated, as vLLM does). Either
// way every rank's heads map onto its KV heads as the attention kernels
// expect (local head h uses local KV head h / (heads / KV heads)).
//
// Quantized weights are split on their block boundaries only: a rank's first
// column of o (a head boundary) and of down (a feature boundary) must be a
// multiple of that matrix's block size, or planning fails naming the cut.
#ifndef TESSERA_WORKER_MODEL_TENSOR_PARALLEL_H_
#define TESSERA_WORKER_MODEL_TENSOR_PARALLEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/llama_config.h"

namespace tessera {

// One rank's part: heads [q_head_begin, q_head_end), KV heads
// [kv_head_begin, kv_head_end) and intermediate features [ff_begin, ff_end).
struct RankShard {
  int q_head_begin = 0, q_head_end = 0;
  int kv_head_begin = 0, kv_head_end = 0;
  int64_t ff_begin = 0, ff_end = 0;

  int n_heads() const { return q_head_end - q_head_begin; }
  int n_kv_heads() const { return kv_head_end - kv_head_begin; }
  int64_t n_ff() const { return ff_end - ff_begin; }
};

struct TensorParallelPlan {
  std::vector<RankShard> ranks;  // rank r's shard at index r
};

// The split of `config` over `size` ranks. `o_block_elems` and
// `down_block_elems` are the block sizes (elements per block along a row) of
// the o and down projections' types, the largest over the layers (1 for
// unquantized types). InvalidArgument naming the reason when the model cannot
// be split that way: size < 1, more ranks than heads, a cut through a
// quantization block.
absl::StatusOr<TensorParallelPlan> PlanTensorParallel(const LlamaConfig& config, int size, int64_t o_block_elems,
                                                      int64_t down_block_elems);

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_TENSOR_PARALLEL_H_
