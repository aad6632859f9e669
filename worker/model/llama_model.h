// LlamaModel: the forward pass of the Llama family over a Backend.
//
// Weights come from a Checkpoint (any container format) as views in a
// kernel layout; loading checks every weight's presence, shape and type
// against the config and the backend's capabilities, so an unusable file
// fails at Load with a Status.
//
// Tensor parallelism (worker/model/tensor_parallel.h): with a group of N
// ranks the model holds N shards, each on its own backend; rank 0 runs in the
// caller's thread and ranks 1..N-1 on threads of their own that follow each
// Forward step, with one all-reduce after the attention output and one after
// the feed-forward. The caller sees one model.
//
// Thread-safety: Forward is not re-entrant (it uses the model's scratch
// buffers); one engine thread drives it.
#ifndef TESSERA_WORKER_MODEL_LLAMA_MODEL_H_
#define TESSERA_WORKER_MODEL_LLAMA_MODEL_H_

#include <chrono>
#include <deque>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/backend.h"
#include "kernels/comm/communicator.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/checkpoint.h"
#include "worker/model/llama_config.h"
#include "worker/model/tensor_parallel.h"

namespace tessera {

// One sequence's adapter as the forward pass sees it: the backend-resident
// LoRA pair of each (layer, projection) on each tensor-parallel rank (that
// rank's slice, on its backend), nullptr where it adapts nothing.
// Projections in layer order: q, k, v, o, gate, up, down (LoraTarget).
class LoraView {
 public:
  virtual ~LoraView() = default;
  virtual const LoraPair* pair(int layer, int projection, int rank) const = 0;
};

// The ranks of a tensor-parallel model: rank r computes on backends[r] and
// talks over communicators[r]. backends[0] is the backend Load is given. Not
// owned: both outlive the model.
struct TensorParallelGroup {
  std::vector<Backend*> backends;
  std::vector<Communicator*> communicators;
  // The communicators' collective timeout: rank 0 waits at most twice this
  // for the other ranks to finish a step, so a rank that vanished (its
  // thread gone, its peers timed out) cannot hang the engine.
  std::chrono::milliseconds timeout{30000};
};

struct LlamaModelOptions {
  int max_batch_tokens = 512;  // rows per Forward call
  int max_logit_rows = 64;     // rows per Forward call whose logits are wanted
  // Null, or a group of at least 2 ranks.
  const TensorParallelGroup* tensor_parallel = nullptr;
};

class LlamaModel {
 public:
  // REQUIRES: `checkpoint` and `backend` outlive the model.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(Checkpoint& checkpoint, Backend& backend,
                                                          const LlamaModelOptions& options = {});

  ~LlamaModel();

  const LlamaConfig& config() const { return config_; }
  int tensor_parallel_size() const { return static_cast<int>(ranks_.size()); }
  // OK, or why the tensor-parallel group failed (every Forward returns it
  // from then on; the worker ends).
  absl::Status group_status() const { return broken_; }
  const RankShard& shard(int rank) const { return ranks_[rank].shard; }
  Backend& rank_backend(int rank) const { return *ranks_[rank].backend; }
  // Bytes of the weights rank `rank` multiplies (its slices of the split
  // matrices plus the replicated ones), as stored.
  uint64_t rank_weight_bytes(int rank) const { return ranks_[rank].weight_bytes; }
  // Of those, the bytes every rank holds whole (embedding, norms, output).
  uint64_t replicated_weight_bytes() const { return replicated_weight_bytes_; }
  // A KV cache with every rank's heads on its backend; the cache Forward
  // expects. Bytes per block over all ranks (replicated KV heads count on
  // every rank that holds them): kv_bytes_per_block.
  absl::StatusOr<std::unique_ptr<KvCache>> CreateKvCache(const KvCacheOptions& options) const;
  int64_t kv_bytes_per_block(int block_size) const;
  // Weight bytes a decode step reads at least once (the embedding table only
  // by rows, so it counts only when it is also the output projection).
  uint64_t weight_bytes_per_step() const { return weight_bytes_per_step_; }
  int max_batch_tokens() const { return options_.max_batch_tokens; }
  int max_logit_rows() const { return options_.max_logit_rows; }

  // Runs the batch rows `tokens` (row i at layout.positions[i] of sequence
  // layout.row_sequence[i]) through the model, appending their K/V to
  // `cache`, and writes the logits of the rows listed in `logit_rows` to
  // `logits` (logit_rows.size() x n_vocab floats, host memory).
  // REQUIRES: every row's block table covers its position; rows of one
  // sequence appear in position order; positions before a row's own are
  // already in the cache or earlier in this batch.
  // `row_adapters`, if not empty, gives each row's adapter (nullptr: the base
  // model); rows sharing an adapter are multiplied as one group.
  // A tensor-parallel model whose collective failed (a rank timed out or
  // went away) returns that error from then on: a group cannot recover.
  absl::Status Forward(std::span<const int32_t> tokens, const BatchLayout& layout, KvCache& cache,
                       std::span<const int32_t> logit_rows, float* logits,
                       std::span<const LoraView* const> row_adapters = {});

 private:
  struct Layer {
    WeightView attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, w_gate, w_up, w_down;
  };
  // One rank's shard: its weight slices and scratch activations
  // (max_batch_tokens rows each). With one rank the slices are the whole
  // weights.
  struct Rank {
    Backend* backend = nullptr;
    Communicator* comm = nullptr;
    RankShard shard;
    std::vector<Layer> layers;
    uint64_t weight_bytes = 0;
    Mat x, xn, q, k, v, attn, gate, up, partial;
    std::vector<LoraGroup> lora_groups;  // this rank's adapter groups for one projection
    absl::Status status;  // of this rank's part of the current step
  };
  struct Step {
    std::span<const int32_t> tokens;
    const BatchLayout* layout;
    const KvCache* cache;
  };
  struct AdapterRows {
    const LoraView* view;
    std::vector<int32_t> rows;
  };

  LlamaModel(const LlamaConfig& c, const LlamaModelOptions& o) : config_(c), options_(o) {}
  absl::Status ShardWeights(const TensorParallelPlan& plan);
  absl::Status AllocateScratch();
  // Runs every layer of rank `r` on the step; the o and down outputs are
  // all-reduced over the group when there is more than one rank.
  absl::Status RankForward(Rank& r, const Step& step);
  void FollowerLoop(int rank);
  static Mat Rows(const Mat& m, int64_t n) { return Mat{m.data, n, m.cols, m.stride}; }

  LlamaConfig config_;
  uint64_t weight_bytes_per_step_ = 0;
  uint64_t replicated_weight_bytes_ = 0;
  LlamaModelOptions options_;
  WeightView token_embd_, output_norm_, output_;
  std::vector<float> rope_freq_factors_;
  std::vector<Layer> layers_;  // whole weights; ranks_ hold the slices
  std::deque<std::vector<uint8_t>> widened_;  // mixed-width weights rewritten for the backend (Bind)
  std::vector<Rank> ranks_;
  Mat logits_;  // rank 0's backend
  std::vector<AdapterRows> adapter_rows_;  // written before a step, read by every rank during it
  absl::Status broken_;  // the first collective failure; every Forward returns it after

  // Followers (ranks 1..N-1): each waits for step_number_ to move, runs its
  // rank's part of *step_, and counts itself done.
  absl::Mutex mu_;
  uint64_t step_number_ ABSL_GUARDED_BY(mu_) = 0;
  int followers_running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  const Step* step_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<std::thread> followers_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_LLAMA_MODEL_H_
