#include "worker/model/model_bundle.h"

#include "absl/strings/numbers.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/model/synthetic_model.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

#ifndef TESSERA_MODEL_DIR
#define TESSERA_MODEL_DIR "models"
#endif

namespace tessera {

std::string DefaultModelPath() {
  if (const char* env = std::getenv("TESSERA_MODEL"); env != nullptr && *env != '\0') return env;
  return std::string(TESSERA_MODEL_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

absl::StatusOr<std::vector<int32_t>> ModelBundle::EncodeChat(const nlohmann::ordered_json& messages,
                                                             bool add_generation_prompt) const {
  if (!chat_template) return absl::FailedPreconditionError("the model has no chat template (tokenizer.chat_template)");
  TESSERA_ASSIGN_OR_RETURN(jinja::RenderedText r, chat_template->ApplyWithProvenance(messages, add_generation_prompt));
  EncodeOptions options{.add_special = true, .parse_special = true};
  if (!chat_content_special_tokens) options.untrusted = &r.untrusted;
  return tokenizer->Encode(r.text, options);
}

absl::StatusOr<std::vector<int32_t>> ModelBundle::EncodeChatPrompt(const std::string& user_message) const {
  return EncodeChat(nlohmann::ordered_json::array({{{"role", "user"}, {"content", user_message}}}),
                    /*add_generation_prompt=*/true);
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const ModelBundleOptions& options) {
  if (options.device == "cpu") return CreateCpuBackend({.threads = options.threads});
  if (options.device == "cuda" || options.device.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (options.device.size() > 5 && !absl::SimpleAtoi(options.device.substr(5), &index)) {
      return absl::InvalidArgumentError(absl::StrCat("device '", options.device, "' is not cuda:N"));
    }
    return CreateCudaBackend({.device = index});
  }
  return absl::InvalidArgumentError(absl::StrCat("device must be cpu, cuda or cuda:N; got '", options.device, "'"));
}

namespace {

// The ranks' backends and communicators: CPU ranks (each with its share of
// the threads) joined by Gloo over loopback, or CUDA devices 0..N-1 by NCCL.
absl::Status CreateTensorParallelRanks(const ModelBundleOptions& options, ModelBundle& b) {
  const int tp = options.tensor_parallel_size;
  CommunicatorOptions co;
  co.timeout = std::chrono::milliseconds(options.collective_timeout_ms);
  std::vector<std::unique_ptr<Backend>> backends;
  if (options.device == "cpu") {
    const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
    for (int r = 0; r < tp; ++r) backends.push_back(CreateCpuBackend({.threads = std::max(1, threads / tp)}));
    TESSERA_ASSIGN_OR_RETURN(b.communicators, CreateLocalGlooGroup(tp, co));
  } else if (options.device == "cuda") {
    std::vector<int> devices;
    for (int r = 0; r < tp; ++r) {
      devices.push_back(r);
      TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateCudaBackend({.device = r}));
      backends.push_back(std::move(backend));
    }
    TESSERA_ASSIGN_OR_RETURN(b.communicators, CreateNcclGroup(devices, co));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel_size ", tp, " takes device cpu or cuda (devices 0..",
                                                   tp - 1, "); got '", options.device, "'"));
  }
  b.tensor_parallel = std::make_unique<TensorParallelGroup>();
  b.tensor_parallel->timeout = co.timeout;
  for (int r = 0; r < tp; ++r) {
    b.tensor_parallel->backends.push_back(backends[r].get());
    b.tensor_parallel->communicators.push_back(b.communicators[r].get());
  }
  b.backend = std::move(backends[0]);
  for (int r = 1; r < tp; ++r) b.rank_backends.push_back(std::move(backends[r]));
  return absl::OkStatus();
}

// Everything after the checkpoint is open: backend, model, tokenizer, template.
absl::Status Assemble(ModelBundle* b, const std::string& path, const ModelBundleOptions& options) {
  auto in_path = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  };
  b->chat_content_special_tokens = options.chat_content_special_tokens;
  LlamaModelOptions mo;
  mo.max_batch_tokens = options.max_batch_tokens;
  mo.max_logit_rows = std::min(options.max_logit_rows, options.max_batch_tokens);
  const int tp = options.tensor_parallel_size;
  if (tp < 1 || tp > 64) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel_size must be in [1, 64]; got ", tp));
  }
  if (tp == 1) {
    TESSERA_ASSIGN_OR_RETURN(b->backend, CreateBackend(options));
  } else {
    TESSERA_RETURN_IF_ERROR(CreateTensorParallelRanks(options, *b));
    mo.tensor_parallel = b->tensor_parallel.get();
  }
  auto model = LlamaModel::Load(*b->checkpoint, *b->backend, mo);
  if (!model.ok()) return in_path(model.status());
  b->model = std::move(*model);
  auto tok = Tokenizer::Create(b->checkpoint->tokenizer_spec());
  if (!tok.ok()) return in_path(tok.status());
  b->tokenizer = std::move(*tok);
  if (b->tokenizer->vocab_size() != b->model->config().n_vocab) {
    return in_path(absl::InvalidArgumentError(absl::StrCat("tokenizer has ", b->tokenizer->vocab_size(),
                                                           " tokens but the embedding has ",
                                                           b->model->config().n_vocab, " rows")));
  }
  const bool overridden = options.chat_template_override.has_value();
  const std::optional<std::string>& src =
      overridden ? options.chat_template_override : b->checkpoint->chat_template();
  if (src.has_value()) {
    const Tokenizer& t = *b->tokenizer;
    std::string bos = t.bos_id() >= 0 ? t.TokenText(t.bos_id()) : "";
    std::string eos = t.eos_id() >= 0 ? t.TokenText(t.eos_id()) : "";
    auto ct = ChatTemplate::Create(*src, bos, eos);
    if (!ct.ok()) {
      if (!overridden) return in_path(ct.status());
      return absl::Status(ct.status().code(), absl::StrCat(options.chat_template_origin, ": ", ct.status().message()));
    }
    b->chat_template = std::move(*ct);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelBundle>> LoadModelBundle(const std::string& path,
                                                             const ModelBundleOptions& options) {
  auto b = std::make_unique<ModelBundle>();
  TESSERA_ASSIGN_OR_RETURN(b->checkpoint, OpenCheckpoint(path));
  TESSERA_RETURN_IF_ERROR(Assemble(b.get(), path, options));
  return b;
}

absl::StatusOr<std::unique_ptr<ModelBundle>> LoadSyntheticModelBundle(const std::string& spec,
                                                                      const std::string& weight_type,
                                                                      const ModelBundleOptions& options) {
  TESSERA_ASSIGN_OR_RETURN(GgmlType type, ParseWeightType(weight_type));
  auto b = std::make_unique<ModelBundle>();
  TESSERA_ASSIGN_OR_RETURN(std::vector<uint8_t> image, BuildSyntheticModel(spec, type));
  TESSERA_ASSIGN_OR_RETURN(b->checkpoint, GgufCheckpointFromImage(std::move(image)));
  TESSERA_RETURN_IF_ERROR(Assemble(b.get(), "synthetic:" + spec, options));
  return b;
}

}  // namespace tessera
