#include "common/model_dir.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/escape.h"

namespace tessera {

namespace fs = std::filesystem;

absl::StatusOr<ModelDirectory> ModelDirectory::Open(const std::string& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec || st.type() == fs::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat("'", EscapeForMessage(dir, 512), "' does not exist"));
  }
  if (st.type() != fs::file_type::directory) {
    return absl::InvalidArgumentError(absl::StrCat("'", EscapeForMessage(dir, 512), "' is not a directory"));
  }
  const fs::path real = fs::canonical(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot resolve '", EscapeForMessage(dir, 512), "'"));
  ModelDirectory d;
  d.path_ = dir;
  d.roots_.push_back(real.string() + "/");
  // A hub snapshot: .../models--X/snapshots/REV -> .../models--X/blobs/
  const fs::path snapshots = real.parent_path();
  if (snapshots.filename() == "snapshots") {
    const fs::path blobs = snapshots.parent_path() / "blobs";
    if (fs::is_directory(blobs, ec)) d.roots_.push_back(fs::canonical(blobs, ec).string() + "/");
  }
  return d;
}

absl::StatusOr<std::string> ModelDirectory::Resolve(std::string_view relative) const {
  if (relative.empty() || relative.front() == '/' || relative.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("file name '", EscapeForMessage(relative), "' must be relative to the model directory"));
  }
  const fs::path p = fs::path(path_) / std::string(relative);
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(p, ec)) || !fs::exists(p, ec)) {
    return absl::NotFoundError(absl::StrCat("'", EscapeForMessage(relative), "' does not exist in '",
                                            EscapeForMessage(path_, 256), "'"));
  }
  const fs::path real = fs::canonical(p, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot resolve '", EscapeForMessage(relative), "'"));
  for (const std::string& root : roots_) {
    if (absl::StartsWith(real.string(), root)) return real.string();
  }
  return absl::PermissionDeniedError(absl::StrCat("'", EscapeForMessage(relative),
                                                  "' resolves outside the model directory; refused"));
}

bool ModelDirectory::Exists(std::string_view relative) const { return Resolve(relative).ok(); }

}  // namespace tessera
