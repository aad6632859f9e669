#include "tools/quantize/group_quantize.h"

namespace tessera::quantize {

absl::Status QuantizeToGroupFormat(const QuantizeOptions&, Progress&, const std::string&) {
  return absl::UnimplementedError("awq/gptq/rtn output is being written (issue 15)");
}

}  // namespace tessera::quantize
