// tessera-gguf: inspect a GGUF file with Tessera's own (bounds-checked)
// reader. Everything taken from the file (keys, tensor names, string values)
// goes to the terminal escaped: a file must not be able to send control
// sequences or invalid UTF-8 to the user's terminal.
//
//   tessera-gguf info FILE              metadata (arrays summarized) and tensors
//   tessera-gguf dequant FILE TENSOR    the tensor as raw little-endian f32 on stdout
#include <cstdio>
#include <string>
#include <vector>

#include "common/command_line.h"
#include "common/escape.h"
#include "common/gguf/gguf_file.h"
#include "kernels/cpu/quant_kernels.h"

namespace {

std::string Describe(const tessera::GgufValue& v) {
  switch (v.type()) {
    case tessera::GgufType::kString: return "\"" + tessera::EscapeForMessage(v.as_string(), 80) + "\"";
    case tessera::GgufType::kArray:
      return "[" + std::to_string(v.as_array().items.size()) + " x " +
             std::string(tessera::GgufTypeName(v.as_array().element_type)) + "]";
    case tessera::GgufType::kBool: return v.as_bool() ? "true" : "false";
    case tessera::GgufType::kFloat32: case tessera::GgufType::kFloat64: return std::to_string(v.as_double());
    case tessera::GgufType::kInt8: case tessera::GgufType::kInt16: case tessera::GgufType::kInt32:
    case tessera::GgufType::kInt64: return std::to_string(v.as_signed());
    default: return std::to_string(v.as_unsigned());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (tessera::WantsHelp(argc, argv)) {
    std::printf("usage: tessera-gguf info FILE | tessera-gguf dequant FILE TENSOR\n"
                "  info     metadata (arrays summarized) and tensors\n"
                "  dequant  the tensor as raw little-endian f32 on stdout\n");
    return 0;
  }
  if (argc < 3 || (std::string(argv[1]) != "info" && std::string(argv[1]) != "dequant") ||
      (std::string(argv[1]) == "dequant" && argc != 4)) {
    std::fprintf(stderr, "usage: tessera-gguf info FILE | tessera-gguf dequant FILE TENSOR\n");
    return 2;
  }
  auto f = tessera::GgufFile::Open(argv[2]);
  if (!f.ok()) {
    std::fprintf(stderr, "tessera-gguf: %s\n", std::string(f.status().message()).c_str());
    return 1;
  }
  if (std::string(argv[1]) == "info") {
    std::printf("GGUF v%u, %zu metadata keys, %zu tensors\n", (*f)->version(), (*f)->metadata().size(), (*f)->tensors().size());
    for (const auto& [k, v] : (*f)->metadata()) {
      std::printf("  %s = %s\n", tessera::EscapeForMessage(k).c_str(), Describe(v).c_str());
    }
    for (const auto& t : (*f)->tensors()) {
      std::printf("  %-40s %-5s [%lld, %lld, %lld, %lld]\n", tessera::EscapeForMessage(t.name).c_str(), std::string(tessera::TypeName(t.type)).c_str(),
                  static_cast<long long>(t.ne[0]), static_cast<long long>(t.ne[1]), static_cast<long long>(t.ne[2]),
                  static_cast<long long>(t.ne[3]));
    }
    return 0;
  }
  const tessera::GgufTensor* t = (*f)->FindTensor(argv[3]);
  if (t == nullptr) {
    std::fprintf(stderr, "tessera-gguf: no tensor '%s'\n", tessera::EscapeForMessage(argv[3]).c_str());
    return 1;
  }
  const tessera::cpu::WeightKernels* k = tessera::cpu::ReferenceKernelsFor(t->type);
  if (k == nullptr) {
    std::fprintf(stderr, "tessera-gguf: cannot dequantize type %s\n", std::string(tessera::TypeName(t->type)).c_str());
    return 1;
  }
  std::vector<float> row(t->ne[0]);
  for (int64_t r = 0; r < t->rows(); ++r) {
    k->dequant(t->data + r * t->row_bytes(), row.data(), t->ne[0]);
    std::fwrite(row.data(), sizeof(float), row.size(), stdout);
  }
  return 0;
}
