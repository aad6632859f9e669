// tessera-lora: checks a PEFT LoRA adapter against a base model with the
// worker's own loader (the same validation as at serving time).
//
//   tessera-lora [--model PATH] [--max-lora-rank N] DIR
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/command_line.h"
#include "common/flag_names.h"
#include "common/gguf/gguf_file.h"
#include "worker/lora/lora_adapter.h"
#include "worker/model/model_bundle.h"

ABSL_FLAG(std::string, model, "", "base model: a GGUF file or a Hugging Face directory (default: the bundled model)");
ABSL_FLAG(int, max_lora_rank, 64, "largest accepted rank");

int main(int argc, char** argv) {
  const tessera::CommandLine cl =
      tessera::ParseCommandLine(argc, argv, "tessera-lora [--model PATH] [--max-lora-rank N] DIR");
  const std::vector<char*>& rest = cl.positional;
  if (rest.size() != 2) {
    std::fprintf(stderr, "usage: tessera-lora [--model PATH] [--max-lora-rank N] DIR\n");
    return 2;
  }
  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) path = tessera::DefaultModelPath();
  auto checkpoint = tessera::OpenCheckpoint(path);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "tessera-lora: %s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  const tessera::LlamaConfig* config = &(*checkpoint)->config();
  const std::string dir = rest[1];
  const std::string name = std::filesystem::path(dir).filename().string();
  auto adapter = tessera::LoraAdapter::Load(name, dir, *config, absl::GetFlag(FLAGS_max_lora_rank));
  if (!adapter.ok()) {
    std::fprintf(stderr, "tessera-lora: %s: %s\n", dir.c_str(), std::string(adapter.status().message()).c_str());
    return 1;
  }
  int modules = 0;
  for (int l = 0; l < config->n_layers; ++l)
    for (int k = 0; k < tessera::kLoraTargets; ++k) modules += (*adapter)->weights(l, static_cast<tessera::LoraTarget>(k)) != nullptr;
  std::printf("%s: rank %d, alpha %g%s, %d adapted projections, %.1f MiB\n", name.c_str(), (*adapter)->config().rank,
              (*adapter)->config().alpha, (*adapter)->config().use_rslora ? " (rsLoRA)" : "", modules,
              (*adapter)->bytes() / 1048576.0);
  return 0;
}
