#include "tools/quantize/group_context.h"
namespace tessera::quantize {
absl::Status RunGptq(GroupJob&, const std::vector<int32_t>&, int, int) { return absl::UnimplementedError("gptq: soon"); }
}
