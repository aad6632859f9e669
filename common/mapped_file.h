// MappedFile: a read-only memory mapping of a whole file.
//
// Ownership: the object owns the mapping; bytes() stays valid until it is
// destroyed. Thread-safe for concurrent reads (the mapping is immutable).
// Model weights are used in place from the mapping, so a model's resident
// size is what the kernels touch, never a second copy.
#ifndef TESSERA_COMMON_MAPPED_FILE_H_
#define TESSERA_COMMON_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace tessera {

class MappedFile {
 public:
  // Maps `path` read-only. Errors name the path and the failing call.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  // Tells the kernel the pages wholly inside `range` (a part of bytes())
  // are not needed now: they leave the resident set and are read from the
  // file again if touched. For weights repacked into other memory at load.
  void DropPages(std::span<const uint8_t> range) const;
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_MAPPED_FILE_H_
