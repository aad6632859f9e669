// ChatTemplate: renders a conversation with the model's own
// tokenizer.chat_template, the way Hugging Face's apply_chat_template does
// (trim_blocks, lstrip_blocks, loop controls; bos_token, eos_token,
// add_generation_prompt in the context).
//
// Thread-safety: immutable; Apply may run concurrently.
#ifndef TESSERA_WORKER_CHAT_CHAT_TEMPLATE_H_
#define TESSERA_WORKER_CHAT_CHAT_TEMPLATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/chat/jinja_interpreter.h"

namespace tessera {

class ChatTemplate {
 public:
  // Compiles the template and renders a small sample conversation with it,
  // so that a template that cannot render (or runs past the interpreter's
  // limits) stops the model from loading, with the reason, rather than
  // failing every chat request.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(const std::string& source, std::string bos_token,
                                                              std::string eos_token);
  // `messages` is an array of {"role": ..., "content": ...} objects (content
  // a string, or an array of {"type":"text","text":...} parts).
  // `extra` (an object or null) adds variables such as tools.
  absl::StatusOr<std::string> Apply(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                    const nlohmann::ordered_json& extra = nullptr) const;
  // The same, with the byte ranges that came from `messages` and `extra`
  // (every string and key in them is request text) marked: a tokenizer must
  // not read control tokens there (see EncodeOptions::untrusted).
  absl::StatusOr<jinja::RenderedText> ApplyWithProvenance(const nlohmann::ordered_json& messages,
                                                          bool add_generation_prompt,
                                                          const nlohmann::ordered_json& extra = nullptr) const;

 private:
  absl::Status Validate() const;

  std::unique_ptr<jinja::Template> template_;
  std::string bos_, eos_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_CHAT_CHAT_TEMPLATE_H_
