// Checkpoint: a model as one container format stores it — hyper-parameters,
// weights, tokenizer and chat template — read through one interface, so the
// forward pass, the tokenizer and the chat template never see file formats.
//
// Formats register in checkpoint.cc (a GGUF file, a Hugging Face directory);
// within a Hugging Face directory, quantized linear layers are decoded by the
// quantization formats of quant_format.h (AWQ, GPTQ, compressed-tensors). A
// new container is one file plus a registration line.
//
// Weights are handed out as WeightViews in a layout the backends compute
// with: in place in the file's mapping where the encoding is a kernel type
// (GGUF blocks, F16/BF16/F32), else in memory the checkpoint owns (repacked
// group quantization, F32 copies of norms). Views stay valid as long as the
// checkpoint.
//
// Thread-safety: Open and Weight run on one thread (model load); the
// accessors are immutable afterwards.
#ifndef TESSERA_WORKER_MODEL_CHECKPOINT_H_
#define TESSERA_WORKER_MODEL_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/model/llama_config.h"
#include "worker/tokenizer/tokenizer_spec.h"

namespace tessera {

// The weights of the Llama graph. Layer roles take a layer index; the others
// ignore it.
enum class WeightRole {
  kTokenEmbd, kOutputNorm, kOutput, kRopeFreqs,
  kAttnNorm, kQ, kK, kV, kO, kQBias, kKBias, kVBias, kFfnNorm, kGate, kUp, kDown,
};
std::string_view WeightRoleName(WeightRole role);

struct CheckpointInfo {
  std::string format;        // "gguf" or "hf"
  std::string quantization;  // "awq", "gptq", "compressed-tensors"; empty for GGUF and dense HF
  int bits = 0;              // of the quantized linear layers; 0 if none
  int group_size = 0;        // -1: one group per output channel
  std::string weight_type;   // what most weight bytes are: "Q4_1", "F16", "awq-int4-g128"...
  std::string description;   // one line for logs
};

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;

  virtual const CheckpointInfo& info() const = 0;
  // Validated; n_vocab is the embedding's row count.
  virtual const LlamaConfig& config() const = 0;
  virtual const TokenizerSpec& tokenizer_spec() const = 0;
  // The Jinja chat template, if the checkpoint has one.
  virtual const std::optional<std::string>& chat_template() const = 0;

  // The weight of `role` (of `layer` for layer roles), or NotFound if the
  // checkpoint lacks it (kOutput with tied embeddings, kRopeFreqs, biases).
  // Matrices are [rows = output features][cols = input features]; vectors
  // have rows == 1. Errors name the tensor and what is wrong with it.
  virtual absl::StatusOr<WeightView> Weight(WeightRole role, int layer) = 0;
};

struct CheckpointFormat {
  std::string_view name;
  // Cheap: whether `path` looks like this format (extension, magic, files).
  bool (*probe)(const std::string& path);
  absl::StatusOr<std::unique_ptr<Checkpoint>> (*open)(const std::string& path);
};

// The registered formats, probed in order.
std::span<const CheckpointFormat> CheckpointFormats();

// Opens `path` with the first format whose probe accepts it; InvalidArgument
// naming the formats if none does.
absl::StatusOr<std::unique_ptr<Checkpoint>> OpenCheckpoint(const std::string& path);

// A GGUF image in memory (synthetic models); the checkpoint owns it.
absl::StatusOr<std::unique_ptr<Checkpoint>> GgufCheckpointFromImage(std::vector<uint8_t> image);

// Format entry points (one file each).
bool ProbeGgufCheckpoint(const std::string& path);
absl::StatusOr<std::unique_ptr<Checkpoint>> OpenGgufCheckpoint(const std::string& path);
bool ProbeHfCheckpoint(const std::string& path);
absl::StatusOr<std::unique_ptr<Checkpoint>> OpenHfCheckpoint(const std::string& path);

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_CHECKPOINT_H_
