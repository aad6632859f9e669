// LlamaConfig: the hyper-parameters of a Llama-family model (Llama 2/3,
// Mistral, Qwen2, SmolLM: one graph, different options), read and validated
// from GGUF metadata.
#ifndef TESSERA_WORKER_MODEL_LLAMA_CONFIG_H_
#define TESSERA_WORKER_MODEL_LLAMA_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/gguf/gguf_file.h"

namespace tessera {

struct LlamaConfig {
  std::string architecture;  // GGUF general.architecture
  std::string name;          // general.name, for display
  int n_layers = 0;
  int n_embd = 0;
  int n_ff = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;
  int rope_dims = 0;
  float rope_freq_base = 10000.f;
  float rope_freq_scale = 1.f;
  bool rope_neox = false;     // Qwen2 rotates halves, Llama adjacent pairs
  bool qkv_bias = false;      // Qwen2 has biases on q, k and v

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// Reads and checks the config: every count positive and within sane bounds,
// heads divisible by KV heads, rope dims even and <= head_dim. Unknown
// architectures are refused with a message naming them.
absl::StatusOr<LlamaConfig> ReadLlamaConfig(const GgufFile& file);

// The linear projections of a layer that a LoRA adapter may target, in the
// layer's order.
enum class LoraTarget { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kLoraTargets = 7;

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_LLAMA_CONFIG_H_
