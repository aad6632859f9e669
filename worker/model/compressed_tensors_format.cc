// compressed-tensors "pack-quantized" (llm-compressor's W4A16 / W8A16, as
// vLLM serves it), integer weights with group or channel strategy:
//   weight_packed      int32 [out, ceil(in*b/32)]: packed along the input
//                      axis, element e at bits b*e.. (lowest first), stored
//                      as the signed value plus 2^(b-1);
//   weight_scale       f16/bf16/f32 [out, groups] (channel: [out, 1]);
//   weight_zero_point  asymmetric only: int32 [ceil(out*b/32), groups],
//                      packed along the output axis, offset like the
//                      weights (or int8 [out, groups] unpacked, as older
//                      writers stored it);
//   weight_shape       int64 [2] = [out, in];
//   weight_g_idx       int32 [in], with activation ordering.
// w = scale * (q - zero_point) in signed terms.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/fp16.h"
#include "common/status_macros.h"
#include "worker/model/quant_format.h"

namespace tessera {
namespace {

class CompressedTensorsFormat final : public QuantFormat {
 public:
  CompressedTensorsFormat(int bits, int group_size, bool symmetric)
      : bits_(bits), group_size_(group_size), symmetric_(symmetric) {}
  std::string_view method() const override { return "compressed-tensors"; }
  int bits() const override { return bits_; }
  int group_size() const override { return group_size_; }
  std::string Describe() const override {
    return absl::StrCat("compressed-tensors w", bits_, "a16 ", group_size_ == -1 ? "channel" : absl::StrCat("g", group_size_),
                        symmetric_ ? " sym" : " asym");
  }

  bool IsQuantized(const TensorSource& src, const std::string& module) const override {
    return src.Find(module + ".weight_packed") != nullptr;
  }

  absl::StatusOr<GroupQuantized> Unpack(const TensorSource& src, const std::string& module, int64_t out,
                                        int64_t in) const override {
    const int per_word = 32 / bits_;
    const uint32_t mask = (1u << bits_) - 1;
    const int32_t offset = 1 << (bits_ - 1);
    const int64_t g = group_size_ == -1 ? in : group_size_;
    if (in % g != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(module, ": group_size ", g, " does not divide in_features ", in));
    }
    const int64_t groups = in / g;
    const SafetensorsDtype i32[] = {SafetensorsDtype::kI32}, i64[] = {SafetensorsDtype::kI64};
    const SafetensorsDtype floats[] = {SafetensorsDtype::kF16, SafetensorsDtype::kBF16, SafetensorsDtype::kF32};
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* shape, RequireTensor(src, module + ".weight_shape", i64, {2}));
    int64_t dims[2];
    __builtin_memcpy(dims, shape->bytes.data(), sizeof(dims));
    if (dims[0] != out || dims[1] != in) {
      return absl::InvalidArgumentError(absl::StrCat(module, ".weight_shape is [", dims[0], ", ", dims[1],
                                                     "]; the model needs [", out, ", ", in, "]"));
    }
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* wp, RequireTensor(src, module + ".weight_packed", i32,
                                                                        {out, (in + per_word - 1) / per_word}));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* ws, RequireTensor(src, module + ".weight_scale", floats, {out, groups}));
    GroupQuantized q = MakeGroupQuantized(bits_, out, in, groups);
    std::fill(q.zeros.begin(), q.zeros.end(), offset);
    const int64_t words = (in + per_word - 1) / per_word;
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t k = 0; k < words; ++k) {
        const uint32_t word = Word(*wp, r * words + k);
        for (int j = 0; j < per_word && k * per_word + j < in; ++j) {
          q.codes[r * in + k * per_word + j] = static_cast<uint8_t>((word >> (bits_ * j)) & mask);
        }
      }
    }
    TESSERA_RETURN_IF_ERROR(ws->ToFloat(q.scales));
    if (!symmetric_) {
      const SafetensorsTensor* zp = src.Find(module + ".weight_zero_point");
      if (zp == nullptr) return absl::NotFoundError(absl::StrCat("checkpoint is missing tensor '", module, ".weight_zero_point'"));
      if (zp->dtype == SafetensorsDtype::kI8 && zp->shape == std::vector<int64_t>{out, groups}) {
        for (int64_t i = 0; i < out * groups; ++i) q.zeros[i] = static_cast<int8_t>(zp->bytes[i]) + offset;
      } else {
        const int64_t zwords = (out + per_word - 1) / per_word;
        TESSERA_ASSIGN_OR_RETURN(zp, RequireTensor(src, module + ".weight_zero_point", i32, {zwords, groups}));
        for (int64_t w = 0; w < zwords; ++w) {
          for (int64_t grp = 0; grp < groups; ++grp) {
            const uint32_t word = Word(*zp, w * groups + grp);
            for (int j = 0; j < per_word && w * per_word + j < out; ++j) {
              q.zeros[(w * per_word + j) * groups + grp] = static_cast<int32_t>((word >> (bits_ * j)) & mask);
            }
          }
        }
      }
    }
    TESSERA_RETURN_IF_ERROR(ReadGroupIndex(src, module + ".weight_g_idx", g, q));
    return q;
  }

 private:
  int bits_, group_size_;
  bool symmetric_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<QuantFormat>> CreateCompressedTensorsFormat(const nlohmann::json& c) {
  const std::string format = c.value("format", "");
  if (format != "pack-quantized") {
    return absl::UnimplementedError(absl::StrCat("compressed-tensors format '", EscapeForMessage(format),
                                                 "' is not supported; supported: pack-quantized"));
  }
  if (!c.contains("config_groups") || !c["config_groups"].is_object() || c["config_groups"].size() != 1) {
    return absl::UnimplementedError("compressed-tensors: exactly one config group is supported");
  }
  const nlohmann::json& group = c["config_groups"].begin().value();
  if (!group.is_object()) return absl::InvalidArgumentError("compressed-tensors: a config group is not an object");
  bool linear = false;
  for (const auto& t : group.value("targets", nlohmann::json::array())) linear |= t.is_string() && t.get<std::string>() == "Linear";
  if (!linear) return absl::UnimplementedError("compressed-tensors: the config group must target \"Linear\"");
  if (group.contains("input_activations") && !group["input_activations"].is_null()) {
    return absl::UnimplementedError("compressed-tensors: activation quantization (e.g. W8A8) is not supported; W4A16/W8A16 only");
  }
  const nlohmann::json w = group.value("weights", nlohmann::json());
  if (!w.is_object()) return absl::InvalidArgumentError("compressed-tensors: the config group has no weights section");
  const nlohmann::json bits = w.value("num_bits", nlohmann::json());
  if (!bits.is_number_integer() || (bits.get<int64_t>() != 4 && bits.get<int64_t>() != 8)) {
    return absl::UnimplementedError(absl::StrCat("compressed-tensors num_bits ", EscapeForMessage(bits.dump()),
                                                 " is not supported; supported: 4, 8"));
  }
  if (w.value("type", "int") != "int") {
    return absl::UnimplementedError(absl::StrCat("compressed-tensors weight type '", EscapeForMessage(w.value("type", "")),
                                                 "' is not supported; supported: int"));
  }
  const std::string strategy = w.value("strategy", "");
  int group_size = -1;
  if (strategy == "group") {
    TESSERA_ASSIGN_OR_RETURN(group_size, ReadGroupSize(w, "group_size", "compressed-tensors"));
    if (group_size != -1 && group_size % 32 != 0) {
      return absl::UnimplementedError(
          absl::StrCat("compressed-tensors group_size ", group_size, " is not supported (a multiple of 32)"));
    }
  } else if (strategy != "channel") {
    return absl::UnimplementedError(absl::StrCat("compressed-tensors strategy '", EscapeForMessage(strategy),
                                                 "' is not supported; supported: group, channel"));
  }
  return std::make_unique<CompressedTensorsFormat>(bits.get<int>(), group_size, w.value("symmetric", true));
}

}  // namespace tessera
