// UTF-8 validation shared by everything that handles untrusted text.
#ifndef TESSERA_COMMON_UTF8_H_
#define TESSERA_COMMON_UTF8_H_

#include <cstddef>
#include <string_view>

namespace tessera {

// Length in bytes of the UTF-8 sequence starting at s[i] if it is valid
// (shortest form, no surrogates, <= U+10FFFF), else 0.
// REQUIRES: i < s.size().
int Utf8SequenceLength(std::string_view s, size_t i);

}  // namespace tessera

#endif  // TESSERA_COMMON_UTF8_H_
