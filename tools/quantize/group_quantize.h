// awq, gptq and rtn outputs of tessera-quantize: a Hugging Face directory in
// AutoAWQ's GEMM or GPTQ's layout (owned by the group quantizer).
#ifndef TESSERA_TOOLS_QUANTIZE_GROUP_QUANTIZE_H_
#define TESSERA_TOOLS_QUANTIZE_GROUP_QUANTIZE_H_

#include <string>

#include "absl/status/status.h"
#include "tools/quantize/quantize_options.h"

namespace tessera::quantize {

// Writes the checkpoint into `staging_dir` (an empty directory).
absl::Status QuantizeToGroupFormat(const QuantizeOptions& options, Progress& progress, const std::string& staging_dir);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_GROUP_QUANTIZE_H_
