// Plain-text corpora for calibration and evaluation, read as hostile input:
// a regular file, bounded in size, non-empty, valid UTF-8 without NUL bytes
// (anything else is called binary, with the offset of the first bad byte).
#ifndef TESSERA_TOOLS_QUANTIZE_TEXT_CORPUS_H_
#define TESSERA_TOOLS_QUANTIZE_TEXT_CORPUS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tessera::quantize {

inline constexpr uint64_t kMaxCorpusBytes = uint64_t{1} << 30;

// `purpose` names the flag in errors ("--calibration").
absl::StatusOr<std::string> ReadTextCorpus(const std::string& path, std::string_view purpose,
                                           uint64_t max_bytes = kMaxCorpusBytes);

// Drops the wrapper lines of WikiExtractor output (`<doc id=...>` and
// `</doc>`), keeping the article text; other text is returned unchanged.
std::string StripDocWrappers(std::string_view text);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_TEXT_CORPUS_H_
