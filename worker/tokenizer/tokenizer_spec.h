// TokenizerSpec: everything a Tokenizer is built from, as plain data, so
// that each checkpoint format reads its own files (GGUF metadata,
// tokenizer.json) and one Tokenizer implements the algorithms.
#ifndef TESSERA_WORKER_TOKENIZER_TOKENIZER_SPEC_H_
#define TESSERA_WORKER_TOKENIZER_TOKENIZER_SPEC_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/gguf/gguf_file.h"
#include "worker/tokenizer/pre_tokenizer.h"

namespace tessera {

// GGUF token types; never renumber.
enum class TokenType : int32_t {
  kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

// A token matched in the text before the model runs (Hugging Face's
// AddedToken; GGUF's control and user-defined tokens).
struct AddedToken {
  int32_t id = -1;
  std::string content;
  // Special tokens are recognized only when the caller asks (template
  // output); the others always.
  bool special = false;
  bool lstrip = false;       // absorbs the whitespace before it
  bool rstrip = false;       // absorbs the whitespace after it
  bool single_word = false;  // only where it is not part of a longer word
  // Matched in the normalized text rather than the raw input (Hugging Face
  // AddedToken.normalized).
  bool normalized = false;
};

struct TokenizerSpec {
  enum class Model {
    kByteLevelBpe,  // GPT-2 style: bytes mapped to printable characters, merges by rank
    kSpm,           // SentencePiece BPE by token scores (llama.cpp's "llama" vocabularies)
    kSpmBpe,        // SentencePiece-style BPE by merge rank with byte fallback (tokenizer.json)
  };
  // How added tokens are found in the text: llama.cpp splits the text by
  // each token in turn, longest first; Hugging Face finds the leftmost match,
  // longest among those starting there.
  enum class AddedTokenMatch { kLongestFirst, kLeftmostLongest };
  // Where SentencePiece-style models put the "▁" that marks a leading space.
  enum class SpacePrefix {
    kNone,
    kStartAndAfterSpecial,  // llama.cpp: at the start and after each added token
    kFirstSegment,          // Metaspace prepend_scheme "first": the text at offset 0 only
    kEverySegment,          // Prepend normalizer / Metaspace "always"
  };
  // What decoding does to the start of the text.
  enum class DecodeStart {
    kKeep,
    kStripOneSpace,           // Strip decoder: one leading space of the whole text
    kDropFirstTokenMarkers,   // Metaspace decoder: the first token's "▁"s vanish
  };

  Model model = Model::kByteLevelBpe;
  AddedTokenMatch added_match = AddedTokenMatch::kLongestFirst;

  // Id -> token text, type and (kSpm) score.
  std::vector<std::string> tokens;
  std::vector<TokenType> types;
  std::vector<float> scores;
  // Merges in rank order (byte-level and kSpmBpe).
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<AddedToken> added;

  // Byte-level BPE.
  PreTokenizer pre = PreTokenizer::kGpt2;
  bool ignore_merges = false;  // a piece that is itself a token is not merged
  // Normalizer.
  bool nfc = false;
  // SentencePiece-style: spaces become "▁", and a "▁" is put in front.
  SpacePrefix space_prefix = SpacePrefix::kNone;
  // The prefix and the replacement are a normalizer (before normalized
  // added tokens are matched; the prefix goes in front unconditionally) or
  // the Metaspace pre-tokenizer (after; not in front of a "▁" already there).
  bool spm_normalizer = false;
  bool split_on_space_marker = false;  // Metaspace split: BPE runs per "▁"-initial word
  bool byte_fallback = true;
  bool fuse_unk = false;
  DecodeStart decode_start = DecodeStart::kKeep;

  int32_t bos = -1, eos = -1, unk = -1, eot = -1;
  // Tokens added around an encoded text when the caller asks for them.
  std::vector<int32_t> prefix_ids, suffix_ids;
  // End-of-generation ids beyond eos/eot (generation_config.json).
  std::vector<int32_t> extra_eog;
};

// Reads the tokenizer.ggml.* metadata of a GGUF file.
absl::StatusOr<TokenizerSpec> ReadGgufTokenizerSpec(const GgufFile& file);

}  // namespace tessera

#endif  // TESSERA_WORKER_TOKENIZER_TOKENIZER_SPEC_H_
