// LlamaConfig: the hyper-parameters of a Llama-family model (Llama 2/3,
// Mistral, Qwen2, SmolLM: one graph, different options). Each checkpoint
// format reads its own metadata into it (worker/model/checkpoint.h);
// ValidateLlamaConfig holds every format to the same bounds.
#ifndef TESSERA_WORKER_MODEL_LLAMA_CONFIG_H_
#define TESSERA_WORKER_MODEL_LLAMA_CONFIG_H_

#include <string>

#include "absl/status/status.h"

namespace tessera {

struct LlamaConfig {
  std::string architecture;  // llama, mistral or qwen2
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
  // Rope pairs (i, i + n_rot/2) instead of (2i, 2i+1). Hugging Face
  // checkpoints and Qwen2 GGUFs rotate halves; llama.cpp's converter
  // interleaves the q/k rows of Llama-architecture GGUFs so that adjacent
  // pairs rotate instead.
  bool rope_neox = false;
  // Whether q/k rows are stored in llama.cpp's interleaved order: a fact
  // about the file, needed to lay out a PEFT adapter's lora_B (which is in
  // Hugging Face order) the same way.
  bool qk_rows_interleaved = false;
  bool qkv_bias = false;      // Qwen2 has biases on q, k and v

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// The architectures the forward pass implements.
inline constexpr const char* kSupportedArchitectures[] = {"llama", "qwen2", "mistral"};

// Checks a config read from any format: every count positive and within sane
// bounds, heads divisible by KV heads, head and rope dims even, rope dims <=
// head_dim, epsilon and rope base in range. Unknown architectures are refused
// with a message naming them.
absl::Status ValidateLlamaConfig(const LlamaConfig& c);

// The linear projections of a layer that a LoRA adapter may target, in the
// layer's order.
enum class LoraTarget { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kLoraTargets = 7;

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_LLAMA_CONFIG_H_
