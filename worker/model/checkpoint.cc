#include "worker/model/checkpoint.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"

namespace tessera {

std::string_view WeightRoleName(WeightRole role) {
  switch (role) {
    case WeightRole::kTokenEmbd: return "token embedding";
    case WeightRole::kOutputNorm: return "output norm";
    case WeightRole::kOutput: return "output projection";
    case WeightRole::kRopeFreqs: return "rope frequency factors";
    case WeightRole::kAttnNorm: return "attention norm";
    case WeightRole::kQ: return "q projection";
    case WeightRole::kK: return "k projection";
    case WeightRole::kV: return "v projection";
    case WeightRole::kO: return "o projection";
    case WeightRole::kQBias: return "q bias";
    case WeightRole::kKBias: return "k bias";
    case WeightRole::kVBias: return "v bias";
    case WeightRole::kFfnNorm: return "feed-forward norm";
    case WeightRole::kGate: return "gate projection";
    case WeightRole::kUp: return "up projection";
    case WeightRole::kDown: return "down projection";
  }
  return "unknown";
}

std::span<const CheckpointFormat> CheckpointFormats() {
  static const CheckpointFormat kFormats[] = {
      {"gguf", ProbeGgufCheckpoint, OpenGgufCheckpoint},
      {"hf", ProbeHfCheckpoint, OpenHfCheckpoint},
  };
  return kFormats;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenCheckpoint(const std::string& path) {
  std::vector<std::string> names;
  for (const CheckpointFormat& f : CheckpointFormats()) {
    if (f.probe(path)) return f.open(path);
    names.emplace_back(f.name);
  }
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("cannot open '", EscapeForMessage(path, 512), "': no such file or directory"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "'", EscapeForMessage(path, 512), "' is neither a GGUF file nor a Hugging Face checkpoint directory ",
      "(config.json with model.safetensors or model.safetensors.index.json); formats: ", absl::StrJoin(names, ", ")));
}

}  // namespace tessera
