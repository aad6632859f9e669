// Hugging Face config.json -> LlamaConfig for the architectures Tessera
// runs (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM), with the
// options that change the graph: rope_theta, rope_scaling (linear, llama3),
// tie_word_embeddings, rms_norm_eps, head_dim, attention bias. Options
// that would change the graph in ways Tessera does not implement (other
// rope scalings, MLP bias, activations other than SiLU) are refused.
#ifndef TESSERA_WORKER_MODEL_HF_CONFIG_H_
#define TESSERA_WORKER_MODEL_HF_CONFIG_H_

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/model/llama_config.h"

namespace tessera {

struct HfModelConfig {
  LlamaConfig llama;  // n_vocab = vocab_size
  bool tie_word_embeddings = false;
  // Llama 3's rope scaling, as per-frequency divisors (n_rot / 2), if used.
  std::vector<float> rope_freq_factors;
  nlohmann::json quantization_config;  // null if the weights are dense
  std::vector<int32_t> eos_token_ids;
  int32_t bos_token_id = -1;
};

absl::StatusOr<HfModelConfig> ParseHfConfig(const nlohmann::json& config);

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_HF_CONFIG_H_
