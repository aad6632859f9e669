#include "worker/model/model_bundle.h"

#include "absl/strings/numbers.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/model/synthetic_model.h"

#include <algorithm>
#include <cstdlib>

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

// Everything after the checkpoint is open: backend, model, tokenizer, template.
absl::Status Assemble(ModelBundle* b, const std::string& path, const ModelBundleOptions& options) {
  auto in_path = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  };
  b->chat_content_special_tokens = options.chat_content_special_tokens;
  TESSERA_ASSIGN_OR_RETURN(b->backend, CreateBackend(options));
  LlamaModelOptions mo;
  mo.max_batch_tokens = options.max_batch_tokens;
  mo.max_logit_rows = std::min(options.max_logit_rows, options.max_batch_tokens);
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
