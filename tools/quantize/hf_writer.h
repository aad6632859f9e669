// Writing a Hugging Face output directory: one model.safetensors laid out up
// front (every tensor's name, dtype and shape is known before any is
// quantized) and filled tensor by tensor as layers finish, so no more than
// one layer's output is ever held in memory; plus config.json and the input's
// side files (tokenizer, generation config, chat template...).
#ifndef TESSERA_TOOLS_QUANTIZE_HF_WRITER_H_
#define TESSERA_TOOLS_QUANTIZE_HF_WRITER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/safetensors/safetensors_file.h"
#include "nlohmann/json.hpp"

namespace tessera::quantize {

struct TensorDecl {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;
};

// A safetensors file written in place: the header (keys sorted, data in the
// same order, header padded with spaces to 8 bytes) is written at Create;
// each tensor's bytes are written once with Write, in any order.
class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(const std::string& path,
                                                                   std::vector<TensorDecl> tensors);
  ~SafetensorsWriter();

  // REQUIRES: `name` declared; bytes.size() equals its declared size.
  absl::Status Write(const std::string& name, std::span<const uint8_t> bytes);
  // Checks every tensor was written, flushes and closes.
  absl::Status Finish();

 private:
  struct Slot {
    uint64_t offset;
    uint64_t bytes;
    bool written;
  };
  SafetensorsWriter() = default;

  std::string path_;
  int fd_ = -1;
  std::map<std::string, Slot> slots_;
};

// Copies the regular files of `input_dir` into `output_dir` except
// config.json and weight files (*.safetensors, *.bin, *.pt, *.pth, *.ckpt,
// *.h5, *.msgpack, *.gguf and their index files).
absl::Status CopySideFiles(const std::string& input_dir, const std::string& output_dir);

// Writes output_dir/config.json: the input's config.json with
// "quantization_config" set to `quantization_config` and each key of
// `overrides` (an object) set to its value.
absl::Status WriteQuantizedConfig(const std::string& input_dir, const std::string& output_dir,
                                  const nlohmann::json& quantization_config,
                                  const nlohmann::json& overrides = nlohmann::json::object());

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_HF_WRITER_H_
