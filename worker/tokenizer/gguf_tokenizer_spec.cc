// TokenizerSpec from GGUF metadata (tokenizer.ggml.*), with llama.cpp's
// semantics: byte-level BPE ("gpt2") or SentencePiece by scores ("llama");
// control, user-defined and unknown tokens are matched in the text longest
// first; the SentencePiece space prefix goes at the start and after each
// such token.
#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/status_macros.h"
#include "worker/tokenizer/tokenizer_spec.h"

namespace tessera {
namespace {

absl::StatusOr<int32_t> OptionalId(const GgufFile& f, const std::string& key, size_t n_vocab) {
  if (!f.Find(key)) return -1;
  TESSERA_ASSIGN_OR_RETURN(uint64_t id, f.GetUint(key));
  if (id >= n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF metadata '", key, "' = ", id,
                                                   " is outside the vocabulary of ", n_vocab));
  }
  return static_cast<int32_t>(id);
}

}  // namespace

absl::StatusOr<TokenizerSpec> ReadGgufTokenizerSpec(const GgufFile& f) {
  TokenizerSpec s;
  s.added_match = TokenizerSpec::AddedTokenMatch::kLongestFirst;
  TESSERA_ASSIGN_OR_RETURN(std::string model, f.GetString("tokenizer.ggml.model"));
  if (model == "gpt2") {
    s.model = TokenizerSpec::Model::kByteLevelBpe;
  } else if (model == "llama") {
    s.model = TokenizerSpec::Model::kSpm;
  } else {
    return absl::UnimplementedError(absl::StrCat("unsupported tokenizer model '", EscapeForMessage(model),
                                                 "' (tokenizer.ggml.model); supported: gpt2, llama"));
  }
  TESSERA_ASSIGN_OR_RETURN(const GgufArray* tokens, f.GetArray("tokenizer.ggml.tokens", GgufType::kString));
  const size_t n = tokens->items.size();
  if (n < 1 || n > (1u << 24)) return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", n, " tokens"));
  s.tokens.reserve(n);
  for (const GgufValue& v : tokens->items) s.tokens.push_back(v.as_string());
  s.types.assign(n, TokenType::kNormal);
  if (f.Find("tokenizer.ggml.token_type")) {
    TESSERA_ASSIGN_OR_RETURN(const GgufArray* types, f.GetArray("tokenizer.ggml.token_type", GgufType::kInt32));
    if (types->items.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.token_type has ", types->items.size(),
                                                     " entries for ", n, " tokens"));
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t ty = types->items[i].as_signed();
      if (ty < 1 || ty > 6) return absl::InvalidArgumentError(absl::StrCat("token ", i, " has unknown type ", ty));
      s.types[i] = static_cast<TokenType>(ty);
    }
  }
  s.scores.assign(n, 0.f);
  if (f.Find("tokenizer.ggml.scores")) {
    TESSERA_ASSIGN_OR_RETURN(const GgufArray* scores, f.GetArray("tokenizer.ggml.scores", GgufType::kFloat32));
    if (scores->items.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.scores has ", scores->items.size(),
                                                     " entries for ", n, " tokens"));
    }
    for (size_t i = 0; i < n; ++i) s.scores[i] = static_cast<float>(scores->items[i].as_double());
  }

  if (s.model == TokenizerSpec::Model::kByteLevelBpe) {
    std::string pre = "default";
    if (f.Find("tokenizer.ggml.pre")) { TESSERA_ASSIGN_OR_RETURN(pre, f.GetString("tokenizer.ggml.pre")); }
    TESSERA_ASSIGN_OR_RETURN(s.pre, PreTokenizerFromName(pre));
    s.ignore_merges = s.pre == PreTokenizer::kLlama3;
    TESSERA_ASSIGN_OR_RETURN(const GgufArray* merges, f.GetArray("tokenizer.ggml.merges", GgufType::kString));
    s.merges.reserve(merges->items.size());
    for (size_t i = 0; i < merges->items.size(); ++i) {
      const std::string& m = merges->items[i].as_string();
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("merge ", i, " '", EscapeForMessage(m), "' is not 'left right'"));
      }
      s.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
  }

  TESSERA_ASSIGN_OR_RETURN(s.bos, OptionalId(f, "tokenizer.ggml.bos_token_id", n));
  TESSERA_ASSIGN_OR_RETURN(s.eos, OptionalId(f, "tokenizer.ggml.eos_token_id", n));
  TESSERA_ASSIGN_OR_RETURN(s.unk, OptionalId(f, "tokenizer.ggml.unknown_token_id", n));
  TESSERA_ASSIGN_OR_RETURN(s.eot, OptionalId(f, "tokenizer.ggml.eot_token_id", n));
  bool add_bos = s.model == TokenizerSpec::Model::kSpm, add_eos = false;
  if (f.Find("tokenizer.ggml.add_bos_token")) { TESSERA_ASSIGN_OR_RETURN(add_bos, f.GetBool("tokenizer.ggml.add_bos_token")); }
  if (f.Find("tokenizer.ggml.add_eos_token")) { TESSERA_ASSIGN_OR_RETURN(add_eos, f.GetBool("tokenizer.ggml.add_eos_token")); }
  if (add_bos && s.bos < 0) return absl::InvalidArgumentError("add_bos_token is set but bos_token_id is missing");
  if (add_bos) s.prefix_ids.push_back(s.bos);
  if (add_eos && s.eos >= 0) s.suffix_ids.push_back(s.eos);
  bool space_prefix = s.model == TokenizerSpec::Model::kSpm;
  if (f.Find("tokenizer.ggml.add_space_prefix")) {
    TESSERA_ASSIGN_OR_RETURN(space_prefix, f.GetBool("tokenizer.ggml.add_space_prefix"));
  }
  if (s.model == TokenizerSpec::Model::kSpm && space_prefix) {
    s.space_prefix = TokenizerSpec::SpacePrefix::kStartAndAfterSpecial;
  }

  for (size_t i = 0; i < n; ++i) {
    const TokenType ty = s.types[i];
    if ((ty == TokenType::kControl || ty == TokenType::kUserDefined || ty == TokenType::kUnknown) &&
        !s.tokens[i].empty()) {
      AddedToken a;
      a.id = static_cast<int32_t>(i);
      a.content = s.tokens[i];
      a.special = ty != TokenType::kUserDefined;
      s.added.push_back(std::move(a));
    }
  }
  return s;
}

}  // namespace tessera
