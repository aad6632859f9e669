#include "common/escape.h"

#include <cstdio>

#include "common/utf8.h"

namespace tessera {

std::string EscapeForMessage(std::string_view s, size_t max_bytes) {
  std::string out;
  size_t i = 0;
  for (; i < s.size() && out.size() < max_bytes;) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out.push_back(static_cast<char>(c));
      ++i;
    } else if (size_t n = c >= 0x80 ? static_cast<size_t>(Utf8SequenceLength(s, i)) : 0; n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out.append(buf);
      ++i;
    }
  }
  if (i < s.size()) out.append("...");
  return out;
}

}  // namespace tessera
