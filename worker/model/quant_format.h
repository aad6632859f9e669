// Group-quantized linear layers of Hugging Face checkpoints (AWQ, GPTQ,
// compressed-tensors): each format decodes its packed tensors into one
// canonical form, GroupQuantized, which RepackGroupQuantized turns into a
// layout the kernels run (Tessera's Q4G/Q8G blocks, common/quant_blocks.h).
// A new format is one file with a QuantFormat and a line in the registry
// (quant_format.cc).
#ifndef TESSERA_WORKER_MODEL_QUANT_FORMAT_H_
#define TESSERA_WORKER_MODEL_QUANT_FORMAT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/ggml_types.h"
#include "common/safetensors/safetensors_file.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"

namespace tessera {

// Finds a checkpoint tensor by name across its shards.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const SafetensorsTensor* Find(const std::string& name) const = 0;
};

// One quantized matrix [rows = output features][cols = input features] in
// the checkpoint's own column order: w[r][c] = scale[r][g] * (code[r][c] -
// zero[r][g]) with g = g_idx[c].
struct GroupQuantized {
  int bits = 0;
  int64_t rows = 0, cols = 0, groups = 0;
  std::vector<uint8_t> codes;   // rows * cols, unsigned, < 2^bits
  std::vector<float> scales;    // rows * groups (exact: the stored f16/bf16/f32 value)
  std::vector<int32_t> zeros;   // rows * groups
  std::vector<int32_t> g_idx;   // cols, each in [0, groups)
  // Per group, the bits its codes use where groups differ (EXL2 mixes 2-8
  // bit groups in one matrix; `bits` is then the widest); empty: all `bits`.
  std::vector<uint8_t> group_bits;

  float Weight(int64_t r, int64_t c) const {
    const int64_t k = r * groups + g_idx[c];
    return scales[k] * static_cast<float>(static_cast<int32_t>(codes[r * cols + c]) - zeros[k]);
  }
};

// A repacked matrix: rows of `type` blocks, with columns in group order.
struct RepackedWeight {
  GgmlType type = GgmlType::kQ4G32;
  size_t row_bytes = 0;
  std::vector<uint8_t> data;   // rows * row_bytes
  std::vector<int32_t> perm;   // stored column j holds input perm[j]; empty if the identity
  int64_t wide_cols = 0;       // mixed-width types: WeightView::wide_cols
};

// Repacks exactly (see quant_blocks.h): columns are ordered by group (a
// stable sort of g_idx, the identity unless act-order), and each group's
// columns are cut into blocks of the largest of 128, 64, 32 that divides
// every group's size. Bits 4 and 8. An 8-bit matrix whose group_bits put
// every group of more than 4 bits before every group of at most 4 (in
// stored column order, as EXL2 orders its groups) becomes a mixed-width
// layout: the narrow groups are stored at 4 bits. Refuses scales that are
// not finite, groups whose size is not a multiple of 32, and g_idx out of
// range.
absl::StatusOr<RepackedWeight> RepackGroupQuantized(const GroupQuantized& q);

// A mixed-width weight rewritten as plain Q8G<G> rows, for a backend
// without mixed-width kernels: its 4-bit blocks widened (q' = q - 8 and
// m' = m + 8 d give the same q' d + m' exactly, d and m being a float16
// scale times small integers). Returns the new rows' bytes, which the
// caller keeps alive and points w.data at; updates w's type, row_bytes and
// wide_cols. REQUIRES: IsMixedWidth(w.type).
std::vector<uint8_t> WidenMixedWidth(WeightView& w);

class QuantFormat {
 public:
  virtual ~QuantFormat() = default;
  virtual std::string_view method() const = 0;  // quant_method in config.json
  virtual int bits() const = 0;
  virtual int group_size() const = 0;           // -1: per output channel; 0: no single size (EXL2)
  virtual std::string Describe() const = 0;     // e.g. "gptq int4 g128 act-order"
  // CheckpointInfo::weight_type, e.g. "gptq-int4-g128".
  virtual std::string WeightType() const;
  // Whether `module` (e.g. "model.layers.0.self_attn.q_proj") is stored
  // quantized; false for modules kept dense (a plain .weight).
  virtual bool IsQuantized(const TensorSource& src, const std::string& module) const = 0;
  // Decodes `module`, checking every tensor's dtype and shape against
  // [out_features][in_features] and this format's rules.
  virtual absl::StatusOr<GroupQuantized> Unpack(const TensorSource& src, const std::string& module,
                                                int64_t out_features, int64_t in_features) const = 0;
};

// The format named by quantization_config.quant_method, configured from it;
// Unimplemented naming the method (and the supported ones) if unknown.
absl::StatusOr<std::unique_ptr<QuantFormat>> CreateQuantFormat(const nlohmann::json& quantization_config);

// Format factories (one file each).
absl::StatusOr<std::unique_ptr<QuantFormat>> CreateAwqFormat(const nlohmann::json& config);
absl::StatusOr<std::unique_ptr<QuantFormat>> CreateGptqFormat(const nlohmann::json& config);
absl::StatusOr<std::unique_ptr<QuantFormat>> CreateCompressedTensorsFormat(const nlohmann::json& config);
absl::StatusOr<std::unique_ptr<QuantFormat>> CreateExl2Format(const nlohmann::json& config);

// Shared by the formats: the tensor `name`, checked to have `dtype` and
// `shape`; errors name the tensor.
absl::StatusOr<const SafetensorsTensor*> RequireTensor(const TensorSource& src, const std::string& name,
                                                       std::span<const SafetensorsDtype> dtypes,
                                                       const std::vector<int64_t>& shape);
// Little-endian int32 element i of a tensor (data may be unaligned).
inline uint32_t Word(const SafetensorsTensor& t, int64_t i) {
  uint32_t v;
  __builtin_memcpy(&v, t.bytes.data() + 4 * i, 4);
  return v;
}
// A matrix of this shape with its vectors sized (codes, scales and zeros
// zero, g_idx to be filled).
GroupQuantized MakeGroupQuantized(int bits, int64_t rows, int64_t cols, int64_t groups);
// Fills q.g_idx from the int32 tensor `name` [cols] if the checkpoint has
// one, else with c / group_size; every entry checked to name a group.
absl::Status ReadGroupIndex(const TensorSource& src, const std::string& name, int64_t group_size, GroupQuantized& q);
// Group size from a config value: -1 (or absent with `per_channel_default`)
// means one group per row; otherwise a positive size.
absl::StatusOr<int> ReadGroupSize(const nlohmann::json& config, const char* key, std::string_view method);

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_QUANT_FORMAT_H_
