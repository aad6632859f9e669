#include "common/ggml_types.h"

#include "common/quant_blocks.h"

namespace tessera {

std::optional<GgmlTypeTraits> TraitsOf(uint32_t type_id) {
  switch (static_cast<GgmlType>(type_id)) {
    case GgmlType::kF32: return GgmlTypeTraits{"F32", 1, 4};
    case GgmlType::kF16: return GgmlTypeTraits{"F16", 1, 2};
    case GgmlType::kBF16: return GgmlTypeTraits{"BF16", 1, 2};
    case GgmlType::kF64: return GgmlTypeTraits{"F64", 1, 8};
    case GgmlType::kI8: return GgmlTypeTraits{"I8", 1, 1};
    case GgmlType::kI16: return GgmlTypeTraits{"I16", 1, 2};
    case GgmlType::kI32: return GgmlTypeTraits{"I32", 1, 4};
    case GgmlType::kI64: return GgmlTypeTraits{"I64", 1, 8};
    case GgmlType::kQ4_0: return GgmlTypeTraits{"Q4_0", kQk32, sizeof(BlockQ4_0)};
    case GgmlType::kQ4_1: return GgmlTypeTraits{"Q4_1", kQk32, sizeof(BlockQ4_1)};
    case GgmlType::kQ5_0: return GgmlTypeTraits{"Q5_0", kQk32, sizeof(BlockQ5_0)};
    case GgmlType::kQ5_1: return GgmlTypeTraits{"Q5_1", kQk32, sizeof(BlockQ5_1)};
    case GgmlType::kQ8_0: return GgmlTypeTraits{"Q8_0", kQk32, sizeof(BlockQ8_0)};
    case GgmlType::kQ8_1: return GgmlTypeTraits{"Q8_1", kQk32, sizeof(BlockQ8_1)};
    case GgmlType::kQ2_K: return GgmlTypeTraits{"Q2_K", kQkK, sizeof(BlockQ2_K)};
    case GgmlType::kQ3_K: return GgmlTypeTraits{"Q3_K", kQkK, sizeof(BlockQ3_K)};
    case GgmlType::kQ4_K: return GgmlTypeTraits{"Q4_K", kQkK, sizeof(BlockQ4_K)};
    case GgmlType::kQ5_K: return GgmlTypeTraits{"Q5_K", kQkK, sizeof(BlockQ5_K)};
    case GgmlType::kQ6_K: return GgmlTypeTraits{"Q6_K", kQkK, sizeof(BlockQ6_K)};
    case GgmlType::kQ8_K: return GgmlTypeTraits{"Q8_K", kQkK, sizeof(BlockQ8_K)};
    case GgmlType::kQ4G32: return GgmlTypeTraits{"Q4G32", 32, sizeof(BlockQ4G<32>)};
    case GgmlType::kQ4G64: return GgmlTypeTraits{"Q4G64", 64, sizeof(BlockQ4G<64>)};
    case GgmlType::kQ4G128: return GgmlTypeTraits{"Q4G128", 128, sizeof(BlockQ4G<128>)};
    case GgmlType::kQ8G32: return GgmlTypeTraits{"Q8G32", 32, sizeof(BlockQ8G<32>)};
    case GgmlType::kQ8G64: return GgmlTypeTraits{"Q8G64", 64, sizeof(BlockQ8G<64>)};
    case GgmlType::kQ8G128: return GgmlTypeTraits{"Q8G128", 128, sizeof(BlockQ8G<128>)};
    case GgmlType::kQ8_1F: return GgmlTypeTraits{"Q8_1F", kQk32, sizeof(BlockQ8_1F)};
    case GgmlType::kQ84G32: return GgmlTypeTraits{"Q8/4G32", 32, 0};
    case GgmlType::kQ84G64: return GgmlTypeTraits{"Q8/4G64", 64, 0};
    case GgmlType::kQ84G128: return GgmlTypeTraits{"Q8/4G128", 128, 0};
  }
  return std::nullopt;
}

std::string_view TypeName(GgmlType t) {
  auto traits = TraitsOf(t);
  return traits ? traits->name : std::string_view("unknown");
}

}  // namespace tessera
