#include "worker/chat/chat_template.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(const std::string& source, std::string bos,
                                                                   std::string eos) {
  std::unique_ptr<ChatTemplate> t(new ChatTemplate());
  TESSERA_ASSIGN_OR_RETURN(t->template_, jinja::Template::Compile(source));
  t->bos_ = std::move(bos);
  t->eos_ = std::move(eos);
  TESSERA_RETURN_IF_ERROR(t->Validate());
  return t;
}

absl::Status ChatTemplate::Validate() const {
  // Many templates refuse a system turn (raise_exception); a template that
  // can render neither conversation cannot serve any chat request.
  const nlohmann::ordered_json with_system = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi. How can I help?"},
    {"role": "user", "content": "Say something short."}])");
  const nlohmann::ordered_json without_system(with_system.begin() + 1, with_system.end());
  absl::Status first = Apply(with_system, /*add_generation_prompt=*/true).status();
  if (first.ok()) return first;
  absl::Status second = Apply(without_system, /*add_generation_prompt=*/true).status();
  if (second.ok()) return second;
  if (first.message() == second.message()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template cannot render a sample conversation: ", second.message()));
  }
  return absl::InvalidArgumentError(absl::StrCat("chat template cannot render a sample conversation: with a system turn: ",
                                                 first.message(), "; without one: ", second.message()));
}

absl::StatusOr<std::string> ChatTemplate::Apply(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                                const nlohmann::ordered_json& extra) const {
  TESSERA_ASSIGN_OR_RETURN(jinja::RenderedText r, ApplyWithProvenance(messages, add_generation_prompt, extra));
  return std::move(r.text);
}

absl::StatusOr<jinja::RenderedText> ChatTemplate::ApplyWithProvenance(const nlohmann::ordered_json& messages,
                                                                      bool add_generation_prompt,
                                                                      const nlohmann::ordered_json& extra) const {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be an array");
  jinja::Value ctx = jinja::Value::Dict({});
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) {
      ctx.Set(it.key(), jinja::Value::FromJson(it.value(), /*untrusted=*/true));
    }
  }
  ctx.Set("messages", jinja::Value::FromJson(messages, /*untrusted=*/true));
  ctx.Set("add_generation_prompt", jinja::Value(add_generation_prompt));
  ctx.Set("bos_token", jinja::Value(bos_));
  ctx.Set("eos_token", jinja::Value(eos_));
  absl::StatusOr<jinja::RenderedText> text = template_->RenderWithProvenance(ctx);
  // Past a limit the template did not fail by itself: this conversation is
  // too big for it. That is the request's problem (400), not a reason to
  // retry (which ResourceExhausted, 429, would invite).
  if (text.status().code() == absl::StatusCode::kResourceExhausted) {
    return absl::InvalidArgumentError(text.status().message());
  }
  return text;
}

}  // namespace tessera
