// Fuzz target: any byte string must parse or fail with a Status, never crash,
// hang or read out of bounds; a parsed file's metadata and tensors must be
// safe to walk.
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/gguf/gguf_file.h"

namespace {
size_t Walk(const tessera::GgufValue& v, int depth) {
  size_t n = 1;
  if (v.is_string()) n += v.as_string().size();
  if (v.is_array() && depth < 16) for (const auto& e : v.as_array().items) n += Walk(e, depth + 1);
  return n;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = tessera::GgufFile::FromBuffer(std::span<const uint8_t>(data, size));
  if (!f.ok()) return 0;
  size_t sink = 0;
  for (const auto& [k, v] : (*f)->metadata()) sink += k.size() + Walk(v, 0);
  for (const auto& t : (*f)->tensors()) {
    if (t.nbytes > 0) sink += t.data[0] + t.data[t.nbytes - 1];
  }
  return sink == 0xFFFFFFFF ? 1 : 0;
}
