#include "worker/model/tensor_parallel.h"

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

// Cuts [0, n) into `parts` contiguous ranges whose sizes differ by at most
// one (the larger ones first); returns the `parts + 1` boundaries.
std::vector<int64_t> EvenCuts(int64_t n, int parts) {
  std::vector<int64_t> cuts(parts + 1, 0);
  for (int i = 0; i < parts; ++i) cuts[i + 1] = cuts[i] + n / parts + (i < n % parts ? 1 : 0);
  return cuts;
}

}  // namespace

absl::StatusOr<TensorParallelPlan> PlanTensorParallel(const LlamaConfig& c, int size, int64_t o_block_elems,
                                                      int64_t down_block_elems) {
  if (size < 1) return absl::InvalidArgumentError(absl::StrCat("tensor_parallel_size must be at least 1; got ", size));
  if (size > c.n_heads) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel_size ", size, " exceeds the model's ", c.n_heads,
                                                   " attention heads (each rank needs at least one)"));
  }
  if (c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0 || o_block_elems < 1 || down_block_elems < 1) {
    return absl::InvalidArgumentError("tensor parallelism: invalid head counts or block sizes");
  }
  const int group = c.n_heads / c.n_kv_heads;  // query heads per KV head
  TensorParallelPlan plan;
  plan.ranks.resize(size);
  if (size <= c.n_kv_heads) {
    const std::vector<int64_t> kv = EvenCuts(c.n_kv_heads, size);
    for (int r = 0; r < size; ++r) {
      RankShard& s = plan.ranks[r];
      s.kv_head_begin = static_cast<int>(kv[r]);
      s.kv_head_end = static_cast<int>(kv[r + 1]);
      s.q_head_begin = s.kv_head_begin * group;
      s.q_head_end = s.kv_head_end * group;
    }
  } else {
    // More ranks than KV heads: each group's query heads are shared by a run
    // of ranks, each holding a copy of the group's KV head.
    const std::vector<int64_t> ranks_of_group = EvenCuts(size, c.n_kv_heads);
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const int first = static_cast<int>(ranks_of_group[g]);
      const int count = static_cast<int>(ranks_of_group[g + 1] - ranks_of_group[g]);
      const std::vector<int64_t> heads = EvenCuts(group, count);
      for (int i = 0; i < count; ++i) {
        RankShard& s = plan.ranks[first + i];
        s.kv_head_begin = g;
        s.kv_head_end = g + 1;
        s.q_head_begin = g * group + static_cast<int>(heads[i]);
        s.q_head_end = g * group + static_cast<int>(heads[i + 1]);
      }
    }
  }
  for (int r = 1; r < size; ++r) {
    const int64_t column = static_cast<int64_t>(plan.ranks[r].q_head_begin) * c.head_dim;
    if (column % o_block_elems != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor_parallel_size ", size, " would cut the attention output projection's quantization blocks of ",
          o_block_elems, " columns at head ", plan.ranks[r].q_head_begin, " (column ", column,
          "); choose a size whose head boundaries fall on whole blocks"));
    }
  }
  if (c.n_ff % down_block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor parallelism: the feed-forward width ", c.n_ff,
                                                   " is not a whole number of ", down_block_elems,
                                                   "-column blocks"));
  }
  const int64_t blocks = c.n_ff / down_block_elems;
  if (blocks < size) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel_size ", size, " exceeds the ", blocks,
                                                   " quantization blocks of the feed-forward down projection's rows"));
  }
  const std::vector<int64_t> ff = EvenCuts(blocks, size);
  for (int r = 0; r < size; ++r) {
    plan.ranks[r].ff_begin = ff[r] * down_block_elems;
    plan.ranks[r].ff_end = ff[r + 1] * down_block_elems;
  }
  return plan;
}

}  // namespace tessera
