// The input of tessera-quantize: a checkpoint whose linear weights are still
// dense (F32, F16 or BF16). Quantizing a quantized model compounds two
// rounding errors and hides the first, so such an input is refused.
#ifndef TESSERA_TOOLS_QUANTIZE_INPUT_MODEL_H_
#define TESSERA_TOOLS_QUANTIZE_INPUT_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/model/checkpoint.h"

namespace tessera::quantize {

// Opens `path` (a GGUF file or an HF directory) and checks that every weight
// of the Llama graph it has is F32, F16 or BF16; InvalidArgument naming the
// first quantized tensor otherwise.
absl::StatusOr<std::unique_ptr<Checkpoint>> OpenDenseInput(const std::string& path);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_INPUT_MODEL_H_
