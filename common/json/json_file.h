// Reading small files that may be hostile (model and adapter configs,
// tokenizer files): the file must be a regular file (a FIFO, device or
// directory is refused before a byte is read, so /dev/zero or a pipe cannot
// hang or grow the process) no larger than a stated cap, and JSON must nest
// no deeper than a stated limit. Errors name the file and the broken rule.
#ifndef TESSERA_COMMON_JSON_JSON_FILE_H_
#define TESSERA_COMMON_JSON_JSON_FILE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera {

// The whole file, if it is a regular file of at most `max_bytes` bytes.
// NotFound if it does not exist; InvalidArgument if it is not a regular file
// or is too large (its size is checked before reading).
absl::StatusOr<std::string> ReadRegularFile(const std::string& path, uint64_t max_bytes);

struct JsonLimits {
  uint64_t max_bytes = 16u << 20;
  int max_depth = 64;  // nesting of arrays and objects
};

// Deepest nesting of arrays/objects in `text` (strings and escapes are
// skipped; no other validation).
int JsonNestingDepth(std::string_view text);

// Parses `text` (named `what` in messages) within `limits`.
absl::StatusOr<nlohmann::json> ParseJsonText(std::string_view text, std::string_view what,
                                             const JsonLimits& limits = {});
absl::StatusOr<nlohmann::ordered_json> ParseOrderedJsonText(std::string_view text, std::string_view what,
                                                            const JsonLimits& limits = {});

// An ordered_json parse in linear time. nlohmann's own ordered parse looks
// every member name up in the object's vector before inserting it, so an
// object of k members costs k^2/2 string compares (a 1 MB object of 100,000
// members: 27 s on one core); this one keeps a hash index of the open
// objects' names while parsing. Same result as ordered_json::parse: members
// in document order, a repeated name keeps its first position and its last
// value. Returns a discarded value when `text` is not valid JSON (or not
// valid UTF-8) or when it nests deeper than `max_depth`; then *too_deep
// (if given) says which. Depth is counted as nlohmann's parser callbacks
// count it: the number of open arrays/objects around a member or element.
nlohmann::ordered_json ParseOrderedJsonLinear(std::string_view text, int max_depth, bool* too_deep = nullptr);

// ReadRegularFile + ParseJsonText.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, const JsonLimits& limits = {});
absl::StatusOr<nlohmann::ordered_json> ReadOrderedJsonFile(const std::string& path, const JsonLimits& limits = {});

// Runs `f`, which reads a parsed document with nlohmann's accessors (some
// throw on a type mismatch, e.g. value() of a key holding another type),
// and turns such an exception into InvalidArgument naming `what`. Parsers
// of hostile files wrap their whole reading in it so that no exception
// leaves them.
template <class F>
auto CatchJsonErrors(std::string_view what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(std::string(what) + ": a value has the wrong type (" + e.what() + ")");
  }
}

}  // namespace tessera

#endif  // TESSERA_COMMON_JSON_JSON_FILE_H_
