// Pre-tokenizers: split text into the pieces that byte-level BPE merges
// within. Each variant is a hand-written matcher equivalent to its model's
// regular expression (the regexes use \p{L}, \p{N} and look-ahead, which
// std::regex lacks); the tests hold them to llama.cpp's splits.
#ifndef TESSERA_WORKER_TOKENIZER_PRE_TOKENIZER_H_
#define TESSERA_WORKER_TOKENIZER_PRE_TOKENIZER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

enum class PreTokenizer {
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kSmolLm,  // each \p{N} alone, then kGpt2
  kLlama3,  // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,   // as kLlama3 with \p{N} (one digit per piece)
};

// Maps GGUF tokenizer.ggml.pre to a variant; unknown names are an error that
// names them.
absl::StatusOr<PreTokenizer> PreTokenizerFromName(std::string_view name);

// Splits `text`; the pieces concatenate back to `text`.
std::vector<std::string_view> PreTokenize(PreTokenizer kind, std::string_view text);

}  // namespace tessera

#endif  // TESSERA_WORKER_TOKENIZER_PRE_TOKENIZER_H_
