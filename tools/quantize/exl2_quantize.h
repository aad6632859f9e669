// --format exl2 of tessera-quantize: an ExLlamaV2 (EXL2) checkpoint at a
// target average bits per weight (exl2_quantize.cc; the per-matrix method in
// exl2_quant.h).
#ifndef TESSERA_TOOLS_QUANTIZE_EXL2_QUANTIZE_H_
#define TESSERA_TOOLS_QUANTIZE_EXL2_QUANTIZE_H_

#include <string>

#include "absl/status/status.h"
#include "tools/quantize/quantize_options.h"

namespace tessera::quantize {

// Writes the checkpoint into `staging_dir` (an empty directory):
// output.safetensors and config.json as exllamav2's converter lays them out.
absl::Status QuantizeToExl2(const QuantizeOptions& options, Progress& progress, const std::string& staging_dir);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_EXL2_QUANTIZE_H_
