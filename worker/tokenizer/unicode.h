// UTF-8 decoding and the Unicode character classes the pre-tokenizers need
// (letters \p{L}, numbers \p{N}, White_Space \s), answered by ICU.
#ifndef TESSERA_WORKER_TOKENIZER_UNICODE_H_
#define TESSERA_WORKER_TOKENIZER_UNICODE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::unicode {

// Length in bytes of the UTF-8 sequence starting at s[i] if it is valid
// (shortest form, no surrogates, <= U+10FFFF), else 0.
int ValidSequenceLength(std::string_view s, size_t i);
// For an ill-formed sequence at s[i]: the length (>= 1) of its maximal
// subpart, the longest prefix of a well-formed sequence found there.
size_t MaximalSubpartLength(std::string_view s, size_t i);

// Decodes s into code points. Invalid bytes decode as U+FFFD, one per byte,
// and each such code point is reported as 1 byte long in `lengths`.
struct Decoded {
  std::vector<uint32_t> cps;
  std::vector<uint8_t> lengths;  // UTF-8 bytes each code point came from
};
Decoded Decode(std::string_view s);

void AppendUtf8(uint32_t cp, std::string& out);

bool IsLetter(uint32_t cp);
bool IsNumber(uint32_t cp);
bool IsWhitespace(uint32_t cp);
// Lower-cases ASCII letters only (enough for the contraction rules).
inline uint32_t AsciiLower(uint32_t cp) { return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp; }

// Length of the longest prefix of s that ends on a whole UTF-8 character
// boundary (an incomplete trailing sequence is excluded; invalid bytes count
// as whole characters so that they are never held back forever).
size_t CompletePrefixLength(std::string_view s);

}  // namespace tessera::unicode

#endif  // TESSERA_WORKER_TOKENIZER_UNICODE_H_
