// Makes untrusted bytes (names and keys read from files or requests) safe to
// put in an error message: printable ASCII and valid UTF-8 pass through,
// anything else becomes \xNN, and long strings are cut with "...".
#ifndef TESSERA_COMMON_ESCAPE_H_
#define TESSERA_COMMON_ESCAPE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace tessera {

std::string EscapeForMessage(std::string_view s, size_t max_bytes = 96);

}  // namespace tessera

#endif  // TESSERA_COMMON_ESCAPE_H_
