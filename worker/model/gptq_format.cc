// AutoGPTQ / GPTQModel layout (quant_method "gptq"):
//   qweight int32 [ceil(in*b/32), out]: packed along the input axis; field j
//           (bits b*j.., lowest first) of word [k][r] is input c = k*32/b + j;
//   qzeros  int32 [groups, ceil(out*b/32)]: packed along the output axis the
//           same way; checkpoint_format "gptq" (v1) stores zero - 1, as a
//           whole-word subtraction of 0x11111111 (4-bit) or 0x01010101
//           (8-bit) that borrows across fields, undone here by adding the
//           constant back to the whole word; "gptq_v2" stores the zero;
//   scales  f16   [groups, out];
//   g_idx   int32 [in]: the group of each input column (act-order makes it
//           a permutation of c / G); absent means c / G.
// groups = ceil(in / G) (the last may be partial). Bits 4 and 8.
#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/fp16.h"
#include "common/status_macros.h"
#include "worker/model/quant_format.h"

namespace tessera {
namespace {

class GptqFormat final : public QuantFormat {
 public:
  GptqFormat(int bits, int group_size, bool v1, bool desc_act, bool sym)
      : bits_(bits), group_size_(group_size), v1_(v1), desc_act_(desc_act), sym_(sym) {}
  std::string_view method() const override { return "gptq"; }
  int bits() const override { return bits_; }
  int group_size() const override { return group_size_; }
  std::string Describe() const override {
    return absl::StrCat("gptq int", bits_, " g", group_size_, desc_act_ ? " act-order" : "", sym_ ? " sym" : " asym",
                        v1_ ? "" : " (v2)");
  }

  bool IsQuantized(const TensorSource& src, const std::string& module) const override {
    return src.Find(module + ".qweight") != nullptr;
  }

  absl::StatusOr<GroupQuantized> Unpack(const TensorSource& src, const std::string& module, int64_t out,
                                        int64_t in) const override {
    const int per_word = 32 / bits_;
    const uint32_t mask = (1u << bits_) - 1;
    const int64_t g = group_size_ == -1 ? in : group_size_;
    const int64_t groups = (in + g - 1) / g;
    const SafetensorsDtype i32[] = {SafetensorsDtype::kI32}, f16[] = {SafetensorsDtype::kF16};
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qw,
                             RequireTensor(src, module + ".qweight", i32, {(in + per_word - 1) / per_word, out}));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qz, RequireTensor(src, module + ".qzeros", i32,
                                                                        {groups, (out + per_word - 1) / per_word}));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* sc, RequireTensor(src, module + ".scales", f16, {groups, out}));
    GroupQuantized q = MakeGroupQuantized(bits_, out, in, groups);
    TESSERA_RETURN_IF_ERROR(ReadGroupIndex(src, module + ".g_idx", g, q));
    for (int64_t k = 0; k * per_word < in; ++k) {
      for (int64_t r = 0; r < out; ++r) {
        const uint32_t word = Word(*qw, k * out + r);
        for (int j = 0; j < per_word && k * per_word + j < in; ++j) {
          q.codes[r * in + k * per_word + j] = static_cast<uint8_t>((word >> (bits_ * j)) & mask);
        }
      }
    }
    const uint32_t v1_offset = bits_ == 4 ? 0x11111111u : 0x01010101u;
    const int64_t zero_words = (out + per_word - 1) / per_word;
    for (int64_t grp = 0; grp < groups; ++grp) {
      for (int64_t w = 0; w < zero_words; ++w) {
        uint32_t word = Word(*qz, grp * zero_words + w);
        if (v1_) word += v1_offset;  // wraps, undoing the packer's borrow
        for (int j = 0; j < per_word && w * per_word + j < out; ++j) {
          q.zeros[(w * per_word + j) * groups + grp] = static_cast<int32_t>((word >> (bits_ * j)) & mask);
        }
      }
      for (int64_t r = 0; r < out; ++r) {
        uint16_t h;
        __builtin_memcpy(&h, sc->bytes.data() + 2 * (grp * out + r), 2);
        q.scales[r * groups + grp] = Fp16ToFp32(h);
      }
    }
    return q;
  }

 private:
  int bits_, group_size_;
  bool v1_, desc_act_, sym_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<QuantFormat>> CreateGptqFormat(const nlohmann::json& c) {
  const nlohmann::json bits = c.value("bits", nlohmann::json());
  if (!bits.is_number_integer() || (bits.get<int64_t>() != 4 && bits.get<int64_t>() != 8)) {
    return absl::UnimplementedError(
        absl::StrCat("GPTQ bits ", EscapeForMessage(bits.dump()), " is not supported; supported: 4, 8"));
  }
  TESSERA_ASSIGN_OR_RETURN(int group, ReadGroupSize(c, "group_size", "GPTQ"));
  if (group != -1 && group % 32 != 0) {
    return absl::UnimplementedError(absl::StrCat("GPTQ group_size ", group, " is not supported (a multiple of 32, or -1)"));
  }
  const std::string format = c.value("checkpoint_format", c.value("format", "gptq"));
  if (format != "gptq" && format != "gptq_v2") {
    return absl::UnimplementedError(absl::StrCat("GPTQ checkpoint_format '", EscapeForMessage(format),
                                                 "' is not supported; supported: gptq, gptq_v2"));
  }
  return std::make_unique<GptqFormat>(bits.get<int>(), group, format == "gptq", c.value("desc_act", false),
                                      c.value("sym", true));
}

}  // namespace tessera
