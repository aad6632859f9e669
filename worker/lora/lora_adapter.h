// LoraAdapter: a PEFT LoRA adapter (adapter_config.json +
// adapter_model.safetensors) loaded and validated against a base model.
//
// Adapters are named, never addressed by client-supplied paths: a name must
// match [A-Za-z0-9][A-Za-z0-9._-]{0,127}, and its directory must resolve,
// after following symlinks, inside one of the configured roots. Pickle files
// (adapter_model.bin) are refused without being opened. Unsupported PEFT
// options (modules_to_save, DoRA, bias other than "none"), ranks above the
// limit and any shape that does not fit the base model are refused with a
// message that names them; a refused adapter leaves nothing behind (loading
// builds a new object and only returns it whole).
//
// Thread-safety: immutable after Load.
#ifndef TESSERA_WORKER_LORA_LORA_ADAPTER_H_
#define TESSERA_WORKER_LORA_LORA_ADAPTER_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/model/llama_config.h"

namespace tessera {

std::string_view LoraTargetName(LoraTarget t);  // PEFT module name, e.g. "q_proj"

struct LoraAdapterConfig {
  int rank = 0;
  double alpha = 0;
  bool use_rslora = false;
  bool fan_in_fan_out = false;
  std::array<bool, kLoraTargets> targets{};
  // Per-module overrides (PEFT rank_pattern / alpha_pattern): key -> value.
  std::vector<std::pair<std::string, int>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
};

// Parses and checks adapter_config.json. max_rank bounds every rank.
absl::StatusOr<LoraAdapterConfig> ParseLoraConfig(std::string_view json, int max_rank);

// One adapted projection of one layer: delta W = scale * B A, with
// A [rank][in] and B [out][rank] row-major, stored as `dtype`: float32 in
// a/b, or half / bfloat16 bits in a16/b16 (the other pair is empty).
struct LoraWeights {
  int rank = 0;
  float scale = 0;
  int64_t in = 0, out = 0;
  LoraDtype dtype = LoraDtype::kF32;
  std::vector<float> a, b;
  std::vector<uint16_t> a16, b16;

  size_t bytes() const { return (a.size() + b.size()) * sizeof(float) + (a16.size() + b16.size()) * 2; }
};

class LoraAdapter {
 public:
  // Loads `dir` (already confined; see ResolveAdapterDir) for a base model.
  // Weights are kept as `dtype` (host-tier memory is bytes() of that type);
  // a value a 16-bit type cannot hold (beyond float16's range) is refused.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> Load(const std::string& name, const std::string& dir,
                                                           const LlamaConfig& base, int max_rank,
                                                           LoraDtype dtype = LoraDtype::kF32);

  const std::string& name() const { return name_; }
  const LoraAdapterConfig& config() const { return config_; }
  // nullptr when the adapter does not touch that projection of that layer.
  const LoraWeights* weights(int layer, LoraTarget t) const;
  size_t bytes() const { return bytes_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }

 private:
  LoraAdapter() = default;
  std::string name_;
  LoraAdapterConfig config_;
  std::vector<std::array<std::unique_ptr<LoraWeights>, kLoraTargets>> layers_;
  size_t bytes_ = 0;
};

// The storage type --lora-dtype names: "float32", "float16", "bfloat16", or
// "auto": float16 on the CPU (half the bytes read per adapter row, F16C
// widens them for free); on a GPU the base model's activation type
// (bfloat16 for a BF16 checkpoint, else float16). InvalidArgument otherwise.
absl::StatusOr<LoraDtype> ResolveLoraDtype(std::string_view flag, bool on_gpu, bool bf16_model);

// True if `name` is a valid adapter name.
bool IsValidAdapterName(std::string_view name);

// The real path of `path` if it exists and lies inside one of `roots` (after
// resolving symlinks in both); PermissionDenied otherwise.
absl::StatusOr<std::string> ResolveAdapterDir(const std::string& path, const std::vector<std::string>& roots);

}  // namespace tessera

#endif  // TESSERA_WORKER_LORA_LORA_ADAPTER_H_
