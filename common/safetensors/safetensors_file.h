// SafetensorsFile: a parsed .safetensors file (LoRA adapters, HF weights).
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON header,
// then the tensor data. Every byte is treated as hostile: the header length
// is capped, the header must be a JSON object starting with '{' with no
// duplicate keys, every tensor's dtype, shape and data_offsets must agree,
// and the tensors must tile the data section exactly (contiguous, no
// overlap, no gap, no trailing bytes). Tensor data may be unaligned in the
// file: read it with CopyTo (or as bytes), never through a typed pointer.
//
// Thread-safety: immutable after parsing; safe for concurrent reads.
#ifndef TESSERA_COMMON_SAFETENSORS_SAFETENSORS_FILE_H_
#define TESSERA_COMMON_SAFETENSORS_SAFETENSORS_FILE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/mapped_file.h"

namespace tessera {

enum class SafetensorsDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };
std::string_view DtypeName(SafetensorsDtype d);
size_t DtypeSize(SafetensorsDtype d);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;  // empty for a scalar
  std::span<const uint8_t> bytes;  // possibly unaligned
  int64_t elements() const;
  // Converts to float (F32, F16, BF16 only). REQUIRES: out.size() == elements().
  absl::Status ToFloat(std::span<float> out) const;
};

struct SafetensorsLimits {
  uint64_t max_header_bytes = 100u << 20;
  size_t max_tensors = 1u << 16;
  int max_rank = 8;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path,
                                                               const SafetensorsLimits& limits = {});
  // Parses an in-memory image; `bytes` must outlive the returned object.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBuffer(std::span<const uint8_t> bytes,
                                                                     const SafetensorsLimits& limits = {});

  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* Find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Drops the resident pages of `range` (tensor bytes already copied or
  // repacked elsewhere); see MappedFile::DropPages. No-op for buffers.
  void DropPages(std::span<const uint8_t> range) const {
    if (mapping_) mapping_->DropPages(range);
  }

 private:
  SafetensorsFile() = default;
  absl::Status Parse(const SafetensorsLimits& limits);

  std::unique_ptr<MappedFile> mapping_;
  std::span<const uint8_t> bytes_;
  std::vector<SafetensorsTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_SAFETENSORS_SAFETENSORS_FILE_H_
