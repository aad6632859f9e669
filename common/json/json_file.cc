#include "common/json/json_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/escape.h"

namespace tessera {

absl::StatusOr<std::string> ReadRegularFile(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
  // below); for regular files the flag changes nothing.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat("cannot open '", EscapeForMessage(path, 512), "': ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", EscapeForMessage(path, 512), "' is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", EscapeForMessage(path, 512), "' is ", st.st_size,
                                                   " bytes; the limit for this file is ", max_bytes));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // shrank while reading: keep what is there
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

int JsonNestingDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

namespace {

template <class Json>
absl::StatusOr<Json> Parse(std::string_view text, std::string_view what_view, const JsonLimits& limits) {
  const std::string what(what_view);
  if (text.size() > limits.max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", text.size(), " bytes; the limit is ", limits.max_bytes));
  }
  if (const int depth = JsonNestingDepth(text); depth > limits.max_depth) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " nests ", depth, " levels deep; the limit is ", limits.max_depth));
  }
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON"));
  return j;
}

template <class Json>
absl::StatusOr<Json> ReadFile(const std::string& path, const JsonLimits& limits) {
  absl::StatusOr<std::string> text = ReadRegularFile(path, limits.max_bytes);
  if (!text.ok()) return text.status();
  return Parse<Json>(*text, absl::StrCat("'", EscapeForMessage(path, 512), "'"), limits);
}

}  // namespace

absl::StatusOr<nlohmann::json> ParseJsonText(std::string_view text, std::string_view what, const JsonLimits& limits) {
  return Parse<nlohmann::json>(text, what, limits);
}
absl::StatusOr<nlohmann::ordered_json> ParseOrderedJsonText(std::string_view text, std::string_view what,
                                                            const JsonLimits& limits) {
  return Parse<nlohmann::ordered_json>(text, what, limits);
}
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, const JsonLimits& limits) {
  return ReadFile<nlohmann::json>(path, limits);
}
absl::StatusOr<nlohmann::ordered_json> ReadOrderedJsonFile(const std::string& path, const JsonLimits& limits) {
  return ReadFile<nlohmann::ordered_json>(path, limits);
}

}  // namespace tessera
