// AutoAWQ's GEMM layout (what vLLM, TGI and transformers serve as "awq"):
//   qweight int32 [in, out/8]: packed along the output axis; nibble i (bits
//           4i..4i+3) of word [c][w] is output column 8w + kOrder[i]
//           (AutoAWQ's AWQ_ORDER, chosen for its CUDA dequantizer);
//   qzeros  int32 [in/G, out/8]: the zero points, packed the same way;
//   scales  f16   [in/G, out].
// w[r][c] = scales[c/G][r] * (q - zeros[c/G][r]). 4-bit only, zero_point
// true (AutoAWQ's GEMM kernels have no symmetric variant).
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/fp16.h"
#include "common/status_macros.h"
#include "worker/model/quant_format.h"

namespace tessera {
namespace {

// kReverse[j]: the nibble that holds output column 8w + j.
constexpr int kReverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};

class AwqFormat final : public QuantFormat {
 public:
  explicit AwqFormat(int group_size) : group_size_(group_size) {}
  std::string_view method() const override { return "awq"; }
  int bits() const override { return 4; }
  int group_size() const override { return group_size_; }
  std::string Describe() const override { return absl::StrCat("awq int4 g", group_size_, " (gemm)"); }

  bool IsQuantized(const TensorSource& src, const std::string& module) const override {
    return src.Find(module + ".qweight") != nullptr;
  }

  absl::StatusOr<GroupQuantized> Unpack(const TensorSource& src, const std::string& module, int64_t out,
                                        int64_t in) const override {
    const int64_t g = group_size_ == -1 ? in : group_size_;
    if (in % g != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(module, ": AWQ group_size ", g, " does not divide in_features ", in));
    }
    if (out % 8 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(module, ": AWQ needs out_features divisible by 8; got ", out));
    }
    const SafetensorsDtype i32[] = {SafetensorsDtype::kI32}, f16[] = {SafetensorsDtype::kF16};
    const int64_t groups = in / g;
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qw, RequireTensor(src, module + ".qweight", i32, {in, out / 8}));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qz, RequireTensor(src, module + ".qzeros", i32, {groups, out / 8}));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* sc, RequireTensor(src, module + ".scales", f16, {groups, out}));
    GroupQuantized q = MakeGroupQuantized(4, out, in, groups);
    TESSERA_RETURN_IF_ERROR(ReadGroupIndex(src, module + ".g_idx", g, q));  // AWQ has none: c / g
    for (int64_t c = 0; c < in; ++c) {
      for (int64_t w = 0; w < out / 8; ++w) {
        const uint32_t word = Word(*qw, c * (out / 8) + w);
        for (int j = 0; j < 8; ++j) q.codes[(8 * w + j) * in + c] = (word >> (4 * kReverse[j])) & 0xF;
      }
    }
    for (int64_t gi = 0; gi < groups; ++gi) {
      for (int64_t w = 0; w < out / 8; ++w) {
        const uint32_t word = Word(*qz, gi * (out / 8) + w);
        for (int j = 0; j < 8; ++j) q.zeros[(8 * w + j) * groups + gi] = static_cast<int32_t>((word >> (4 * kReverse[j])) & 0xF);
      }
      for (int64_t r = 0; r < out; ++r) {
        uint16_t h;
        __builtin_memcpy(&h, sc->bytes.data() + 2 * (gi * out + r), 2);
        q.scales[r * groups + gi] = Fp16ToFp32(h);
      }
    }
    return q;
  }

 private:
  int group_size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<QuantFormat>> CreateAwqFormat(const nlohmann::json& c) {
  // transformers' AwqConfig keys, or AutoAWQ's own (w_bit, q_group_size).
  const nlohmann::json bits = c.contains("bits") ? c["bits"] : c.value("w_bit", nlohmann::json(4));
  if (!bits.is_number_integer() || bits.get<int64_t>() != 4) {
    return absl::UnimplementedError(absl::StrCat("AWQ bits ", EscapeForMessage(bits.dump()), " is not supported; supported: 4"));
  }
  TESSERA_ASSIGN_OR_RETURN(int group, ReadGroupSize(c, c.contains("group_size") ? "group_size" : "q_group_size", "AWQ"));
  if (group != -1 && group % 32 != 0) {
    return absl::UnimplementedError(absl::StrCat("AWQ group_size ", group, " is not supported (a multiple of 32, or -1)"));
  }
  if (!c.value("zero_point", true)) return absl::UnimplementedError("AWQ without zero points (zero_point: false) is not supported");
  const std::string version = absl::AsciiStrToLower(c.value("version", "gemm"));
  if (version != "gemm") {
    return absl::UnimplementedError(absl::StrCat("AWQ version '", EscapeForMessage(version),
                                                 "' is not supported; supported: gemm"));
  }
  return std::make_unique<AwqFormat>(group);
}

}  // namespace tessera
