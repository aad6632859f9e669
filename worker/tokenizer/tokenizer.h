// Tokenizer: text <-> token ids for a model, built from GGUF metadata.
//
// Two model families: byte-level BPE (tokenizer.ggml.model "gpt2": GPT-2,
// Llama 3, SmolLM, Qwen2 with their pre-tokenizers) and SentencePiece-style
// BPE ("llama": Llama 2, Mistral) with byte fallback. Special and
// user-defined tokens are matched in the text before the model runs.
//
// Thread-safety: immutable after construction; Encode/Decode may be called
// concurrently.
#ifndef TESSERA_WORKER_TOKENIZER_TOKENIZER_H_
#define TESSERA_WORKER_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/gguf/gguf_file.h"
#include "worker/tokenizer/pre_tokenizer.h"

namespace tessera {

// GGUF token types; never renumber.
enum class TokenType : int32_t {
  kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

struct EncodeOptions {
  // Add BOS/EOS as the model's metadata asks.
  bool add_special = false;
  // Match control tokens written in the text (template output). User content
  // must be encoded with false so that "<|im_end|>" typed by a user is text.
  bool parse_special = false;
};

class Tokenizer {
 public:
  enum class Kind { kBpe, kSpm };

  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);

  std::vector<int32_t> Encode(std::string_view text, const EncodeOptions& options) const;

  // The bytes a token contributes to generated text (empty for control
  // tokens). May be a partial UTF-8 character; see Detokenizer.
  std::string_view TokenBytes(int32_t id) const { return pieces_[id]; }
  std::string Decode(std::span<const int32_t> ids) const;
  const std::string& TokenText(int32_t id) const { return texts_[id]; }
  TokenType token_type(int32_t id) const { return types_[id]; }

  int vocab_size() const { return static_cast<int>(texts_.size()); }
  Kind kind() const { return kind_; }
  int32_t bos_id() const { return bos_; }
  int32_t eos_id() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  // End-of-generation: EOS, EOT and the end-of-turn markers of chat formats.
  bool IsEndOfGeneration(int32_t id) const;
  std::span<const int32_t> end_of_generation_ids() const { return eog_; }

 private:
  Tokenizer() = default;
  void EncodeRaw(std::string_view text, bool after_special, std::vector<int32_t>& out) const;
  void EncodeBpePiece(std::string_view piece, std::vector<int32_t>& out) const;
  void EncodeSpm(std::string_view text, std::vector<int32_t>& out) const;
  int32_t Lookup(std::string_view text) const;

  Kind kind_ = Kind::kBpe;
  PreTokenizer pre_ = PreTokenizer::kGpt2;
  bool ignore_merges_ = false;
  bool add_space_prefix_ = false;
  std::vector<std::string> texts_;
  std::vector<std::string> pieces_;
  std::vector<TokenType> types_;
  std::vector<float> scores_;
  absl::flat_hash_map<std::string, int32_t> ids_;
  absl::flat_hash_map<std::string, int32_t> merge_ranks_;  // "left right" -> rank
  std::vector<int32_t> specials_;  // control/user-defined, longest text first
  std::vector<int32_t> eog_;
  int32_t bos_ = -1, eos_ = -1, unk_ = -1;
  bool add_bos_ = false, add_eos_ = false;
  int32_t byte_tokens_[256];
};

// Turns a stream of token ids into text that only ever ends on whole UTF-8
// characters: bytes of a character split across tokens are held back until
// it completes; bytes that can never form a valid character become U+FFFD.
class Detokenizer {
 public:
  explicit Detokenizer(const Tokenizer& t) : tokenizer_(t) {}
  // Returns the newly completed text (possibly empty).
  std::string Push(int32_t id);
  // Returns whatever is held back, with invalid bytes replaced.
  std::string Flush();

 private:
  std::string Drain(bool final);
  const Tokenizer& tokenizer_;
  std::string pending_;
};

// Appends `s` to `out` with every invalid UTF-8 byte replaced by U+FFFD.
void AppendSanitizedUtf8(std::string_view s, std::string& out);

}  // namespace tessera

#endif  // TESSERA_WORKER_TOKENIZER_TOKENIZER_H_
