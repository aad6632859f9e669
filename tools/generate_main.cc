// tessera-generate: run the model once from the command line.
//
//   tessera-generate [--model PATH] (--prompt TEXT | --chat TEXT | --tokenize TEXT)
//                    [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--threads N]
//
// --prompt continues raw text; --chat wraps one user message in the model's
// chat template; both print only the generated text. --tokenize prints the
// token ids of TEXT (no BOS, special-looking text tokenized as plain text).
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "common/command_line.h"
#include "common/flag_names.h"
#include "worker/engine/generate.h"
#include "worker/lora/device_lora.h"
#include "worker/lora/lora_adapter.h"
#include "worker/model/model_bundle.h"

ABSL_FLAG(std::string, model, "", "GGUF model file (default: the bundled SmolLM2-135M-Instruct)");
ABSL_FLAG(std::optional<std::string>, prompt, std::nullopt, "raw text to continue");
ABSL_FLAG(std::optional<std::string>, chat, std::nullopt, "one user message, wrapped in the chat template");
ABSL_FLAG(std::optional<std::string>, tokenize, std::nullopt, "print the token ids of this text and exit");
ABSL_FLAG(bool, chat_content_special_tokens, false,
          "let control-token text in the --chat message become control tokens (unsafe; the old behaviour)");
ABSL_FLAG(int, max_tokens, 128, "maximum tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature (0 = greedy)");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass");
ABSL_FLAG(int, top_k, 0, "top-k sampling (0 = off)");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt, "random seed (same seed, same output)");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = all)");
ABSL_FLAG(int, tensor_parallel_size, 1, "ranks the model is split over (CPU ranks on cpu, GPUs 0..N-1 on cuda)");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(std::string, lora, "", "a PEFT LoRA adapter directory to apply (default: none)");
ABSL_FLAG(int, max_lora_rank, 64, "largest adapter rank accepted");
ABSL_FLAG(std::string, lora_dtype, "auto",
          "with --lora: storage type of the adapter weights (auto: as the worker stores them; float32, float16, bfloat16)");
ABSL_FLAG(std::string, format, "text", "output: 'text' (the generated text) or 'json' (text, token ids, finish reason)");

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "tessera-generate: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const tessera::CommandLine cl = tessera::ParseCommandLine(
      argc, argv,
      "tessera-generate [--model PATH] (--prompt TEXT | --chat TEXT | --tokenize TEXT) "
      "[--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--threads N] [--lora DIR]");
  const std::vector<char*>& rest = cl.positional;
  if (rest.size() > 1) return Fail(std::string("unexpected argument '") + rest[1] + "'");
  const int modes = absl::GetFlag(FLAGS_prompt).has_value() + absl::GetFlag(FLAGS_chat).has_value() +
                    absl::GetFlag(FLAGS_tokenize).has_value();
  if (modes != 1) return Fail("exactly one of --prompt, --chat or --tokenize is required");
  if (absl::GetFlag(FLAGS_threads) < 0) return Fail("--threads must be >= 0");
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format != "text" && format != "json") return Fail("--format must be 'text' or 'json'");
  const bool json = format == "json";

  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) path = tessera::DefaultModelPath();
  tessera::ModelBundleOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  options.device = absl::GetFlag(FLAGS_device);
  options.tensor_parallel_size = absl::GetFlag(FLAGS_tensor_parallel_size);
  options.chat_content_special_tokens = absl::GetFlag(FLAGS_chat_content_special_tokens);
  auto bundle = tessera::LoadModelBundle(path, options);
  if (!bundle.ok()) return Fail(std::string(bundle.status().message()));
  tessera::ModelBundle& b = **bundle;

  if (auto text = absl::GetFlag(FLAGS_tokenize)) {
    std::vector<int32_t> ids = b.tokenizer->Encode(*text, {.add_special = false, .parse_special = false});
    std::printf("%s\n", absl::StrJoin(ids, " ").c_str());
    return 0;
  }

  tessera::GenerateRequest req;
  if (auto p = absl::GetFlag(FLAGS_prompt)) {
    req.prompt = b.tokenizer->Encode(*p, {.add_special = true, .parse_special = false});
  } else {
    auto chat = b.EncodeChatPrompt(*absl::GetFlag(FLAGS_chat));
    if (!chat.ok()) return Fail(std::string(chat.status().message()));
    req.prompt = std::move(*chat);
  }
  req.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  req.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  req.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  req.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  req.sampling.seed = absl::GetFlag(FLAGS_seed);

  const auto& cfg = b.model->config();
  const int64_t need = static_cast<int64_t>(req.prompt.size()) + std::max(req.max_tokens, 0);
  if (need > cfg.n_ctx_train) {
    return Fail("prompt (" + std::to_string(req.prompt.size()) + " tokens) plus --max-tokens (" +
                std::to_string(req.max_tokens) + ") exceeds the model's context of " +
                std::to_string(cfg.n_ctx_train) + " tokens");
  }
  tessera::KvCacheOptions kv;
  kv.block_size = 16;
  kv.num_blocks = (need + kv.block_size - 1) / kv.block_size;
  auto cache = b.model->CreateKvCache(kv);
  if (!cache.ok()) return Fail(std::string(cache.status().message()));
  std::unique_ptr<tessera::DeviceLora> lora;
  if (const std::string dir = absl::GetFlag(FLAGS_lora); !dir.empty()) {
    auto dtype = tessera::ResolveLoraDtype(absl::GetFlag(FLAGS_lora_dtype), false, false);
    if (!dtype.ok()) return Fail(std::string(dtype.status().message()));
    auto adapter = tessera::LoraAdapter::Load("cli", dir, cfg, absl::GetFlag(FLAGS_max_lora_rank), *dtype);
    if (!adapter.ok()) return Fail(std::string(adapter.status().message()));
    auto device = tessera::DeviceLora::UploadFor(**adapter, *b.model);
    if (!device.ok()) return Fail(std::string(device.status().message()));
    lora = std::move(*device);
  }
  auto result = tessera::Generate(*b.model, *b.tokenizer, **cache, req, [json](const tessera::StreamEvent& e) {
    if (!json && !e.text.empty()) {
      std::fwrite(e.text.data(), 1, e.text.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  }, lora.get());
  if (!result.ok()) return Fail(std::string(result.status().message()));
  if (json) {
    nlohmann::json out{{"text", result->text},
                       {"prompt_token_ids", req.prompt},
                       {"token_ids", result->tokens},
                       {"finish_reason", result->finish == tessera::FinishReason::kStop ? "stop" : "length"}};
    // Each rank's shard and the bytes of weights it multiplies (the split
    // matrices' slices plus the replicated embedding, norms and output).
    const tessera::LlamaModel& m = *b.model;
    out["tensor_parallel"] = nlohmann::json::array();
    for (int r = 0; r < m.tensor_parallel_size(); ++r) {
      const tessera::RankShard& s = m.shard(r);
      out["tensor_parallel"].push_back({{"heads", {s.q_head_begin, s.q_head_end}},
                                        {"kv_heads", {s.kv_head_begin, s.kv_head_end}},
                                        {"ff", {s.ff_begin, s.ff_end}},
                                        {"weight_bytes", m.rank_weight_bytes(r)},
                                        {"replicated_bytes", m.replicated_weight_bytes()}});
    }
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::fputc('\n', stdout);
  }
  return 0;
}
