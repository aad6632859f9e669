// Fuzz target: any byte string parses or fails with a Status; a parsed
// file's tensors are safe to read.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/safetensors/safetensors_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = tessera::SafetensorsFile::FromBuffer(std::span<const uint8_t>(data, size));
  if (!f.ok()) return 0;
  size_t sink = 0;
  for (const auto& t : (*f)->tensors()) {
    if (!t.bytes.empty()) sink += t.bytes.front() + t.bytes.back();
    if (t.elements() <= (1 << 16)) {
      std::vector<float> out(static_cast<size_t>(t.elements()));
      sink += t.ToFloat(out).ok();
    }
  }
  return sink == 0xFFFFFFFF ? 1 : 0;
}
