#include "worker/tokenizer/pre_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "worker/tokenizer/unicode.h"

namespace tessera {
namespace {

using unicode::IsLetter;
using unicode::IsNumber;
using unicode::IsWhitespace;

constexpr uint32_t kEnd = 0xFFFFFFFF;

// Code points of one piece of text with byte offsets, and the emitter of
// pieces as byte ranges.
class Splitter {
 public:
  explicit Splitter(std::string_view text) : text_(text), d_(unicode::Decode(text)) {
    offsets_.resize(d_.cps.size() + 1);
    size_t off = 0;
    for (size_t i = 0; i < d_.cps.size(); ++i) {
      offsets_[i] = off;
      off += d_.lengths[i];
    }
    offsets_[d_.cps.size()] = off;
  }
  size_t size() const { return d_.cps.size(); }
  uint32_t at(size_t i) const { return i < d_.cps.size() ? d_.cps[i] : kEnd; }
  void Emit(size_t from, size_t to, std::vector<std::string_view>& out) const {
    if (to > from) out.push_back(text_.substr(offsets_[from], offsets_[to] - offsets_[from]));
  }

 private:
  std::string_view text_;
  unicode::Decoded d_;
  std::vector<size_t> offsets_;
};

bool IsLNS(uint32_t c) { return c != kEnd && (IsLetter(c) || IsNumber(c) || IsWhitespace(c)); }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at pos, or 0.
size_t Contraction(const Splitter& s, size_t pos, bool ignore_case) {
  if (s.at(pos) != '\'') return 0;
  auto lc = [&](size_t i) { uint32_t c = s.at(i); return ignore_case ? unicode::AsciiLower(c) : c; };
  const uint32_t c1 = lc(pos + 1);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  const uint32_t c2 = lc(pos + 2);
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// Whitespace handling shared by both families: \s+(?!\S) then \s+.
size_t WhitespaceRun(const Splitter& s, size_t pos) {
  size_t n = 0;
  while (s.at(pos + n) != kEnd && IsWhitespace(s.at(pos + n))) ++n;
  if (n > 1 && s.at(pos + n) != kEnd) return n - 1;  // leave one for the next piece
  return n;
}

void SplitGpt2(const Splitter& s, size_t begin, size_t end, std::vector<std::string_view>& out) {
  // `end` bounds the view: characters at or past it are treated as absent.
  auto at = [&](size_t i) { return i < end ? s.at(i) : kEnd; };
  size_t pos = begin;
  while (pos < end) {
    const uint32_t c = at(pos);
    if (size_t n = Contraction(s, pos, false); n > 0 && pos + n <= end) {
      s.Emit(pos, pos + n, out);
      pos += n;
      continue;
    }
    const size_t p1 = (c == ' ') ? pos + 1 : pos;
    const uint32_t c1 = at(p1);
    if (c1 != kEnd && IsLetter(c1)) {
      size_t e = p1;
      while (at(e) != kEnd && IsLetter(at(e))) ++e;
      s.Emit(pos, e, out);
      pos = e;
      continue;
    }
    if (c1 != kEnd && IsNumber(c1)) {
      size_t e = p1;
      while (at(e) != kEnd && IsNumber(at(e))) ++e;
      s.Emit(pos, e, out);
      pos = e;
      continue;
    }
    if (c1 != kEnd && !IsLNS(c1)) {
      size_t e = p1;
      while (at(e) != kEnd && !IsLNS(at(e))) ++e;
      s.Emit(pos, e, out);
      pos = e;
      continue;
    }
    size_t n = 0;
    while (at(pos + n) != kEnd && IsWhitespace(at(pos + n))) ++n;
    if (n > 1 && at(pos + n) != kEnd) --n;
    if (n == 0) n = 1;  // unreachable for valid categories; never loop forever
    s.Emit(pos, pos + n, out);
    pos += n;
  }
}

void SplitLlama3(const Splitter& s, size_t max_digits, std::vector<std::string_view>& out) {
  size_t pos = 0;
  const size_t end = s.size();
  auto is_nl = [](uint32_t c) { return c == '\r' || c == '\n'; };
  while (pos < end) {
    const uint32_t c = s.at(pos);
    if (size_t n = Contraction(s, pos, true); n > 0) {
      s.Emit(pos, pos + n, out);
      pos += n;
      continue;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    {
      size_t p1 = pos;
      if (!is_nl(c) && !IsLetter(c) && !IsNumber(c)) p1 = pos + 1;
      if (IsLetter(s.at(p1)) && s.at(p1) != kEnd) {
        size_t e = p1;
        while (s.at(e) != kEnd && IsLetter(s.at(e))) ++e;
        s.Emit(pos, e, out);
        pos = e;
        continue;
      }
    }
    // \p{N}{1,max}
    if (IsNumber(c)) {
      size_t e = pos;
      while (e - pos < max_digits && s.at(e) != kEnd && IsNumber(s.at(e))) ++e;
      s.Emit(pos, e, out);
      pos = e;
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    {
      const size_t p1 = (c == ' ') ? pos + 1 : pos;
      const uint32_t c1 = s.at(p1);
      if (c1 != kEnd && !IsLNS(c1)) {
        size_t e = p1;
        while (s.at(e) != kEnd && !IsLNS(s.at(e))) ++e;
        while (is_nl(s.at(e))) ++e;
        s.Emit(pos, e, out);
        pos = e;
        continue;
      }
    }
    // \s*[\r\n]+ : up to and including the last newline of the whitespace run
    size_t n = 0, last_nl = 0;
    while (s.at(pos + n) != kEnd && IsWhitespace(s.at(pos + n))) {
      if (is_nl(s.at(pos + n))) last_nl = n + 1;
      ++n;
    }
    if (last_nl > 0) {
      s.Emit(pos, pos + last_nl, out);
      pos += last_nl;
      continue;
    }
    // \s+(?!\S) | \s+
    if (n > 1 && s.at(pos + n) != kEnd) --n;
    if (n == 0) n = 1;
    s.Emit(pos, pos + n, out);
    pos += n;
  }
}

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizerFromName(std::string_view name) {
  if (name == "gpt2" || name == "gpt-2" || name == "phi-2" || name == "olmo" || name == "jina-es" ||
      name == "jina-de" || name == "starcoder" || name == "refact") {
    return name == "starcoder" || name == "refact" ? PreTokenizer::kSmolLm : PreTokenizer::kGpt2;
  }
  if (name == "smollm") return PreTokenizer::kSmolLm;
  if (name == "llama3" || name == "llama-v3" || name == "llama-bpe" || name == "falcon3" ||
      name == "smaug-bpe" || name == "dbrx") {
    return PreTokenizer::kLlama3;
  }
  if (name == "qwen2" || name == "deepseek-r1-qwen" || name == "megrez") return PreTokenizer::kQwen2;
  return absl::UnimplementedError(absl::StrCat("unsupported pre-tokenizer '", EscapeForMessage(name),
                                               "' (tokenizer.ggml.pre); supported: gpt2, smollm, "
                                               "llama-bpe/llama3, qwen2"));
}

std::vector<std::string_view> PreTokenize(PreTokenizer kind, std::string_view text) {
  std::vector<std::string_view> out;
  Splitter s(text);
  switch (kind) {
    case PreTokenizer::kGpt2:
      SplitGpt2(s, 0, s.size(), out);
      break;
    case PreTokenizer::kSmolLm: {
      // Every number character is a piece of its own; the runs between them
      // are split by the GPT-2 rules.
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (IsNumber(s.at(i))) {
          SplitGpt2(s, start, i, out);
          s.Emit(i, i + 1, out);
          start = i + 1;
        }
      }
      SplitGpt2(s, start, s.size(), out);
      break;
    }
    case PreTokenizer::kLlama3:
      SplitLlama3(s, 3, out);
      break;
    case PreTokenizer::kQwen2:
      SplitLlama3(s, 1, out);
      break;
  }
  return out;
}

}  // namespace tessera
