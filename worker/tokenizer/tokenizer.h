// Tokenizer: text <-> token ids for a model, built from a TokenizerSpec
// (GGUF metadata or a Hugging Face tokenizer.json; see tokenizer_spec.h).
//
// Model families: byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen2 with their
// pre-tokenizers), SentencePiece BPE by scores (GGUF "llama": Llama 2,
// Mistral) and SentencePiece-style BPE by merge rank with byte fallback
// (tokenizer.json of the same models). Added tokens (special and
// user-defined) are matched in the text before the model runs.
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
#include "worker/tokenizer/tokenizer_spec.h"

namespace tessera {

struct EncodeOptions {
  // Add BOS/EOS (the spec's prefix and suffix ids) as the model asks.
  bool add_special = false;
  // Match special tokens written in the text (template output). User content
  // must be encoded with false so that "<|im_end|>" typed by a user is text.
  bool parse_special = false;
  // With parse_special: byte ranges [begin, end) of the text, sorted and
  // disjoint, that came from a request (chat content rendered into the
  // template). A special (control) token is matched only where it lies
  // wholly outside them; inside, the text is encoded as with parse_special
  // off, so a user who types "<|im_end|>" gets the characters, not the turn
  // boundary. Null: no such ranges.
  const std::vector<std::pair<size_t, size_t>>* untrusted = nullptr;
};

class Tokenizer {
 public:
  using Kind = TokenizerSpec::Model;

  // Checks the spec (ids in range, merges and added tokens consistent) and
  // builds the tokenizer.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(TokenizerSpec spec);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);

  std::vector<int32_t> Encode(std::string_view text, const EncodeOptions& options) const;

  // The bytes a token contributes to generated text (empty for control
  // tokens). May be a partial UTF-8 character; see Detokenizer.
  std::string_view TokenBytes(int32_t id) const { return pieces_[id]; }
  std::string Decode(std::span<const int32_t> ids) const;
  const std::string& TokenText(int32_t id) const { return spec_.tokens[id]; }
  TokenType token_type(int32_t id) const { return spec_.types[id]; }

  int vocab_size() const { return static_cast<int>(spec_.tokens.size()); }
  Kind kind() const { return spec_.model; }
  int32_t bos_id() const { return spec_.bos; }
  int32_t eos_id() const { return spec_.eos; }
  bool add_bos() const { return !spec_.prefix_ids.empty(); }
  // End-of-generation: EOS, EOT and the end-of-turn markers of chat formats.
  bool IsEndOfGeneration(int32_t id) const;
  std::span<const int32_t> end_of_generation_ids() const { return eog_; }

 private:
  // A piece of the input: an added token, or text (token < 0) in [begin, end).
  struct Fragment {
    int32_t token;
    size_t begin, end;
  };

  Tokenizer() = default;
  // Splits on added tokens: those matched in raw text, or (normalized_tokens)
  // those matched in normalized text.
  std::vector<Fragment> Split(std::string_view text, bool parse_special, bool normalized_tokens,
                              const std::vector<std::pair<size_t, size_t>>* untrusted = nullptr) const;
  std::string Normalize(std::string_view text) const;
  void EncodeSpmText(std::string_view text, bool after_added, std::vector<int32_t>& out) const;
  void PreTokenizeAndEncode(std::string_view text, bool at_offset_zero, std::vector<int32_t>& out) const;
  void EncodeBpePiece(std::string_view piece, std::vector<int32_t>& out) const;
  void EncodeSpm(std::string_view text, std::vector<int32_t>& out) const;
  void EncodeSpmBpeWord(std::string_view word, std::vector<int32_t>& out) const;
  int32_t Lookup(std::string_view text) const;

  TokenizerSpec spec_;
  std::vector<std::string> pieces_;
  absl::flat_hash_map<std::string, int32_t> ids_;
  // Byte-level BPE: "len(left) left right" -> rank (unambiguous for any
  // token text). kSpmBpe: (left id, right id) -> (rank, merged id).
  absl::flat_hash_map<std::string, int32_t> merge_ranks_;
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> id_merges_;
  std::vector<int32_t> by_length_;  // indices into spec_.added, longest content first
  std::vector<int32_t> eog_;
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
