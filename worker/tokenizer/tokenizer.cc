#include "worker/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <queue>

#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/status_macros.h"
#include "worker/tokenizer/unicode.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

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

// Parses "<0xAB>" into the byte 0xAB: exactly "<0x", two hex digits (either
// case, as llama.cpp's strtol reads them) and ">".
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

// The byte-level merge table's key for (left, right): length-prefixed so
// that no two pairs share a key whatever bytes the tokens hold.
void MergeKey(std::string_view left, std::string_view right, std::string& key) {
  const uint32_t n = static_cast<uint32_t>(left.size());
  key.assign(reinterpret_cast<const char*>(&n), sizeof(n));
  key.append(left);
  key.append(right);
}

uint64_t PairKey(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

// Hugging Face's word characters for AddedToken.single_word.
bool IsWordChar(uint32_t cp) { return cp == '_' || unicode::IsLetter(cp) || unicode::IsNumber(cp); }

// The code point that ends / starts at byte offset i of s (0 if none).
uint32_t CodePointBefore(std::string_view s, size_t i) {
  size_t j = i;
  while (j > 0 && (static_cast<uint8_t>(s[j - 1]) & 0xC0) == 0x80 && i - j < 4) --j;
  if (j > 0) --j;
  if (j >= i) return 0;
  const unicode::Decoded d = unicode::Decode(s.substr(j, i - j));
  return d.cps.empty() ? 0 : d.cps.back();
}
uint32_t CodePointAt(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  const int len = std::max(1, unicode::ValidSequenceLength(s, i));
  const unicode::Decoded d = unicode::Decode(s.substr(i, static_cast<size_t>(len)));
  return d.cps.empty() ? 0 : d.cps.front();
}

bool Whitespace(uint32_t cp) { return cp != 0 && unicode::IsWhitespace(cp); }

// NFC of valid UTF-8 text; anything else is returned unchanged.
std::string Nfc(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const int len = unicode::ValidSequenceLength(text, i);
    if (len == 0) return std::string(text);
    i += static_cast<size_t>(len);
  }
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(err);
  if (U_FAILURE(err)) return std::string(text);
  const icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  if (nfc->isNormalized(u, err) && U_SUCCESS(err)) return std::string(text);
  err = U_ZERO_ERROR;
  const icu::UnicodeString n = nfc->normalize(u, err);
  if (U_FAILURE(err)) return std::string(text);
  std::string out;
  n.toUTF8String(out);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& file) {
  TESSERA_ASSIGN_OR_RETURN(TokenizerSpec spec, ReadGgufTokenizerSpec(file));
  return Create(std::move(spec));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerSpec spec) {
  using Model = TokenizerSpec::Model;
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  const size_t n = spec.tokens.size();
  if (n < 1 || n > (1u << 24)) return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", n, " tokens"));
  if (spec.types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(spec.types.size(), " token types for ", n, " tokens"));
  }
  if (spec.scores.empty()) spec.scores.assign(n, 0.f);
  if (spec.scores.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(spec.scores.size(), " token scores for ", n, " tokens"));
  }
  auto check_id = [n](int32_t id, std::string_view what, bool optional) -> absl::Status {
    if ((optional && id == -1) || (id >= 0 && static_cast<size_t>(id) < n)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), " id ", id, " is outside the vocabulary of ", n));
  };
  TESSERA_RETURN_IF_ERROR(check_id(spec.bos, "bos", true));
  TESSERA_RETURN_IF_ERROR(check_id(spec.eos, "eos", true));
  TESSERA_RETURN_IF_ERROR(check_id(spec.unk, "unk", true));
  TESSERA_RETURN_IF_ERROR(check_id(spec.eot, "eot", true));
  for (int32_t id : spec.prefix_ids) TESSERA_RETURN_IF_ERROR(check_id(id, "prefix token", false));
  for (int32_t id : spec.suffix_ids) TESSERA_RETURN_IF_ERROR(check_id(id, "suffix token", false));
  for (int32_t id : spec.extra_eog) TESSERA_RETURN_IF_ERROR(check_id(id, "end-of-generation token", false));
  for (const AddedToken& a : spec.added) {
    TESSERA_RETURN_IF_ERROR(check_id(a.id, "added token", false));
    if (a.content.empty()) return absl::InvalidArgumentError(absl::StrCat("added token ", a.id, " is empty"));
  }

  t->ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (spec.types[i] != TokenType::kUnused || !spec.tokens[i].empty()) {
      t->ids_.emplace(spec.tokens[i], static_cast<int32_t>(i));  // first wins
    }
  }

  // What each token contributes to output text.
  const ByteMap& bm = Bytes();
  const bool spm = spec.model != Model::kByteLevelBpe;
  t->pieces_.resize(n);
  for (int b = 0; b < 256; ++b) t->byte_tokens_[b] = -1;
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = spec.tokens[i];
    switch (spec.types[i]) {
      case TokenType::kControl:
      case TokenType::kUnused:
        break;
      case TokenType::kUserDefined:
        t->pieces_[i] = spec.model == Model::kSpm ? ReplaceAll(text, kSpmSpace, " ") : text;
        break;
      case TokenType::kUnknown:
        t->pieces_[i] = "\xE2\x96\x85";
        break;
      case TokenType::kByte: {
        // A BYTE token stands for exactly one byte, spelled <0xNN> (as
        // SentencePiece writes them and llama.cpp reads them). Any other
        // text would give it no bytes: decoding would drop it while the
        // text could still be matched as a token. Refused, not skipped.
        uint8_t b;
        if (!ParseByteToken(text, &b)) {
          return absl::InvalidArgumentError(absl::StrCat("token ", i, " '", EscapeForMessage(text),
                                                         "' has type BYTE but is not <0xNN> (two hex digits)"));
        }
        t->pieces_[i] = std::string(1, static_cast<char>(b));
        if (t->byte_tokens_[b] < 0) t->byte_tokens_[b] = static_cast<int32_t>(i);
        break;
      }
      case TokenType::kNormal:
        if (spm) {
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
  if (spec.model == Model::kByteLevelBpe) {
    for (int b = 0; b < 256; ++b) {
      auto it = t->ids_.find(bm.encoded[b]);
      t->byte_tokens_[b] = it == t->ids_.end() ? -1 : it->second;
    }
  }

  if (spec.model == Model::kByteLevelBpe) {
    t->merge_ranks_.reserve(spec.merges.size());
    std::string key;
    for (size_t i = 0; i < spec.merges.size(); ++i) {
      MergeKey(spec.merges[i].first, spec.merges[i].second, key);
      t->merge_ranks_.emplace(key, static_cast<int32_t>(i));  // first (lowest rank) wins
    }
  } else if (spec.model == Model::kSpmBpe) {
    // As Hugging Face's BPE: every merge's parts and result are tokens.
    t->id_merges_.reserve(spec.merges.size());
    for (size_t i = 0; i < spec.merges.size(); ++i) {
      const auto& [l, r] = spec.merges[i];
      const int32_t a = t->Lookup(l), b = t->Lookup(r), m = t->Lookup(l + r);
      if (a < 0 || b < 0 || m < 0) {
        return absl::InvalidArgumentError(absl::StrCat("merge ", i, " ('", EscapeForMessage(l), "', '",
                                                       EscapeForMessage(r), "') uses a token outside the vocabulary"));
      }
      t->id_merges_.emplace(PairKey(a, b), std::make_pair(static_cast<int32_t>(i), m));
    }
  }

  for (size_t i = 0; i < spec.added.size(); ++i) t->by_length_.push_back(static_cast<int32_t>(i));
  std::stable_sort(t->by_length_.begin(), t->by_length_.end(), [&](int32_t a, int32_t b) {
    return spec.added[a].content.size() > spec.added[b].content.size();
  });

  // End-of-generation markers: EOS, EOT, the chat formats' end-of-turn
  // control tokens (as llama.cpp infers them) and the checkpoint's own list.
  auto add_eog = [&](int32_t id) {
    if (id >= 0 && std::find(t->eog_.begin(), t->eog_.end(), id) == t->eog_.end()) t->eog_.push_back(id);
  };
  add_eog(spec.eos);
  add_eog(spec.eot);
  static constexpr std::string_view kEogTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                                   "<|endoftext|>", "<|end_of_text|>", "<EOT>", "<|eom_id|>"};
  for (std::string_view s : kEogTexts) {
    auto it = t->ids_.find(absl::string_view(s.data(), s.size()));
    if (it != t->ids_.end() && spec.types[it->second] == TokenType::kControl) add_eog(it->second);
  }
  for (int32_t id : spec.extra_eog) add_eog(id);
  t->spec_ = std::move(spec);
  return t;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::find(eog_.begin(), eog_.end(), id) != eog_.end();
}

int32_t Tokenizer::Lookup(std::string_view text) const {
  auto it = ids_.find(absl::string_view(text.data(), text.size()));
  return it == ids_.end() ? -1 : it->second;
}

namespace {

// Whether [begin, end) overlaps one of the sorted, disjoint `ranges`.
bool Overlaps(const std::vector<std::pair<size_t, size_t>>* ranges, size_t begin, size_t end) {
  if (ranges == nullptr || begin >= end) return false;
  // The first range that ends after `begin`.
  auto it = std::upper_bound(ranges->begin(), ranges->end(), begin,
                             [](size_t b, const std::pair<size_t, size_t>& r) { return b < r.second; });
  return it != ranges->end() && it->first < end;
}

}  // namespace

std::vector<Tokenizer::Fragment> Tokenizer::Split(std::string_view text, bool parse_special, bool normalized_tokens,
                                                  const std::vector<std::pair<size_t, size_t>>* untrusted) const {
  std::vector<Fragment> frags;
  if (spec_.added_match == TokenizerSpec::AddedTokenMatch::kLongestFirst) {
    // llama.cpp: each added token in turn, longest first, splits every text
    // fragment left so far.
    frags.push_back({-1, 0, text.size()});
    if (normalized_tokens) return frags;
    for (int32_t ai : by_length_) {
      const AddedToken& a = spec_.added[ai];
      if (a.special && !parse_special) continue;
      std::vector<Fragment> next;
      next.reserve(frags.size());
      for (const Fragment& fr : frags) {
        if (fr.token >= 0) { next.push_back(fr); continue; }
        size_t pos = fr.begin;   // start of the text not yet emitted
        size_t from = fr.begin;  // where the next search starts
        while (from < fr.end) {
          const size_t hit = text.substr(0, fr.end).find(a.content, from);
          if (hit == std::string_view::npos) break;
          if (a.special && Overlaps(untrusted, hit, hit + a.content.size())) {
            from = hit + 1;  // request text: not a control token
            continue;
          }
          if (hit > pos) next.push_back({-1, pos, hit});
          next.push_back({a.id, hit, hit + a.content.size()});
          pos = from = hit + a.content.size();
        }
        if (pos < fr.end) next.push_back({-1, pos, fr.end});
      }
      frags.swap(next);
    }
    return frags;
  }
  // Hugging Face: leftmost match, longest among those starting there; lstrip
  // and rstrip absorb the whitespace around a match.
  size_t text_from = 0;  // start of the pending text fragment
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (int32_t ai : by_length_) {
      const AddedToken& a = spec_.added[ai];
      if ((a.special && !parse_special) || a.normalized != normalized_tokens) continue;
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      if (a.special && Overlaps(untrusted, i, i + a.content.size())) continue;  // request text
      if (a.single_word && ((i > 0 && IsWordChar(CodePointBefore(text, i))) ||
                            IsWordChar(CodePointAt(text, i + a.content.size())))) {
        continue;
      }
      hit = &a;
      break;
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t begin = i, end = i + hit->content.size();
    if (hit->lstrip) {
      while (begin > text_from && Whitespace(CodePointBefore(text, begin))) {
        std::string enc;
        unicode::AppendUtf8(CodePointBefore(text, begin), enc);
        begin -= enc.size();
      }
    }
    if (hit->rstrip) {
      while (end < text.size() && Whitespace(CodePointAt(text, end))) {
        end += static_cast<size_t>(std::max(1, unicode::ValidSequenceLength(text, end)));
      }
    }
    if (begin > text_from) frags.push_back({-1, text_from, begin});
    frags.push_back({hit->id, begin, end});
    text_from = i = end;
  }
  if (text_from < text.size()) frags.push_back({-1, text_from, text.size()});
  return frags;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> out;
  if (options.add_special) out.insert(out.end(), spec_.prefix_ids.begin(), spec_.prefix_ids.end());
  bool after_added = true;  // the start of text counts, for SPM's space prefix
  const auto* untrusted = options.parse_special ? options.untrusted : nullptr;
  for (const Fragment& fr : Split(text, options.parse_special, /*normalized_tokens=*/false, untrusted)) {
    if (fr.token >= 0) {
      out.push_back(fr.token);
      after_added = true;
      continue;
    }
    if (fr.end == fr.begin) continue;
    const std::string_view raw = text.substr(fr.begin, fr.end - fr.begin);
    if (spec_.model == TokenizerSpec::Model::kSpm) {
      EncodeSpmText(raw, after_added, out);
      after_added = false;
      continue;
    }
    // Hugging Face order: normalize the text between raw-matched added
    // tokens, match the normalized added tokens in it, then pre-tokenize
    // and run the model on what is left.
    const std::string norm = Normalize(raw);
    // Normalizing moves offsets: a fragment holding any request text
    // matches no normalized special token at all.
    const bool special_here = options.parse_special && !Overlaps(untrusted, fr.begin, fr.end);
    for (const Fragment& sub : Split(norm, special_here, /*normalized_tokens=*/true)) {
      if (sub.token >= 0) {
        out.push_back(sub.token);
      } else if (sub.end > sub.begin) {
        PreTokenizeAndEncode(std::string_view(norm).substr(sub.begin, sub.end - sub.begin),
                             fr.begin == 0 && sub.begin == 0, out);
      }
    }
    after_added = false;
  }
  if (options.add_special) out.insert(out.end(), spec_.suffix_ids.begin(), spec_.suffix_ids.end());
  return out;
}

std::string Tokenizer::Normalize(std::string_view text) const {
  std::string s = spec_.nfc ? Nfc(text) : std::string(text);
  if (spec_.spm_normalizer) {
    std::string out;
    if (!s.empty() && spec_.space_prefix != TokenizerSpec::SpacePrefix::kNone) out.append(kSpmSpace);
    out.append(ReplaceAll(s, " ", kSpmSpace));
    return out;
  }
  return s;
}

void Tokenizer::EncodeSpmText(std::string_view text, bool after_added, std::vector<int32_t>& out) const {
  std::string s;
  if (spec_.space_prefix == TokenizerSpec::SpacePrefix::kStartAndAfterSpecial && after_added) s.push_back(' ');
  s.append(text);
  EncodeSpm(ReplaceAll(s, " ", kSpmSpace), out);
}

void Tokenizer::PreTokenizeAndEncode(std::string_view text, bool at_offset_zero, std::vector<int32_t>& out) const {
  using SpacePrefix = TokenizerSpec::SpacePrefix;
  if (spec_.model == TokenizerSpec::Model::kByteLevelBpe) {
    for (std::string_view piece : PreTokenize(spec_.pre, text)) EncodeBpePiece(piece, out);
    return;
  }
  if (spec_.spm_normalizer) {  // already "▁"-prefixed and replaced
    EncodeSpmBpeWord(text, out);
    return;
  }
  // Metaspace: replace, prefix unless one is there, optionally split.
  std::string s = ReplaceAll(text, " ", kSpmSpace);
  const bool prefix = spec_.space_prefix == SpacePrefix::kEverySegment ||
                      (spec_.space_prefix == SpacePrefix::kFirstSegment && at_offset_zero);
  if (prefix && s.compare(0, kSpmSpace.size(), kSpmSpace) != 0) s.insert(0, kSpmSpace);
  if (!spec_.split_on_space_marker) {
    EncodeSpmBpeWord(s, out);
    return;
  }
  // Words begin at each "▁" (Metaspace split, merged with what follows).
  size_t begin = 0;
  for (size_t at = s.find(kSpmSpace, 1); at != std::string::npos; at = s.find(kSpmSpace, at + 1)) {
    if (at > begin) EncodeSpmBpeWord(std::string_view(s).substr(begin, at - begin), out);
    begin = at;
  }
  if (begin < s.size()) EncodeSpmBpeWord(std::string_view(s).substr(begin), out);
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
  if (spec_.ignore_merges) {
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
    MergeKey(std::string_view(mapped).substr(a.start, a.len), std::string_view(mapped).substr(b.start, b.len), key);
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
      else if (spec_.unk >= 0) out.push_back(spec_.unk);
    }
  }
}

void Tokenizer::EncodeSpmBpeWord(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (spec_.ignore_merges) {
    if (int32_t id = Lookup(word); id >= 0) { out.push_back(id); return; }
  }
  // Symbols are token ids: each character's token, else its bytes' <0xXX>
  // tokens (byte fallback), else the unknown token.
  struct Sym { int32_t id; int prev, next; bool alive; };
  std::vector<Sym> syms;
  auto push = [&](int32_t id) {
    const int i = static_cast<int>(syms.size());
    syms.push_back({id, i - 1, i + 1, true});
  };
  for (size_t i = 0; i < word.size();) {
    const size_t len = static_cast<size_t>(std::max(1, unicode::ValidSequenceLength(word, i)));
    const std::string_view ch = word.substr(i, len);
    i += len;
    if (int32_t id = Lookup(ch); id >= 0) {
      push(id);
      continue;
    }
    bool bytes_ok = spec_.byte_fallback;
    for (char c : ch) bytes_ok = bytes_ok && byte_tokens_[static_cast<uint8_t>(c)] >= 0;
    if (bytes_ok) {
      for (char c : ch) push(byte_tokens_[static_cast<uint8_t>(c)]);
    } else if (spec_.unk >= 0) {
      if (!(spec_.fuse_unk && !syms.empty() && syms.back().id == spec_.unk)) push(spec_.unk);
    }
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  // Lowest rank first, then leftmost (Hugging Face's merge order).
  struct Cand { int32_t rank; int left; int32_t merged; };
  auto worse = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.left > b.left; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> queue(worse);
  auto try_pair = [&](int l) {
    if (l < 0 || syms[l].next < 0) return;
    auto it = id_merges_.find(PairKey(syms[l].id, syms[syms[l].next].id));
    if (it != id_merges_.end()) queue.push({it->second.first, l, it->second.second});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) try_pair(i);
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Sym& a = syms[c.left];
    if (!a.alive || a.next < 0) continue;
    // Stale entry: the pair changed since it was queued.
    auto it = id_merges_.find(PairKey(a.id, syms[a.next].id));
    if (it == id_merges_.end() || it->second.second != c.merged) continue;
    Sym& b = syms[a.next];
    a.id = c.merged;
    b.alive = false;
    a.next = b.next;
    if (b.next >= 0) syms[b.next].prev = c.left;
    try_pair(a.prev);
    try_pair(c.left);
  }
  for (int i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
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
    queue.push({spec_.scores[id], l, joined.size()});
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
      else if (spec_.unk >= 0) out.push_back(spec_.unk);
    }
  };
  for (int i = 0; i >= 0; i = syms[i].next) emit(emit, text.substr(syms[i].start, syms[i].len));
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  using DecodeStart = TokenizerSpec::DecodeStart;
  std::string out;
  if (spec_.model != TokenizerSpec::Model::kSpmBpe) {
    std::string bytes;
    for (int32_t id : ids) {
      if (id >= 0 && id < vocab_size()) bytes.append(pieces_[id]);
    }
    AppendSanitizedUtf8(bytes, out);
    return out;
  }
  // Hugging Face's SentencePiece decoders: a run of byte tokens becomes its
  // bytes if they are valid UTF-8 as a whole, else one U+FFFD per byte
  // (ByteFallback); then the start is trimmed as the decoder chain says.
  bool first = true;
  std::string run;
  auto flush_run = [&]() {
    if (run.empty()) return;
    bool valid = true;
    for (size_t i = 0; i < run.size() && valid;) {
      const int len = unicode::ValidSequenceLength(run, i);
      valid = len > 0;
      i += static_cast<size_t>(std::max(len, 1));
    }
    if (valid) {
      out.append(run);
    } else {
      for (size_t i = 0; i < run.size(); ++i) out.append("\xEF\xBF\xBD");
    }
    run.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || pieces_[id].empty()) continue;
    if (spec_.types[id] == TokenType::kByte) {
      run.append(pieces_[id]);
      first = false;
      continue;
    }
    flush_run();
    std::string piece = pieces_[id];
    if (first && spec_.decode_start == DecodeStart::kDropFirstTokenMarkers && spec_.types[id] == TokenType::kNormal) {
      piece.erase(std::remove(piece.begin(), piece.end(), ' '), piece.end());
    }
    first = false;
    AppendSanitizedUtf8(piece, out);
  }
  flush_run();
  if (spec_.decode_start == DecodeStart::kStripOneSpace && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

void AppendSanitizedUtf8(std::string_view s, std::string& out) {
  for (size_t i = 0; i < s.size();) {
    const int len = unicode::ValidSequenceLength(s, i);
    if (len == 0) {
      // One U+FFFD per maximal ill-formed subpart (Unicode's recommended
      // practice, as Python's and Rust's lossy decoders do).
      out.append("\xEF\xBF\xBD");
      i += unicode::MaximalSubpartLength(s, i);
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
