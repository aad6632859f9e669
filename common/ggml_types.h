// Tensor element types as numbered by the GGUF format, with their block
// geometry, plus Tessera's own repacked group-quantized layouts (ids from
// kFirstInternalType on, never read from or written to a file). One table is
// the single source of truth for block sizes; the quantized block structs
// themselves live in quant_blocks.h.
#ifndef TESSERA_COMMON_GGML_TYPES_H_
#define TESSERA_COMMON_GGML_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tessera {

// Values are the on-disk GGUF type ids; never renumber.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
  // Tessera's layouts for group-quantized checkpoints (AWQ, GPTQ,
  // compressed-tensors), repacked at load: one block per quantization group
  // of G elements with f32 scale and offset, x = q * d + m (quant_blocks.h).
  kQ4G32 = 64,
  kQ4G64 = 65,
  kQ4G128 = 66,
  kQ8G32 = 67,
  kQ8G64 = 68,
  kQ8G128 = 69,
  // Their activation format: Q8_1 with f32 scale and sum (the min term m * sum(x)
  // is as exact as the rest of the dot product).
  kQ8_1F = 70,
  // Mixed-width rows (EXL2 matrices that mix 5-8 bit groups with 2-4 bit
  // ones): each row is Q8G<G> blocks over its first WeightView::wide_cols
  // stored columns, then Q4G<G> blocks over the rest, so the narrow groups
  // are read at 4 bits instead of being widened to 8. No fixed bytes per
  // block (traits' block_bytes is 0): the row's size depends on wide_cols.
  kQ84G32 = 71,
  kQ84G64 = 72,
  kQ84G128 = 73,
};

inline constexpr uint32_t kFirstInternalType = 64;
// Whether a type id may appear in a GGUF file (internal layouts may not).
inline bool IsFileType(uint32_t type_id) { return type_id < kFirstInternalType; }

struct GgmlTypeTraits {
  std::string_view name;
  int64_t block_elems;   // elements per block (1 for plain types)
  size_t block_bytes;    // bytes per block
};

// Returns the traits of a known type id, or nullopt for ids Tessera does not
// know (which includes ids GGUF defines but Tessera cannot compute with, such
// as the IQ formats: those files are refused with a message naming the type).
std::optional<GgmlTypeTraits> TraitsOf(uint32_t type_id);
inline std::optional<GgmlTypeTraits> TraitsOf(GgmlType t) {
  return TraitsOf(static_cast<uint32_t>(t));
}
std::string_view TypeName(GgmlType t);

// Whether `t` is a mixed-width row layout (kQ84G*).
inline bool IsMixedWidth(GgmlType t) { return t == GgmlType::kQ84G32 || t == GgmlType::kQ84G64 || t == GgmlType::kQ84G128; }
// The 8-bit type of the same group size, which a mixed-width weight widens
// to. REQUIRES: IsMixedWidth(t).
inline GgmlType MixedWideType(GgmlType t) {
  return t == GgmlType::kQ84G32 ? GgmlType::kQ8G32 : t == GgmlType::kQ84G64 ? GgmlType::kQ8G64 : GgmlType::kQ8G128;
}

}  // namespace tessera

#endif  // TESSERA_COMMON_GGML_TYPES_H_
