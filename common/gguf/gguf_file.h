// GgufFile: a parsed GGUF (v2 or v3) model file with its tensors in place.
//
// The parser treats every byte as hostile: each count, length, dimension,
// offset and type is checked before use, so a truncated, oversized or crafted
// file yields an absl::Status naming the problem and never an out-of-bounds
// read. Size arithmetic on file values is checked: an overflow is reported
// as such, with its operands, never as a wrapped number. Keys and tensor
// names are non-empty, unique, valid UTF-8 without NUL, and tensor names are
// at most 63 bytes (llama.cpp's limit; see gguf_file.cc for which rules are
// llama.cpp's and which are stricter); messages show offending bytes
// escaped. Tensor data is not copied: GgufTensor::data points into the
// mapping (or the caller's buffer for FromBuffer) and lives as long as the
// GgufFile.
//
// Thread-safety: immutable after Open/FromBuffer; safe for concurrent reads.
#ifndef TESSERA_COMMON_GGUF_GGUF_FILE_H_
#define TESSERA_COMMON_GGUF_GGUF_FILE_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/gguf/gguf_value.h"
#include "common/ggml_types.h"
#include "common/mapped_file.h"

namespace tessera {

inline constexpr int kGgufMaxDims = 4;

struct GgufTensor {
  std::string name;
  GgmlType type;
  int n_dims = 0;
  // ne[0] is the innermost (contiguous) dimension; unused dims are 1.
  std::array<int64_t, kGgufMaxDims> ne{1, 1, 1, 1};
  uint64_t offset = 0;       // relative to the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
  size_t row_bytes() const { return nbytes / static_cast<size_t>(rows()); }
};

struct GgufLimits {
  uint64_t max_tensors = 1u << 16;
  uint64_t max_kv = 1u << 16;
  uint64_t max_string_bytes = 64u << 20;
  uint64_t max_key_bytes = 1u << 16;
  uint64_t max_array_elements = 1u << 26;
  int max_array_depth = 8;
};

class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path,
                                                        const GgufLimits& limits = {});
  // Parses an in-memory image; `bytes` must outlive the returned object.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBuffer(std::span<const uint8_t> bytes,
                                                              const GgufLimits& limits = {});

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  // The metadata keys in file order (a rewriter that must reproduce a file's
  // key order, such as tessera-quantize, needs it; metadata() is sorted).
  const std::vector<std::string>& key_order() const { return key_order_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  size_t file_bytes() const { return bytes_.size(); }

  const GgufValue* Find(const std::string& key) const;
  const GgufTensor* FindTensor(const std::string& name) const;

  // Typed accessors: NotFound if absent, InvalidArgument (naming the key, the
  // expected and the actual type) if present with another type or out of range.
  absl::StatusOr<std::string> GetString(const std::string& key) const;
  absl::StatusOr<uint64_t> GetUint(const std::string& key) const;
  absl::StatusOr<double> GetFloat(const std::string& key) const;
  absl::StatusOr<bool> GetBool(const std::string& key) const;
  absl::StatusOr<const GgufArray*> GetArray(const std::string& key, GgufType element_type) const;

 private:
  GgufFile() = default;
  absl::Status Parse(const GgufLimits& limits);

  std::unique_ptr<MappedFile> mapping_;
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<std::string> key_order_;
  std::vector<GgufTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_GGUF_GGUF_FILE_H_
