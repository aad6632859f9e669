// ModelBundle: everything a worker loads from one checkpoint (a GGUF file or
// a Hugging Face directory): the checkpoint, the model over a backend, its
// tokenizer and its chat template.
#ifndef TESSERA_WORKER_MODEL_MODEL_BUNDLE_H_
#define TESSERA_WORKER_MODEL_MODEL_BUNDLE_H_

#include <memory>
#include <optional>
#include <vector>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/chat/chat_template.h"
#include "worker/model/checkpoint.h"
#include "worker/model/llama_model.h"
#include "worker/tokenizer/tokenizer.h"

namespace tessera {

// The bundled model: $TESSERA_MODEL if set, else the file `make setup`
// installs under the source tree's models/ directory.
std::string DefaultModelPath();

struct ModelBundle {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<Backend> backend;
  // Under tensor parallelism: ranks 1..N-1's backends, every rank's
  // communicator, and the group the model runs over (declared before the
  // model so that they outlive it).
  std::vector<std::unique_ptr<Backend>> rank_backends;
  std::vector<std::unique_ptr<Communicator>> communicators;
  std::unique_ptr<TensorParallelGroup> tensor_parallel;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chat_template;  // null if the file has none

  // The prompt token ids of a conversation ([{"role", "content"}...],
  // rendered with the chat template). Only the template's own text
  // may produce control tokens; text from `messages` is encoded as plain
  // text wherever the template puts it, so a user cannot close their turn
  // or open a system turn by typing the markers.
  absl::StatusOr<std::vector<int32_t>> EncodeChat(const nlohmann::ordered_json& messages,
                                                  bool add_generation_prompt) const;
  absl::StatusOr<std::vector<int32_t>> EncodeChatPrompt(const std::string& user_message) const;

  // The unsafe behaviour of vLLM and llama-server, for compatibility: the
  // rendered chat is encoded with control tokens matched everywhere,
  // message content included. Off unless asked for.
  bool chat_content_special_tokens = false;
};

struct ModelBundleOptions {
  std::string device = "cpu";  // cpu, cuda or cuda:N
  int threads = 0;             // CPU threads in all (split over the ranks)
  // Ranks the model is split over: CPU ranks on "cpu", devices 0..N-1 on
  // "cuda" (NCCL). 1: no split.
  int tensor_parallel_size = 1;
  // A collective that has not completed by then ends the step with an error.
  int collective_timeout_ms = 30000;
  int max_batch_tokens = 512;
  int max_logit_rows = 64;  // at most max_batch_tokens
  // Replaces the checkpoint's chat template when set (the text of a Jinja
  // template, e.g. from --chat-template FILE); it is validated the same way.
  std::optional<std::string> chat_template_override;
  std::string chat_template_origin;  // names the override in errors
  bool chat_content_special_tokens = false;  // see ModelBundle
};

// `path`: a GGUF file or a Hugging Face checkpoint directory.
absl::StatusOr<std::unique_ptr<ModelBundle>> LoadModelBundle(const std::string& path,
                                                             const ModelBundleOptions& options = {});
// A synthetic model (worker/model/synthetic_model.h) of `spec`'s shapes with
// weights in `weight_type` (e.g. "q4_k").
absl::StatusOr<std::unique_ptr<ModelBundle>> LoadSyntheticModelBundle(const std::string& spec,
                                                                      const std::string& weight_type,
                                                                      const ModelBundleOptions& options = {});

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_MODEL_BUNDLE_H_
