// LlamaModel: the forward pass of the Llama family over a Backend.
//
// Weights come from a Checkpoint (any container format) as views in a
// kernel layout; loading checks every weight's presence, shape and type
// against the config and the backend's capabilities, so an unusable file
// fails at Load with a Status.
//
// Thread-safety: Forward is not re-entrant (it uses the model's scratch
// buffers); one engine thread drives it.
#ifndef TESSERA_WORKER_MODEL_LLAMA_MODEL_H_
#define TESSERA_WORKER_MODEL_LLAMA_MODEL_H_

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/checkpoint.h"
#include "worker/model/llama_config.h"

namespace tessera {

// One sequence's adapter as the forward pass sees it: the backend-resident
// LoRA pair of each (layer, projection), nullptr where it adapts nothing.
// Projections in layer order: q, k, v, o, gate, up, down (LoraTarget).
class LoraView {
 public:
  virtual ~LoraView() = default;
  virtual const LoraPair* pair(int layer, int projection) const = 0;
};

struct LlamaModelOptions {
  int max_batch_tokens = 512;  // rows per Forward call
  int max_logit_rows = 64;     // rows per Forward call whose logits are wanted
};

class LlamaModel {
 public:
  // REQUIRES: `checkpoint` and `backend` outlive the model.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(Checkpoint& checkpoint, Backend& backend,
                                                          const LlamaModelOptions& options = {});

  const LlamaConfig& config() const { return config_; }
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
  absl::Status Forward(std::span<const int32_t> tokens, const BatchLayout& layout, KvCache& cache,
                       std::span<const int32_t> logit_rows, float* logits,
                       std::span<const LoraView* const> row_adapters = {});

 private:
  struct Layer {
    WeightView attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, w_gate, w_up, w_down;
  };

  LlamaModel(const LlamaConfig& c, Backend& b, const LlamaModelOptions& o)
      : config_(c), backend_(b), options_(o) {}
  absl::Status AllocateScratch();
  static Mat Rows(const Mat& m, int64_t n) { return Mat{m.data, n, m.cols, m.stride}; }

  LlamaConfig config_;
  uint64_t weight_bytes_per_step_ = 0;
  Backend& backend_;
  LlamaModelOptions options_;
  WeightView token_embd_, output_norm_, output_;
  std::vector<float> rope_freq_factors_;
  std::vector<Layer> layers_;
  // Scratch activations, max_batch_tokens rows each.
  Mat x_, xn_, q_, k_, v_, attn_, gate_, up_, logits_;
  // Per-Forward adapter grouping (reused to avoid allocation per step).
  struct AdapterRows {
    const LoraView* view;
    std::vector<int32_t> rows;
  };
  std::vector<AdapterRows> adapter_rows_;
  std::vector<LoraGroup> lora_groups_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_LLAMA_MODEL_H_
