// Hugging Face tokenizer files -> TokenizerSpec: tokenizer.json (the
// `tokenizers` library's format) and tokenizer_config.json (transformers':
// special token names, add_bos/eos overrides, the chat template).
//
// Supported tokenizer.json: model BPE (merges as "a b" strings or [a, b]
// pairs; byte_fallback, fuse_unk, ignore_merges); byte-level pipelines with
// the GPT-2, SmolLM (Digits + ByteLevel), Llama 3 and Qwen2 pre-tokenizers;
// SentencePiece-style pipelines (Prepend/Replace normalizer or Metaspace);
// NFC normalizer; added_tokens with special/lstrip/rstrip/single_word;
// TemplateProcessing post-processors for BOS/EOS. Anything else is refused
// with a message naming it, never approximated.
#ifndef TESSERA_WORKER_TOKENIZER_HF_TOKENIZER_H_
#define TESSERA_WORKER_TOKENIZER_HF_TOKENIZER_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/model_dir.h"
#include "worker/tokenizer/tokenizer_spec.h"

namespace tessera {

struct HfTokenizer {
  TokenizerSpec spec;
  std::optional<std::string> chat_template;
};

// From the texts of tokenizer.json and tokenizer_config.json (empty if
// absent) and, if non-empty, a separate chat template file's text.
absl::StatusOr<HfTokenizer> ParseHfTokenizer(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                                             std::string_view chat_template_file = {});

// Reads tokenizer.json, tokenizer_config.json and chat_template.jinja (the
// last two optional) from `dir`, each a regular file inside it, within size
// limits.
absl::StatusOr<HfTokenizer> ReadHfTokenizer(const ModelDirectory& dir);

}  // namespace tessera

#endif  // TESSERA_WORKER_TOKENIZER_HF_TOKENIZER_H_
