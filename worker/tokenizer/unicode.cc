#include "worker/tokenizer/unicode.h"

#include <unicode/uchar.h>

#include "common/utf8.h"

namespace tessera::unicode {

int ValidSequenceLength(std::string_view s, size_t i) { return Utf8SequenceLength(s, i); }

Decoded Decode(std::string_view s) {
  Decoded d;
  d.cps.reserve(s.size());
  d.lengths.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const int len = ValidSequenceLength(s, i);
    if (len == 0) {
      d.cps.push_back(0xFFFD);
      d.lengths.push_back(1);
      ++i;
      continue;
    }
    const uint8_t c = static_cast<uint8_t>(s[i]);
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
    d.cps.push_back(cp);
    d.lengths.push_back(static_cast<uint8_t>(len));
    i += len;
  }
  return d;
}

size_t MaximalSubpartLength(std::string_view s, size_t i) {
  const uint8_t b0 = static_cast<uint8_t>(s[i]);
  // The allowed range of each continuation byte for this lead byte.
  uint8_t lo1 = 0x80, hi1 = 0xBF;
  int need = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo1 = 0xA0;
    if (b0 == 0xED) hi1 = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo1 = 0x90;
    if (b0 == 0xF4) hi1 = 0x8F;
  }
  size_t n = 1;
  for (int k = 0; k < need && i + n < s.size(); ++k) {
    const uint8_t b = static_cast<uint8_t>(s[i + n]);
    const uint8_t lo = k == 0 ? lo1 : 0x80, hi = k == 0 ? hi1 : 0xBF;
    if (b < lo || b > hi) break;
    ++n;
  }
  return n;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsLetter(uint32_t cp) {
  if (cp > 0x10FFFF) return false;
  if (cp < 0x80) return (cp | 32) >= 'a' && (cp | 32) <= 'z';
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_L_MASK) != 0;
}

bool IsNumber(uint32_t cp) {
  if (cp > 0x10FFFF) return false;
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_N_MASK) != 0;
}

bool IsWhitespace(uint32_t cp) {
  if (cp > 0x10FFFF) return false;
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return u_isUWhiteSpace(static_cast<UChar32>(cp));
}

size_t CompletePrefixLength(std::string_view s) {
  // Look back at most 3 bytes for the start of an incomplete sequence.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const uint8_t c = static_cast<uint8_t>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking
    int need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (need > static_cast<int>(back)) {
      // Could still be completed; hold it back only if it is valid so far.
      bool plausible = true;
      for (size_t k = n - back + 1; k < n; ++k) plausible &= (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80;
      return plausible ? n - back : n;
    }
    return n;
  }
  return n;
}

}  // namespace tessera::unicode
