// One Llama decoder layer in float32 over the Backend ops, as
// worker/model/llama_model.cc composes them, for a batch of independent
// calibration sequences: each sample is its own sequence (positions 0..L-1,
// its own KV blocks, causal attention within it). Used by the awq and gptq
// drivers to compute every linear's inputs from the layer's input hidden
// states, one layer at a time, so only one layer's weights (as float32) and
// one chunk of samples' intermediates are alive at once.
//
// Memory: the runner creates its own CPU backend and hands it host pointers
// (Mat over caller-owned float arrays), which the CPU backend computes on in
// place; every array is rows x width, rows = samples * seq_len, sample-major.
#ifndef TESSERA_TOOLS_QUANTIZE_LAYER_RUNNER_H_
#define TESSERA_TOOLS_QUANTIZE_LAYER_RUNNER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "tools/quantize/group_context.h"
#include "worker/model/llama_config.h"

namespace tessera::quantize {

// A decoder layer's weights in float32 ([out][in] matrices, HF row order).
struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  DenseMatrix lin[kLinears];
  std::vector<float> bq, bk, bv;  // Qwen2's q/k/v biases; empty otherwise
};

class LayerRunner {
 public:
  // `rope_freq_factors`: Llama 3's per-frequency divisors, or empty.
  // `chunk_samples`: how many samples each call may take at most.
  static absl::StatusOr<std::unique_ptr<LayerRunner>> Create(const LlamaConfig& config,
                                                             std::vector<float> rope_freq_factors, int seq_len,
                                                             int chunk_samples, int threads);

  int seq_len() const { return seq_len_; }
  int chunk_samples() const { return chunk_samples_; }
  const LlamaConfig& config() const { return c_; }

  void RmsNorm(const float* x, int64_t rows, const std::vector<float>& gamma, float* y);
  // y = x wᵀ (+ y), in float32. Not the backend's MatMul: its float path
  // takes one dot product per (input row, weight row) pair and streams the
  // inputs from memory for every block of weight rows, several times slower
  // on calibration batches than this register-blocked product.
  void Matmul(const DenseMatrix& w, const float* x, int64_t rows, float* y, bool accumulate = false);
  // From the normed input xn of `samples` whole samples: q, k, v (biases
  // added), rope, causal attention per sample; out is [rows][q_dim], the
  // input of o_proj. q/k/v weights from `w` (any may be overridden).
  void AttentionFromNormed(const float* xn, int samples, const DenseMatrix& wq, const DenseMatrix& wk,
                           const DenseMatrix& wv, const LayerWeights& w, float* out);
  // silu(xn wgᵀ) * (xn wuᵀ): the input of down_proj, [rows][n_ff].
  void MlpActFromNormed(const float* xn, int64_t rows, const DenseMatrix& wg, const DenseMatrix& wu, float* act);
  // y += x.
  void Add(const float* x, int64_t rows, int64_t cols, float* y);

 private:
  LayerRunner() = default;
  void Gemm(const DenseMatrix& w, const float* x, int64_t rows, float* y, bool accumulate);
  static Mat View(const float* p, int64_t rows, int64_t cols) {
    return Mat{const_cast<float*>(p), rows, cols, cols};
  }

  LlamaConfig c_;
  int seq_len_ = 0, chunk_samples_ = 0;
  std::unique_ptr<Backend> backend_;
  std::vector<float> rope_factors_;
  RopeParams rope_;
  AttentionShape shape_;
  KvLayer kv_{};
  std::vector<int32_t> positions_, row_sequence_, block_ids_;
  std::vector<std::span<const int32_t>> tables_;
  std::vector<float> q_, k_, v_, up_;  // chunk scratch
  std::vector<float> packed_;          // Gemm's weight panels
};

// Helpers the drivers share.
// Layer `layer`'s weights from the input, as float32.
absl::StatusOr<LayerWeights> ReadLayerWeights(const GroupJob& job, int layer);
// x = the embedding rows of `tokens` as float32, [tokens][n_embd].
absl::Status EmbedTokens(const GroupJob& job, const std::vector<int32_t>& tokens, std::vector<float>* x);
// A runner for the job's model: chunks of whole samples, about 2048 rows.
absl::StatusOr<std::unique_ptr<LayerRunner>> CreateLayerRunner(const GroupJob& job, int samples, int seq_len);
inline std::string NormName(int layer, bool ffn) {
  return absl::StrCat("model.layers.", layer, ffn ? ".post_attention_layernorm.weight" : ".input_layernorm.weight");
}

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_LAYER_RUNNER_H_
