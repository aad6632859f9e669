// tessera-logits: the model's next-token logits after a prompt, as JSON.
// A testing and debugging aid: the oracle tests compare it with llama.cpp.
//
//   tessera-logits [--model PATH] (--text TEXT [--special] | --chat TEXT | --ids "1 2 3")
//                  [--top N] [--full]
#include <cstdio>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/command_line.h"
#include "common/flag_names.h"
#include "nlohmann/json.hpp"
#include "worker/engine/generate.h"
#include "worker/lora/device_lora.h"
#include "worker/lora/lora_adapter.h"
#include "worker/model/model_bundle.h"

ABSL_FLAG(std::string, model, "", "GGUF file or Hugging Face directory (default: the bundled model)");
ABSL_FLAG(int, prompt_length, 0,
          "with --rows-out: the first N tokens are the prompt, the rest are fed one at a time as generation would");
ABSL_FLAG(std::string, rows_out, "",
          "write the logits after every prefix of at least --prompt-length tokens to this file (float32, row-major)");
ABSL_FLAG(std::optional<std::string>, text, std::nullopt, "prompt text");
ABSL_FLAG(std::optional<std::string>, chat, std::nullopt, "one user message, wrapped in the chat template");
ABSL_FLAG(std::optional<std::string>, ids, std::nullopt, "prompt token ids, space-separated");
ABSL_FLAG(bool, special, false, "with --text: parse special tokens and add BOS as the model asks");
ABSL_FLAG(int, top, 10, "how many top logits to print");
ABSL_FLAG(bool, full, false, "print every logit");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = all)");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(int, tensor_parallel_size, 1, "ranks the model is split over (CPU ranks on cpu, GPUs 0..N-1 on cuda)");
ABSL_FLAG(std::string, lora, "", "with --rows-out: a PEFT LoRA adapter directory to apply");
ABSL_FLAG(std::string, lora_dtype, "auto",
          "with --lora: storage type of the adapter weights (auto: as the worker stores them; float32, float16, bfloat16)");

int main(int argc, char** argv) {
  tessera::ParseCommandLine(argc, argv,
                            "tessera-logits [--model PATH] (--text TEXT [--special] | --chat TEXT | --ids \"1 2 3\") "
                            "[--top N] [--full] [--prompt-length N --rows-out FILE [--lora DIR]]");
  auto fail = [](absl::string_view m) {
    std::fprintf(stderr, "tessera-logits: %.*s\n", static_cast<int>(m.size()), m.data());
    return 1;
  };
  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) path = tessera::DefaultModelPath();
  auto bundle = tessera::LoadModelBundle(path, {.device = absl::GetFlag(FLAGS_device),
                                                .threads = absl::GetFlag(FLAGS_threads),
                                                .tensor_parallel_size = absl::GetFlag(FLAGS_tensor_parallel_size)});
  if (!bundle.ok()) return fail(bundle.status().message());
  tessera::ModelBundle& b = **bundle;
  std::vector<int32_t> ids;
  if (auto t = absl::GetFlag(FLAGS_text)) {
    const bool sp = absl::GetFlag(FLAGS_special);
    ids = b.tokenizer->Encode(*t, {.add_special = sp, .parse_special = sp});
  } else if (auto c = absl::GetFlag(FLAGS_chat)) {
    auto prompt = b.EncodeChatPrompt(*c);
    if (!prompt.ok()) return fail(prompt.status().message());
    ids = std::move(*prompt);
  } else if (auto s = absl::GetFlag(FLAGS_ids)) {
    for (absl::string_view part : absl::StrSplit(*s, ' ', absl::SkipEmpty())) {
      int32_t v;
      if (!absl::SimpleAtoi(part, &v)) return fail("bad --ids");
      ids.push_back(v);
    }
  } else {
    return fail("one of --text, --chat or --ids is required");
  }
  const auto& cfg = b.model->config();
  tessera::KvCacheOptions kv;
  kv.num_blocks = (static_cast<int64_t>(ids.size()) + kv.block_size) / kv.block_size;
  auto cache = b.model->CreateKvCache(kv);
  if (!cache.ok()) return fail(cache.status().message());
  if (const std::string rows_out = absl::GetFlag(FLAGS_rows_out); !rows_out.empty()) {
    std::unique_ptr<tessera::DeviceLora> lora;
    if (const std::string dir = absl::GetFlag(FLAGS_lora); !dir.empty()) {
      auto dtype = tessera::ResolveLoraDtype(absl::GetFlag(FLAGS_lora_dtype), false, false);
      if (!dtype.ok()) return fail(dtype.status().message());
      auto adapter = tessera::LoraAdapter::Load("cli", dir, cfg, 64, *dtype);
      if (!adapter.ok()) return fail(adapter.status().message());
      auto device = tessera::DeviceLora::UploadFor(**adapter, *b.model);
      if (!device.ok()) return fail(device.status().message());
      lora = std::move(*device);
    }
    auto rows = tessera::SequenceLogits(*b.model, **cache, ids, static_cast<size_t>(absl::GetFlag(FLAGS_prompt_length)),
                                        lora.get());
    if (!rows.ok()) return fail(rows.status().message());
    FILE* f = std::fopen(rows_out.c_str(), "wb");
    if (f == nullptr) return fail("cannot write --rows-out");
    for (const auto& r : *rows) std::fwrite(r.data(), sizeof(float), r.size(), f);
    std::fclose(f);
    std::printf("%s\n", nlohmann::json{{"rows", rows->size()}, {"n_vocab", cfg.n_vocab}}.dump().c_str());
    return 0;
  }
  auto logits = tessera::PromptLogits(*b.model, **cache, ids);
  if (!logits.ok()) return fail(logits.status().message());
  std::vector<int32_t> order(logits->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  const int top = std::min<int>(absl::GetFlag(FLAGS_top), static_cast<int>(order.size()));
  std::partial_sort(order.begin(), order.begin() + top, order.end(),
                    [&](int32_t a, int32_t c) { return (*logits)[a] > (*logits)[c]; });
  nlohmann::json out;
  out["tokens"] = ids;
  nlohmann::json tops = nlohmann::json::array();
  for (int i = 0; i < top; ++i) tops.push_back({order[i], (*logits)[order[i]]});
  out["top"] = tops;
  if (absl::GetFlag(FLAGS_full)) out["logits"] = *logits;
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
