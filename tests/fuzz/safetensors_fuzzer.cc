// Fuzz target: any byte string parses or fails with a Status; a parsed
// file's tensors are safe to read. A file holding EXL2 linears (a tensor
// named <module>.q_weight) is also decoded as the Hugging Face loader does
// (the EXL2 QuantFormat, then the Q4G/Q8G repack): any tensor bytes decode or
// fail with a Status. The layer's shape is read from the file itself:
// out_features = q_weight's columns, in_features = q_invperm's length.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/safetensors/safetensors_file.h"
#include "worker/model/quant_format.h"

namespace {

class FileSource final : public tessera::TensorSource {
 public:
  explicit FileSource(const tessera::SafetensorsFile& f) : f_(f) {}
  const tessera::SafetensorsTensor* Find(const std::string& name) const override { return f_.Find(name); }

 private:
  const tessera::SafetensorsFile& f_;
};

// Bounds the work per input (codes are one byte per weight).
constexpr int64_t kMaxWeights = 1 << 20;

size_t DecodeExl2(const tessera::SafetensorsFile& f) {
  static const auto format = tessera::CreateExl2Format(nlohmann::json::object());
  const FileSource src(f);
  size_t sink = 0, modules = 0;
  const std::string suffix = ".q_weight";
  for (const auto& t : f.tensors()) {
    if (t.name.size() <= suffix.size() || !t.name.ends_with(suffix) || ++modules > 4) continue;
    const std::string module = t.name.substr(0, t.name.size() - suffix.size());
    const tessera::SafetensorsTensor* inv = f.Find(module + ".q_invperm");
    const int64_t out = t.shape.size() == 2 ? t.shape[1] : 8;
    const int64_t in = inv != nullptr && inv->shape.size() == 1 ? inv->shape[0] : 32;
    if (out < 1 || in < 1 || out > kMaxWeights / in) continue;
    auto q = (*format)->Unpack(src, module, out, in);
    if (!q.ok()) continue;
    auto r = tessera::RepackGroupQuantized(*q);
    sink += r.ok() ? r->data.size() : 1;
  }
  return sink;
}

}  // namespace

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
  sink += DecodeExl2(**f);
  return sink == 0xFFFFFFFF ? 1 : 0;
}
