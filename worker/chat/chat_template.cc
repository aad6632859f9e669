#include "worker/chat/chat_template.h"

#include "common/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(const std::string& source, std::string bos,
                                                                   std::string eos) {
  std::unique_ptr<ChatTemplate> t(new ChatTemplate());
  TESSERA_ASSIGN_OR_RETURN(t->template_, jinja::Template::Compile(source));
  t->bos_ = std::move(bos);
  t->eos_ = std::move(eos);
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Apply(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                                const nlohmann::ordered_json& extra) const {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be an array");
  jinja::Value ctx = jinja::Value::Dict({});
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) ctx.Set(it.key(), jinja::Value::FromJson(it.value()));
  }
  ctx.Set("messages", jinja::Value::FromJson(messages));
  ctx.Set("add_generation_prompt", jinja::Value(add_generation_prompt));
  ctx.Set("bos_token", jinja::Value(bos_));
  ctx.Set("eos_token", jinja::Value(eos_));
  return template_->Render(ctx);
}

}  // namespace tessera
