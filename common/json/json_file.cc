#include "common/json/json_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
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

// SAX handler building an ordered_json; each open object has a name -> index
// map, so a member name is found in O(1) instead of by a linear scan.
class OrderedBuilder : public nlohmann::json_sax<nlohmann::ordered_json> {
 public:
  using J = nlohmann::ordered_json;
  explicit OrderedBuilder(int max_depth) : max_depth_(max_depth) {}

  bool null() override { return Value(nullptr); }
  bool boolean(bool v) override { return Value(v); }
  bool number_integer(number_integer_t v) override { return Value(v); }
  bool number_unsigned(number_unsigned_t v) override { return Value(v); }
  bool number_float(number_float_t v, const string_t&) override { return Value(v); }
  bool string(string_t& v) override { return Value(std::move(v)); }
  bool binary(binary_t& v) override { return Value(J::binary(std::move(v))); }
  bool start_object(std::size_t) override { return Open(J::object()); }
  bool start_array(std::size_t) override { return Open(J::array()); }
  bool end_object() override { return Close(); }
  bool end_array() override { return Close(); }
  bool key(string_t& name) override {
    if (!Depth()) return false;
    Frame& f = stack_.back();
    // ordered_map is a vector of pairs; its own insertion would scan it for
    // the name: append to the vector instead.
    auto& members = static_cast<std::vector<std::pair<const std::string, J>>&>(f.value->get_ref<J::object_t&>());
    auto [it, inserted] = f.names.try_emplace(name, members.size());
    if (inserted) members.emplace_back(std::move(name), nullptr);
    f.slot = &members[it->second].second;
    *f.slot = nullptr;  // a repeated name: its last value wins
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    failed_ = true;
    return false;
  }

  bool ok() const { return !failed_ && !too_deep_ && done_; }
  bool too_deep() const { return too_deep_; }
  J& root() { return root_; }

 private:
  struct Frame {
    J* value;
    J* slot = nullptr;  // an object's member whose value comes next
    absl::flat_hash_map<std::string, size_t> names;
  };
  bool Depth() {
    if (static_cast<int>(stack_.size()) > max_depth_) {
      too_deep_ = true;
      return false;
    }
    return true;
  }
  // Where the next value goes.
  J* Place(J v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      done_ = true;
      return &root_;
    }
    Frame& f = stack_.back();
    if (f.value->is_array()) {
      f.value->get_ref<J::array_t&>().push_back(std::move(v));
      return &f.value->get_ref<J::array_t&>().back();
    }
    *f.slot = std::move(v);
    return f.slot;
  }
  bool Value(J v) {
    if (!Depth()) return false;
    Place(std::move(v));
    return true;
  }
  bool Open(J v) {
    if (!Depth()) return false;
    J* at = Place(std::move(v));
    done_ = false;
    stack_.push_back(Frame{at, nullptr, {}});
    return true;
  }
  bool Close() {
    stack_.pop_back();
    done_ = stack_.empty();
    return true;
  }

  const int max_depth_;
  std::vector<Frame> stack_;
  J root_;
  bool failed_ = false, too_deep_ = false, done_ = false;
};

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
  Json j;
  if constexpr (std::is_same_v<Json, nlohmann::ordered_json>) {
    j = ParseOrderedJsonLinear(text, limits.max_depth + 1);
  } else {
    j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  }
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

nlohmann::ordered_json ParseOrderedJsonLinear(std::string_view text, int max_depth, bool* too_deep) {
  OrderedBuilder b(max_depth);
  const bool parsed = nlohmann::ordered_json::sax_parse(text.begin(), text.end(), &b);
  if (too_deep) *too_deep = b.too_deep();
  if (!parsed || !b.ok()) return nlohmann::ordered_json(nlohmann::ordered_json::value_t::discarded);
  return std::move(b.root());
}

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
