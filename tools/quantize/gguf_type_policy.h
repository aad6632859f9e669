// Which GGUF type each tensor gets, decided as llama.cpp's llama_model_quantize
// decides it (src/llama-quant.cpp of the llama.cpp that llama-cpp-python
// 0.3.36 vendors: tensor_allows_quantization, llama_tensor_get_type_impl and
// tensor_type_fallback), for the file types tessera-quantize offers and the
// dense architectures Tessera runs (no experts, no imatrix, no overrides).
//
// Spelling of --format gguf:TYPE follows llama.cpp's llama-quantize tool:
// the plain K names are its aliases, Q3_K = Q3_K_M, Q4_K = Q4_K_M and
// Q5_K = Q5_K_M (file types 12, 15, 17), while Q2_K and Q6_K are file types
// of their own (10, 18). F16, BF16 and F32 convert without quantizing.
#ifndef TESSERA_TOOLS_QUANTIZE_GGUF_TYPE_POLICY_H_
#define TESSERA_TOOLS_QUANTIZE_GGUF_TYPE_POLICY_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/ggml_types.h"

namespace tessera::quantize {

// A llama.cpp file type (enum llama_ftype).
struct GgufFileType {
  std::string name;      // canonical: "Q4_K_M"
  uint32_t ftype = 0;    // general.file_type
  GgmlType default_type; // llama_ftype_get_default_type
};

// Case-insensitive; InvalidArgument listing the valid names otherwise.
absl::StatusOr<GgufFileType> ParseGgufFileType(std::string_view name);
// "Q4_0 Q4_1 ... F32", for messages and --help.
std::string GgufFileTypeNames();

struct ModelFacts {
  std::string arch;   // general.architecture
  int n_layer = 0;    // block_count
  int n_head = 0;
  int n_head_kv = 0;
};

struct TensorDesc {
  std::string name;
  GgmlType type;                  // as stored in the input
  std::array<int64_t, 4> ne{1, 1, 1, 1};
};

// The order llama.cpp's model loader keeps tensors in (and so writes them):
// tensors outside blocks first, then by block number, each group by name.
// Returns indexes into `tensors`.
std::vector<size_t> LlamaTensorOrder(const std::vector<TensorDesc>& tensors);

// The output type of each tensor, `tensors` given in LlamaTensorOrder (the
// mixes count attn_v and ffn_down tensors in that order). Also returns how
// many tensors fell back to another type because of their row length.
struct TypePlan {
  std::vector<GgmlType> types;
  int n_fallback = 0;
};
TypePlan PlanTensorTypes(const GgufFileType& ft, const ModelFacts& model, const std::vector<TensorDesc>& tensors);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_GGUF_TYPE_POLICY_H_
