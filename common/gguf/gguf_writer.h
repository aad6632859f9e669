// GgufWriter: builds a GGUF (version 3) image in memory: metadata, tensor
// infos, then the data of each tensor, aligned to 32 bytes. Used for the
// synthetic models (weights of a real architecture's shapes, no checkpoint).
//
// Thread-safety: none; one writer per image.
#ifndef TESSERA_COMMON_GGUF_GGUF_WRITER_H_
#define TESSERA_COMMON_GGUF_GGUF_WRITER_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/ggml_types.h"

namespace tessera {

class GgufWriter {
 public:
  void AddString(const std::string& key, const std::string& value);
  void AddU32(const std::string& key, uint32_t value);
  void AddI32(const std::string& key, int32_t value);
  void AddF32(const std::string& key, float value);
  void AddBool(const std::string& key, bool value);
  void AddStringArray(const std::string& key, const std::vector<std::string>& values);
  void AddF32Array(const std::string& key, const std::vector<float>& values);
  void AddI32Array(const std::string& key, const std::vector<int32_t>& values);

  // A tensor of `type` with GGUF dims (ne[0] = elements per row). `fill`
  // writes its bytes (exactly the tensor's size) when the image is built.
  using Fill = std::function<void(std::span<uint8_t> bytes)>;
  absl::Status AddTensor(const std::string& name, std::vector<int64_t> dims, GgmlType type, Fill fill);

  // The image. InvalidArgument if a tensor's row is not whole blocks.
  absl::StatusOr<std::vector<uint8_t>> Build() const;

 private:
  template <typename T>
  void AddScalar(const std::string& key, uint32_t type, T value);
  template <typename T>
  void AddArray(const std::string& key, uint32_t type, const std::vector<T>& values);

  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    GgmlType type;
    size_t bytes;
    Fill fill;
  };
  std::vector<uint8_t> kv_;
  uint64_t kv_count_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_GGUF_GGUF_WRITER_H_
