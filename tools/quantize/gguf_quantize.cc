#include "tools/quantize/gguf_quantize.h"

namespace tessera::quantize {

absl::Status QuantizeToGguf(const QuantizeOptions&, Progress&, const std::string&) {
  return absl::UnimplementedError("gguf output is being written (issue 15)");
}

}  // namespace tessera::quantize
