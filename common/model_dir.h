// ModelDirectory: the files of a model or adapter directory, resolved so that
// nothing outside it is ever opened. A relative name (from config files,
// index.json weight maps) must resolve, symlinks followed, to a path inside
// the directory — or, when the directory is a Hugging Face hub snapshot
// (.../models--ORG--NAME/snapshots/REVISION, whose files are symlinks into
// the repository's blobs/), inside that repository's blobs/ directory.
#ifndef TESSERA_COMMON_MODEL_DIR_H_
#define TESSERA_COMMON_MODEL_DIR_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

class ModelDirectory {
 public:
  // InvalidArgument if `dir` is not a directory; NotFound if it is missing.
  static absl::StatusOr<ModelDirectory> Open(const std::string& dir);

  const std::string& path() const { return path_; }  // as given
  // The canonical path of `relative` inside the directory. NotFound if it
  // does not exist; PermissionDenied if it resolves outside; InvalidArgument
  // for an absolute or empty name.
  absl::StatusOr<std::string> Resolve(std::string_view relative) const;
  bool Exists(std::string_view relative) const;

 private:
  std::string path_;
  std::vector<std::string> roots_;  // canonical, each ending in '/'
};

}  // namespace tessera

#endif  // TESSERA_COMMON_MODEL_DIR_H_
