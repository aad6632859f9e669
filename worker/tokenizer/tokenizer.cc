#include "worker/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <queue>

#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/status_macros.h"
#include "worker/tokenizer/unicode.h"

namespace tessera {
namespace {

// GPT-2's reversible byte <-> printable code point mapping.
struct ByteMap {
  uint32_t to_cp[256];
  absl::flat_hash_map<uint32_t, uint8_t> to_byte;
  std::string encoded[256];  // UTF-8 of to_cp[b]
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? b : 256 + n++;
      to_byte[to_cp[b]] = static_cast<uint8_t>(b);
      unicode::AppendUtf8(to_cp[b], encoded[b]);
    }
  }
};
const ByteMap& Bytes() {
  static const ByteMap* m = new ByteMap();
  return *m;
}

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 '▁'

std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (true) {
    size_t j = s.find(from, i);
    if (j == std::string_view::npos) break;
    out.append(s.substr(i, j - i));
    out.append(to);
    i = j + from.size();
  }
  out.append(s.substr(i));
  return out;
}

// Parses "<0xAB>" into the byte 0xAB.
bool ParseByteToken(std::string_view t, uint8_t* b) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return false;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return false;
  *b = static_cast<uint8_t>(hi * 16 + lo);
  return true;
}

absl::StatusOr<int32_t> OptionalId(const GgufFile& f, const std::string& key, int n_vocab) {
  if (!f.Find(key)) return -1;
  TESSERA_ASSIGN_OR_RETURN(uint64_t id, f.GetUint(key));
  if (id >= static_cast<uint64_t>(n_vocab)) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF metadata '", key, "' = ", id,
                                                   " is outside the vocabulary of ", n_vocab));
  }
  return static_cast<int32_t>(id);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& f) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  TESSERA_ASSIGN_OR_RETURN(std::string model, f.GetString("tokenizer.ggml.model"));
  if (model == "gpt2") {
    t->kind_ = Kind::kBpe;
  } else if (model == "llama") {
    t->kind_ = Kind::kSpm;
  } else {
    return absl::UnimplementedError(absl::StrCat("unsupported tokenizer model '", EscapeForMessage(model),
                                                 "' (tokenizer.ggml.model); supported: gpt2, llama"));
  }
  TESSERA_ASSIGN_OR_RETURN(const GgufArray* tokens, f.GetArray("tokenizer.ggml.tokens", GgufType::kString));
  const size_t n = tokens->items.size();
  if (n < 1 || n > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", n, " tokens"));
  }
  t->texts_.reserve(n);
  for (const GgufValue& v : tokens->items) t->texts_.push_back(v.as_string());
  t->types_.assign(n, TokenType::kNormal);
  if (f.Find("tokenizer.ggml.token_type")) {
    TESSERA_ASSIGN_OR_RETURN(const GgufArray* types, f.GetArray("tokenizer.ggml.token_type", GgufType::kInt32));
    if (types->items.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.token_type has ", types->items.size(),
                                                     " entries for ", n, " tokens"));
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t ty = types->items[i].as_signed();
      if (ty < 1 || ty > 6) {
        return absl::InvalidArgumentError(absl::StrCat("token ", i, " has unknown type ", ty));
      }
      t->types_[i] = static_cast<TokenType>(ty);
    }
  }
  t->scores_.assign(n, 0.f);
  if (f.Find("tokenizer.ggml.scores")) {
    TESSERA_ASSIGN_OR_RETURN(const GgufArray* scores, f.GetArray("tokenizer.ggml.scores", GgufType::kFloat32));
    if (scores->items.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.scores has ", scores->items.size(),
                                                     " entries for ", n, " tokens"));
    }
    for (size_t i = 0; i < n; ++i) t->scores_[i] = static_cast<float>(scores->items[i].as_double());
  }
  t->ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) t->ids_.emplace(t->texts_[i], static_cast<int32_t>(i));  // first wins

  if (t->kind_ == Kind::kBpe) {
    std::string pre = "default";
    if (f.Find("tokenizer.ggml.pre")) { TESSERA_ASSIGN_OR_RETURN(pre, f.GetString("tokenizer.ggml.pre")); }
    TESSERA_ASSIGN_OR_RETURN(t->pre_, PreTokenizerFromName(pre));
    t->ignore_merges_ = t->pre_ == PreTokenizer::kLlama3;
    TESSERA_ASSIGN_OR_RETURN(const GgufArray* merges, f.GetArray("tokenizer.ggml.merges", GgufType::kString));
    t->merge_ranks_.reserve(merges->items.size());
    for (size_t i = 0; i < merges->items.size(); ++i) {
      const std::string& m = merges->items[i].as_string();
      if (m.find(' ', 1) == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("merge ", i, " '", EscapeForMessage(m), "' is not 'left right'"));
      }
      t->merge_ranks_.emplace(m, static_cast<int32_t>(i));
    }
  }

  TESSERA_ASSIGN_OR_RETURN(t->bos_, OptionalId(f, "tokenizer.ggml.bos_token_id", n));
  TESSERA_ASSIGN_OR_RETURN(t->eos_, OptionalId(f, "tokenizer.ggml.eos_token_id", n));
  TESSERA_ASSIGN_OR_RETURN(t->unk_, OptionalId(f, "tokenizer.ggml.unknown_token_id", n));
  TESSERA_ASSIGN_OR_RETURN(int32_t eot, OptionalId(f, "tokenizer.ggml.eot_token_id", n));
  t->add_bos_ = t->kind_ == Kind::kSpm;
  if (f.Find("tokenizer.ggml.add_bos_token")) { TESSERA_ASSIGN_OR_RETURN(t->add_bos_, f.GetBool("tokenizer.ggml.add_bos_token")); }
  if (f.Find("tokenizer.ggml.add_eos_token")) { TESSERA_ASSIGN_OR_RETURN(t->add_eos_, f.GetBool("tokenizer.ggml.add_eos_token")); }
  t->add_space_prefix_ = t->kind_ == Kind::kSpm;
  if (f.Find("tokenizer.ggml.add_space_prefix")) { TESSERA_ASSIGN_OR_RETURN(t->add_space_prefix_, f.GetBool("tokenizer.ggml.add_space_prefix")); }
  if (t->add_bos_ && t->bos_ < 0) return absl::InvalidArgumentError("add_bos_token is set but bos_token_id is missing");

  // What each token contributes to output text.
  const ByteMap& bm = Bytes();
  t->pieces_.resize(n);
  for (int b = 0; b < 256; ++b) t->byte_tokens_[b] = -1;
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = t->texts_[i];
    switch (t->types_[i]) {
      case TokenType::kControl:
      case TokenType::kUnused:
        break;
      case TokenType::kUserDefined:
        t->pieces_[i] = t->kind_ == Kind::kSpm ? ReplaceAll(text, kSpmSpace, " ") : text;
        break;
      case TokenType::kUnknown:
        t->pieces_[i] = "\xE2\x96\x85";
        break;
      case TokenType::kByte: {
        uint8_t b;
        if (ParseByteToken(text, &b)) {
          t->pieces_[i] = std::string(1, static_cast<char>(b));
          if (t->byte_tokens_[b] < 0) t->byte_tokens_[b] = static_cast<int32_t>(i);
        }
        break;
      }
      case TokenType::kNormal:
        if (t->kind_ == Kind::kSpm) {
          t->pieces_[i] = ReplaceAll(text, kSpmSpace, " ");
        } else {
          const unicode::Decoded d = unicode::Decode(text);
          std::string bytes;
          for (uint32_t cp : d.cps) {
            auto it = bm.to_byte.find(cp);
            if (it != bm.to_byte.end()) {
              bytes.push_back(static_cast<char>(it->second));
            } else {
              unicode::AppendUtf8(cp, bytes);  // not byte-encoded: keep as text
            }
          }
          t->pieces_[i] = std::move(bytes);
        }
        break;
    }
  }
  if (t->kind_ == Kind::kBpe) {
    for (int b = 0; b < 256; ++b) {
      auto it = t->ids_.find(bm.encoded[b]);
      t->byte_tokens_[b] = it == t->ids_.end() ? -1 : it->second;
    }
  }

  for (size_t i = 0; i < n; ++i) {
    const TokenType ty = t->types_[i];
    if ((ty == TokenType::kControl || ty == TokenType::kUserDefined || ty == TokenType::kUnknown) &&
        !t->texts_[i].empty()) {
      t->specials_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(t->specials_.begin(), t->specials_.end(), [&](int32_t a, int32_t b) {
    return t->texts_[a].size() > t->texts_[b].size();
  });

  // End-of-generation markers: EOS, EOT, and the chat formats' end-of-turn
  // control tokens (as llama.cpp infers them).
  auto add_eog = [&](int32_t id) {
    if (id >= 0 && std::find(t->eog_.begin(), t->eog_.end(), id) == t->eog_.end()) t->eog_.push_back(id);
  };
  add_eog(t->eos_);
  add_eog(eot);
  static constexpr std::string_view kEogTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                                   "<|endoftext|>", "<|end_of_text|>", "<EOT>", "<|eom_id|>"};
  for (std::string_view s : kEogTexts) {
    auto it = t->ids_.find(absl::string_view(s.data(), s.size()));
    if (it != t->ids_.end() && t->types_[it->second] == TokenType::kControl) add_eog(it->second);
  }
  return t;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::find(eog_.begin(), eog_.end(), id) != eog_.end();
}

int32_t Tokenizer::Lookup(std::string_view text) const {
  auto it = ids_.find(absl::string_view(text.data(), text.size()));
  return it == ids_.end() ? -1 : it->second;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> out;
  if (options.add_special && add_bos_) out.push_back(bos_);

  // Fragments: (is_special, token or text range). Specials are matched
  // longest first across the whole text, as llama.cpp does.
  struct Fragment { int32_t token; size_t begin, end; };
  std::vector<Fragment> frags{{-1, 0, text.size()}};
  for (int32_t sid : specials_) {
    const TokenType ty = types_[sid];
    if (!options.parse_special && (ty == TokenType::kControl || ty == TokenType::kUnknown)) continue;
    const std::string& st = texts_[sid];
    std::vector<Fragment> next;
    next.reserve(frags.size());
    for (const Fragment& fr : frags) {
      if (fr.token >= 0) { next.push_back(fr); continue; }
      size_t pos = fr.begin;
      while (pos < fr.end) {
        const size_t hit = text.substr(0, fr.end).find(st, pos);
        if (hit == std::string_view::npos) break;
        if (hit > pos) next.push_back({-1, pos, hit});
        next.push_back({sid, hit, hit + st.size()});
        pos = hit + st.size();
      }
      if (pos < fr.end) next.push_back({-1, pos, fr.end});
    }
    frags.swap(next);
  }

  bool after_special = true;  // the start of text counts, for SPM's space prefix
  for (const Fragment& fr : frags) {
    if (fr.token >= 0) {
      out.push_back(fr.token);
      after_special = true;
    } else if (fr.end > fr.begin) {
      EncodeRaw(text.substr(fr.begin, fr.end - fr.begin), after_special, out);
      after_special = false;
    }
  }
  if (options.add_special && add_eos_ && eos_ >= 0) out.push_back(eos_);
  return out;
}

void Tokenizer::EncodeRaw(std::string_view text, bool after_special, std::vector<int32_t>& out) const {
  if (kind_ == Kind::kSpm) {
    std::string s;
    if (add_space_prefix_ && after_special) s.push_back(' ');
    s.append(text);
    EncodeSpm(ReplaceAll(s, " ", kSpmSpace), out);
    return;
  }
  for (std::string_view piece : PreTokenize(pre_, text)) EncodeBpePiece(piece, out);
}

void Tokenizer::EncodeBpePiece(std::string_view piece, std::vector<int32_t>& out) const {
  const ByteMap& bm = Bytes();
  std::string mapped;
  mapped.reserve(piece.size() * 2);
  struct Sym { int prev, next; size_t start, len; };
  std::vector<Sym> syms;
  syms.reserve(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) {
    const std::string& e = bm.encoded[static_cast<uint8_t>(piece[i])];
    syms.push_back({static_cast<int>(i) - 1, static_cast<int>(i) + 1, mapped.size(), e.size()});
    mapped.append(e);
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  if (ignore_merges_) {
    if (int32_t id = Lookup(mapped); id >= 0) { out.push_back(id); return; }
  }

  // Lowest merge rank first; ties go to the leftmost pair.
  struct Cand { int32_t rank; int left; size_t left_len, right_len; };
  auto worse = [](const Cand& a, const Cand& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> queue(worse);
  std::string key;
  auto try_pair = [&](int l) {
    if (l < 0 || syms[l].next < 0) return;
    const Sym& a = syms[l];
    const Sym& b = syms[a.next];
    key.assign(mapped, a.start, a.len);
    key.push_back(' ');
    key.append(mapped, b.start, b.len);
    auto it = merge_ranks_.find(key);
    if (it != merge_ranks_.end()) queue.push({it->second, l, a.len, b.len});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) try_pair(i);
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Sym& a = syms[c.left];
    if (a.len == 0 || a.next < 0 || a.len != c.left_len || syms[a.next].len != c.right_len) continue;
    Sym& b = syms[a.next];
    a.len += b.len;
    b.len = 0;
    a.next = b.next;
    if (b.next >= 0) syms[b.next].prev = c.left;
    try_pair(a.prev);
    try_pair(c.left);
  }
  for (int i = 0; i >= 0; i = syms[i].next) {
    const std::string_view text(mapped.data() + syms[i].start, syms[i].len);
    if (int32_t id = Lookup(text); id >= 0) {
      out.push_back(id);
      continue;
    }
    // Not in the vocabulary: fall back to one token per byte.
    const unicode::Decoded d = unicode::Decode(text);
    for (uint32_t cp : d.cps) {
      auto it = bm.to_byte.find(cp);
      const int32_t id = it == bm.to_byte.end() ? -1 : byte_tokens_[it->second];
      if (id >= 0) out.push_back(id);
      else if (unk_ >= 0) out.push_back(unk_);
    }
  }
}

void Tokenizer::EncodeSpm(std::string_view text, std::vector<int32_t>& out) const {
  struct Sym { int prev, next; size_t start, len; };
  std::vector<Sym> syms;
  for (size_t i = 0; i < text.size();) {
    size_t len = unicode::ValidSequenceLength(text, i);
    if (len == 0) len = 1;
    syms.push_back({static_cast<int>(syms.size()) - 1, static_cast<int>(syms.size()) + 1, i, len});
    i += len;
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  // Highest score first; ties go to the leftmost pair.
  struct Cand { float score; int left; size_t len; };
  auto worse = [](const Cand& a, const Cand& b) {
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> queue(worse);
  // Which two symbols each merged span came from, for re-segmentation.
  absl::flat_hash_map<std::string, std::pair<std::string, std::string>> rev_merge;
  auto try_pair = [&](int l) {
    if (l < 0 || syms[l].next < 0) return;
    const Sym& a = syms[l];
    const Sym& b = syms[a.next];
    const std::string_view joined = text.substr(a.start, a.len + b.len);
    const int32_t id = Lookup(joined);
    if (id < 0) return;
    queue.push({scores_[id], l, joined.size()});
    rev_merge[std::string(joined)] = {std::string(text.substr(a.start, a.len)), std::string(text.substr(b.start, b.len))};
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) try_pair(i);
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Sym& a = syms[c.left];
    if (a.len == 0 || a.next < 0 || a.len + syms[a.next].len != c.len) continue;
    Sym& b = syms[a.next];
    a.len += b.len;
    b.len = 0;
    a.next = b.next;
    if (b.next >= 0) syms[b.next].prev = c.left;
    try_pair(a.prev);
    try_pair(c.left);
  }
  // Emit each symbol: its token, or its merge parts, or its bytes.
  auto emit = [&](auto&& self, std::string_view s) -> void {
    if (int32_t id = Lookup(s); id >= 0) { out.push_back(id); return; }
    auto it = rev_merge.find(std::string(s));
    if (it != rev_merge.end()) {
      self(self, it->second.first);
      self(self, it->second.second);
      return;
    }
    for (char ch : s) {
      const int32_t id = byte_tokens_[static_cast<uint8_t>(ch)];
      if (id >= 0) out.push_back(id);
      else if (unk_ >= 0) out.push_back(unk_);
    }
  };
  for (int i = 0; i >= 0; i = syms[i].next) emit(emit, text.substr(syms[i].start, syms[i].len));
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id >= 0 && id < vocab_size()) bytes.append(pieces_[id]);
  }
  std::string out;
  AppendSanitizedUtf8(bytes, out);
  return out;
}

void AppendSanitizedUtf8(std::string_view s, std::string& out) {
  for (size_t i = 0; i < s.size();) {
    const int len = unicode::ValidSequenceLength(s, i);
    if (len == 0) {
      out.append("\xEF\xBF\xBD");
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
}

std::string Detokenizer::Push(int32_t id) {
  if (id >= 0 && id < tokenizer_.vocab_size()) pending_.append(tokenizer_.TokenBytes(id));
  return Drain(false);
}

std::string Detokenizer::Flush() { return Drain(true); }

std::string Detokenizer::Drain(bool final) {
  const size_t keep_from = final ? pending_.size() : unicode::CompletePrefixLength(pending_);
  std::string out;
  AppendSanitizedUtf8(std::string_view(pending_).substr(0, keep_from), out);
  pending_.erase(0, keep_from);
  return out;
}

}  // namespace tessera
