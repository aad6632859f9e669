#include "common/config/config_table.h"

#include <cstdio>
#include <new>

#include "absl/base/internal/fast_type_id.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/internal/commandlineflag.h"
#include "absl/flags/internal/registry.h"
#include "absl/strings/str_join.h"
#include "common/json/json_file.h"

namespace tessera::config {
namespace {

template <typename T>
bool ParseAs(std::string_view text, void* dst, std::string* error) {
  T v{};
  if (!absl::ParseFlag(absl::string_view(text.data(), text.size()), &v, error)) return false;
  if (dst != nullptr) new (dst) T(std::move(v));
  return true;
}

// Parses `text` as `kind`; constructs the value at `dst` unless it is null.
bool Parse(ValueKind kind, std::string_view text, void* dst, std::string* error) {
  switch (kind) {
    case ValueKind::kBool: return ParseAs<bool>(text, dst, error);
    case ValueKind::kInt: return ParseAs<int>(text, dst, error);
    case ValueKind::kInt64: return ParseAs<int64_t>(text, dst, error);
    case ValueKind::kUint64: return ParseAs<uint64_t>(text, dst, error);
    case ValueKind::kDouble: return ParseAs<double>(text, dst, error);
    case ValueKind::kString: return ParseAs<std::string>(text, dst, error);
    case ValueKind::kStringList: return ParseAs<std::vector<std::string>>(text, dst, error);
  }
  return false;
}

absl::flags_internal::FlagFastTypeId TypeIdOf(ValueKind kind) {
  using absl::base_internal::FastTypeId;
  switch (kind) {
    case ValueKind::kBool: return FastTypeId<bool>();
    case ValueKind::kInt: return FastTypeId<int>();
    case ValueKind::kInt64: return FastTypeId<int64_t>();
    case ValueKind::kUint64: return FastTypeId<uint64_t>();
    case ValueKind::kDouble: return FastTypeId<double>();
    case ValueKind::kString: return FastTypeId<std::string>();
    case ValueKind::kStringList: return FastTypeId<std::vector<std::string>>();
  }
  return FastTypeId<std::string>();
}

}  // namespace

// An Abseil flag whose values are kept as the texts given: the table turns
// them into the key's type when it applies them. Typed (TypeId) so that
// Abseil's parser treats bool flags as such (--flag, --noflag) and --help
// quotes strings.
class FlagSet::TableFlag final : public absl::CommandLineFlag {
 public:
  TableFlag(FlagSpec spec, std::string filename) : spec_(std::move(spec)), filename_(std::move(filename)) {}

  absl::string_view Name() const override { return spec_.name; }
  std::string Filename() const override { return filename_; }
  std::string Help() const override { return spec_.help; }
  std::string DefaultValue() const override { return spec_.default_text; }
  std::string CurrentValue() const override {
    if (texts_.empty()) return spec_.default_text;
    if (spec_.secret) return absl::StrCat(texts_.size(), " given");
    return spec_.kind == ValueKind::kStringList ? absl::StrJoin(texts_, ",") : texts_.back();
  }
  const std::vector<std::string>& texts() const { return texts_; }

 private:
  bool ParseFrom(absl::string_view value, absl::flags_internal::FlagSettingMode mode,
                 absl::flags_internal::ValueSource, std::string& error) override {
    if (!Parse(spec_.kind, std::string_view(value.data(), value.size()), nullptr, &error)) return false;
    switch (mode) {
      case absl::flags_internal::SET_FLAGS_DEFAULT:
        spec_.default_text = std::string(value);
        break;
      case absl::flags_internal::SET_FLAG_IF_DEFAULT:
        if (texts_.empty()) texts_.emplace_back(value);
        break;
      case absl::flags_internal::SET_FLAGS_VALUE:
        texts_.emplace_back(value);
        break;
    }
    return true;
  }
  absl::flags_internal::FlagFastTypeId TypeId() const override { return TypeIdOf(spec_.kind); }
  std::unique_ptr<absl::flags_internal::FlagStateInterface> SaveState() override { return nullptr; }
  // For CommandLineFlag::TryGet: the value the texts given make.
  void Read(void* dst) const override {
    std::string error;
    if (texts_.empty() || spec_.kind != ValueKind::kStringList) {
      Parse(spec_.kind, texts_.empty() ? spec_.default_text : texts_.back(), dst, &error);
      return;
    }
    std::vector<std::string> all;
    for (const std::string& t : texts_) {
      std::vector<std::string> one;
      absl::ParseFlag(t, &one, &error);
      all.insert(all.end(), one.begin(), one.end());
    }
    new (dst) std::vector<std::string>(std::move(all));
  }
  bool IsSpecifiedOnCommandLine() const override { return !texts_.empty(); }
  bool ValidateInputValue(absl::string_view value) const override {
    std::string error;
    return Parse(spec_.kind, std::string_view(value.data(), value.size()), nullptr, &error);
  }
  void CheckDefaultValueParsingRoundtrip() const override {}

  FlagSpec spec_;
  std::string filename_;
  std::vector<std::string> texts_;
};

FlagSet::FlagSet() = default;
FlagSet::~FlagSet() = default;
FlagSet::FlagSet(FlagSet&&) noexcept = default;
FlagSet& FlagSet::operator=(FlagSet&&) noexcept = default;

void FlagSet::Register(const std::vector<FlagSpec>& specs, std::string_view filename) {
  for (const FlagSpec& spec : specs) {
    flags_.push_back(std::make_unique<TableFlag>(spec, std::string(filename)));
    absl::flags_internal::RegisterCommandLineFlag(*flags_.back(), flags_.back()->Filename().c_str());
  }
}

std::vector<FlagText> FlagSet::Given() const {
  std::vector<FlagText> out;
  for (const auto& f : flags_) {
    for (const std::string& t : f->texts()) out.push_back({std::string(f->Name()), t});
  }
  return out;
}

std::string FlagSpelling(std::string_view name) {
  std::string out = absl::StrCat("--", std::string(name));
  for (char& ch : out) {
    if (ch == '_') ch = '-';
  }
  return out;
}

absl::Status CheckOneOf(std::string_view name, const std::string& v, const std::vector<std::string>& allowed) {
  for (const std::string& a : allowed) {
    if (v == a) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(name), " must be one of ", absl::StrJoin(allowed, ", "), "; got '", v, "'"));
}

absl::StatusOr<std::string> ReadConfigText(const std::string& path) {
  return ReadRegularFile(path, 1 << 20);
}

void WriteConfigWarning(const std::string& program, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program.c_str(), message.c_str());
}

}  // namespace tessera::config
