// gguf:TYPE output of tessera-quantize (owned by the GGUF quantizer).
#ifndef TESSERA_TOOLS_QUANTIZE_GGUF_QUANTIZE_H_
#define TESSERA_TOOLS_QUANTIZE_GGUF_QUANTIZE_H_

#include <string>

#include "absl/status/status.h"
#include "tools/quantize/quantize_options.h"

namespace tessera::quantize {

// Writes the quantized GGUF to `staging_path` (a file that does not exist yet).
absl::Status QuantizeToGguf(const QuantizeOptions& options, Progress& progress, const std::string& staging_path);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_GGUF_QUANTIZE_H_
