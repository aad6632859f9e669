#include "tools/quantize/text_corpus.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/utf8.h"

namespace tessera::quantize {

absl::StatusOr<std::string> ReadTextCorpus(const std::string& path, std::string_view purpose, uint64_t max_bytes) {
  const std::string where = absl::StrCat(std::string(purpose), " ", EscapeForMessage(path));
  // O_NONBLOCK so that opening a FIFO cannot hang; fstat then refuses it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat(where, ": cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a regular file"));
  }
  if (st.st_size == 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(where, ": the file is empty"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", st.st_size, " bytes is more than the limit of ", max_bytes));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(where, ": read failed after ", got, " bytes"));
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  for (size_t i = 0; i < text.size();) {
    const int len = text[i] == '\0' ? 0 : Utf8SequenceLength(text, i);
    if (len == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": not plain UTF-8 text (a binary file?): bad byte 0x",
          absl::Hex(static_cast<uint8_t>(text[i]), absl::kZeroPad2), " at offset ", i));
    }
    i += static_cast<size_t>(len);
  }
  bool any_text = false;
  for (char c : text) any_text |= !(c == ' ' || c == '\n' || c == '\r' || c == '\t');
  if (!any_text) return absl::InvalidArgumentError(absl::StrCat(where, ": the file holds only whitespace"));
  return text;
}

std::string StripDocWrappers(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    end = end == std::string_view::npos ? text.size() : end + 1;
    const std::string_view line = text.substr(pos, end - pos);
    const bool wrapper = (line.starts_with("<doc ") && line.find('>') != std::string_view::npos) ||
                         line == "</doc>\n" || line == "</doc>";
    if (!wrapper) out.append(line);
    pos = end;
  }
  return out;
}

}  // namespace tessera::quantize
