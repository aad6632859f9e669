// ExLlamaV2's EXL2 layout (quant_method "exl2"), as exllamav2 v0.3 writes
// and reads it (conversion/adaptivegptq.py, cuda/q_matrix.cu, ext.py). The
// kernels work on W^T: its rows are input features, its columns outputs.
//   q_invperm   int32 [in]   a permutation; packed row k is input row
//               q_perm[k] with q_perm = argsort(q_invperm), i.e. input row
//               j is packed row q_invperm[j]. A stored q_perm must equal
//               that argsort (exllamav2 recomputes it and ignores the file's).
//   q_groups    int16 [2G]   (bits, first q_weight row) per group in packed
//               row order; a group spans up to the next group's first row
//               (the last to q_weight's end) and holds qrows * 32 / bits
//               rows. Widths are 8, 6, 5, 4, 3, 2 and never increase along
//               the rows (the kernels walk width segments in that order).
//   q_weight    int32 [sum qrows, out, or out padded to a multiple of 32]:
//               per group and column a little-endian bitstream, row i at
//               bit i * bits (3, 5 and 6-bit codes straddle words).
//   q_scale     int32 [G, width / 8]: 4-bit nibbles, column c at bits
//               4 (c % 8) of word c / 8, holding qscale - 1.
//   q_scale_max f16 [G].
// Weights, in exllamav2's float16 arithmetic: m = f16(q_scale_max / 256),
// scale = f16((nibble + 1)^2 * m), w = f16((code - 2^(bits-1)) * scale).
// Each product is exact in float32 (9 x 11 and 8 x 11 significant bits), so
// the loader keeps scale as that float16 value and the kernels compute the
// exact float32 product; rounding it once to float16 gives exllamav2's
// weight. A matrix whose groups are all 2-4 bits becomes 4-bit codes around
// zero 8, any other 8-bit codes around 128 (code - 2^(bits-1) is unchanged)
// with each group's width recorded, so that the repack stores its 2-4 bit
// groups at 4 bits (a mixed-width layout; the widths never increase along
// the rows, so the wide groups come first).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"
#include "common/fp16.h"
#include "common/status_macros.h"
#include "worker/model/quant_format.h"

namespace tessera {
namespace {

constexpr int kWidths[] = {2, 3, 4, 5, 6, 8};
// exllamav2 holds q_perm / q_invperm as 16-bit indices on the GPU.
constexpr int64_t kMaxInFeatures = 65536;
// f16(x) is infinite from here on (round to nearest: 65504 + half an ulp).
constexpr float kF16Overflow = 65520.f;

bool IsWidth(int b) { return std::find(std::begin(kWidths), std::end(kWidths), b) != std::end(kWidths); }

absl::Status Bad(const std::string& module, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("EXL2 ", module, ": ", std::string(what)));
}

// The tensor `module.suffix`, of one of `dtypes` and `rank` dimensions.
absl::StatusOr<const SafetensorsTensor*> Find(const TensorSource& src, const std::string& module, const char* suffix,
                                              std::initializer_list<SafetensorsDtype> dtypes, size_t rank) {
  const std::string name = absl::StrCat(module, ".", suffix);
  const SafetensorsTensor* t = src.Find(name);
  if (t == nullptr) {
    std::string hint;
    if (std::string_view(suffix) == "q_invperm" && src.Find(module + ".q_perm") != nullptr) {
      hint = " (exllamav2 reads q_invperm; q_perm alone is not enough)";
    }
    return absl::NotFoundError(absl::StrCat("checkpoint is missing tensor '", name, "'", hint));
  }
  if (std::find(dtypes.begin(), dtypes.end(), t->dtype) == dtypes.end()) {
    std::vector<std::string> want;
    for (SafetensorsDtype d : dtypes) want.emplace_back(DtypeName(d));
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has dtype ", std::string(DtypeName(t->dtype)),
                                                   "; expected ", absl::StrJoin(want, " or ")));
  }
  if (t->shape.size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape [", absl::StrJoin(t->shape, ", "),
                                                   "]; expected ", rank, " dimension(s)"));
  }
  return t;
}

uint16_t Half(const SafetensorsTensor& t, int64_t i) {
  uint16_t v;
  __builtin_memcpy(&v, t.bytes.data() + 2 * i, 2);
  return v;
}

// Element i of an int32 tensor, or of an int16 one read as uint16 (as
// exllamav2's kernels read q_groups and 16-bit permutations).
int64_t Index(const SafetensorsTensor& t, int64_t i) {
  return t.dtype == SafetensorsDtype::kI16 ? static_cast<int64_t>(Half(t, i))
                                           : static_cast<int64_t>(static_cast<int32_t>(Word(t, i)));
}

struct Group {
  int bits;
  int64_t first_qrow, qrows, first_row, rows;
};

class Exl2Format final : public QuantFormat {
 public:
  Exl2Format(double bpw, int head_bits) : bpw_(bpw), head_bits_(head_bits) {}
  std::string_view method() const override { return "exl2"; }
  // The average bits per weight rounded up: groups hold 2 to 8 bits each,
  // so no single code width describes the checkpoint.
  int bits() const override { return bpw_ > 0 ? std::clamp(static_cast<int>(std::ceil(bpw_ - 1e-9)), 2, 8) : 8; }
  // Group sizes differ per matrix and per width (see quant_format.h).
  int group_size() const override { return 0; }
  std::string Describe() const override {
    std::string s = bpw_ > 0 ? absl::StrFormat("exl2 %.4g bpw (2-8 bit groups)", bpw_) : "exl2 (2-8 bit groups)";
    if (head_bits_ > 0 && head_bits_ < 16) absl::StrAppend(&s, ", lm_head ", head_bits_, " bits");
    return s;
  }
  std::string WeightType() const override {
    return bpw_ > 0 ? absl::StrFormat("exl2-%.4gbpw", bpw_) : std::string("exl2");
  }

  bool IsQuantized(const TensorSource& src, const std::string& module) const override {
    return src.Find(module + ".q_weight") != nullptr || src.Find(module + ".q_invperm") != nullptr;
  }

  absl::StatusOr<GroupQuantized> Unpack(const TensorSource& src, const std::string& module, int64_t out,
                                        int64_t in) const override {
    using D = SafetensorsDtype;
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qw, Find(src, module, "q_weight", {D::kI32}, 2));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qs, Find(src, module, "q_scale", {D::kI32}, 2));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qm, Find(src, module, "q_scale_max", {D::kF16}, 1));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qg, Find(src, module, "q_groups", {D::kI16}, 1));
    TESSERA_ASSIGN_OR_RETURN(const SafetensorsTensor* qi, Find(src, module, "q_invperm", {D::kI32, D::kI16}, 1));
    const SafetensorsTensor* qp = nullptr;
    if (src.Find(module + ".q_perm") != nullptr) {
      TESSERA_ASSIGN_OR_RETURN(qp, Find(src, module, "q_perm", {D::kI32, D::kI16}, 1));
    }

    // Sizes.
    const int64_t total_qrows = qw->shape[0], width = qw->shape[1];
    if (out < 1 || in < 1) return Bad(module, absl::StrCat("empty matrix [", out, ", ", in, "]"));
    if (total_qrows < 1 || width < 1) {
      return Bad(module, absl::StrCat("q_weight has shape [", total_qrows, ", ", width, "]; it is empty"));
    }
    const int64_t padded = (out + 31) / 32 * 32;
    if (width != out && width != padded) {
      return Bad(module, absl::StrCat("q_weight has ", width, " columns for ", out, " output features (expected ", out,
                                      out == padded ? "" : absl::StrCat(" or ", padded), ")"));
    }
    if (width % 8 != 0) {
      return Bad(module, absl::StrCat("q_weight has ", width, " columns, not a multiple of 8 (q_scale packs 8 per word)"));
    }
    if (qg->shape[0] < 2 || qg->shape[0] % 2 != 0) {
      return Bad(module, absl::StrCat("q_groups must hold (bits, first row) pairs; it has ", qg->shape[0], " values"));
    }
    const int64_t ngroups = qg->shape[0] / 2;
    if (qs->shape[0] != ngroups || qs->shape[1] != width / 8) {
      return Bad(module, absl::StrCat("q_scale has shape [", qs->shape[0], ", ", qs->shape[1], "]; q_groups' ", ngroups,
                                      " groups and q_weight's ", width, " columns need [", ngroups, ", ", width / 8, "]"));
    }
    if (qm->shape[0] != ngroups) {
      return Bad(module, absl::StrCat("q_scale_max has ", qm->shape[0], " values for q_groups' ", ngroups, " groups"));
    }
    if (qi->shape[0] != in) {
      return Bad(module, absl::StrCat("q_invperm has ", qi->shape[0], " entries for ", in, " input features"));
    }
    if (in > kMaxInFeatures) {
      return Bad(module, absl::StrCat(in, " input features exceed exllamav2's 16-bit permutation indices"));
    }

    // The group table: widths, spans, and coverage of q_weight and of `in`.
    std::vector<Group> groups(static_cast<size_t>(ngroups));
    for (int64_t g = 0; g < ngroups; ++g) {
      groups[g].bits = static_cast<int>(Half(*qg, 2 * g));
      groups[g].first_qrow = Half(*qg, 2 * g + 1);
      if (!IsWidth(groups[g].bits)) {
        return Bad(module, absl::StrCat("q_groups: group ", g, " has bit width ", groups[g].bits,
                                        "; EXL2 widths are ", absl::StrJoin(kWidths, ", ")));
      }
      if (g > 0 && groups[g].bits > groups[g - 1].bits) {
        return Bad(module, absl::StrCat("q_groups: group ", g, " is ", groups[g].bits, "-bit after a ", groups[g - 1].bits,
                                        "-bit group; widths must not increase along the rows"));
      }
    }
    if (groups[0].first_qrow != 0) {
      return Bad(module, absl::StrCat("q_groups: the first group starts at q_weight row ", groups[0].first_qrow, ", not 0"));
    }
    int64_t row = 0;
    for (int64_t g = 0; g < ngroups; ++g) {
      Group& gr = groups[g];
      const int64_t end = g + 1 < ngroups ? groups[g + 1].first_qrow : total_qrows;
      gr.qrows = end - gr.first_qrow;
      if (gr.qrows <= 0) {
        return Bad(module, absl::StrCat("q_groups: group ", g, " spans q_weight rows ", gr.first_qrow, " to ", end, " of ",
                                        total_qrows, "; group starts must increase and stay inside q_weight"));
      }
      if (gr.qrows * 32 % gr.bits != 0) {
        return Bad(module, absl::StrCat("q_groups: group ", g, " (", gr.bits, "-bit) spans ", gr.qrows,
                                        " words per column, not a whole number of codes"));
      }
      gr.rows = gr.qrows * 32 / gr.bits;
      const int unit = gr.bits == 2 ? 16 : 32;
      if (gr.rows % unit != 0) {
        return Bad(module, absl::StrCat("q_groups: group ", g, " (", gr.bits, "-bit) has ", gr.rows,
                                        " rows, not a multiple of ", unit));
      }
      gr.first_row = row;
      row += gr.rows;
      if (row > in) break;
    }
    if (row != in) {
      return Bad(module, absl::StrCat("q_groups cover ", row > in ? "more than " : "", row, " rows (q_weight has ",
                                      total_qrows, " rows of words) but the layer has ", in, " input features"));
    }
    for (int64_t g = 0; g < ngroups; ++g) {
      if (groups[g].rows % 32 != 0) {
        return absl::UnimplementedError(absl::StrCat(
            "EXL2 ", module, ": group ", g, " has ", groups[g].rows,
            " rows; Tessera's kernels need groups of whole multiples of 32 input features"));
      }
    }

    // The permutation.
    std::vector<int32_t> perm(static_cast<size_t>(in), -1);  // packed row k <- input row perm[k]
    for (int64_t j = 0; j < in; ++j) {
      const int64_t k = Index(*qi, j);
      if (k < 0 || k >= in) {
        return Bad(module, absl::StrCat("q_invperm[", j, "] = ", k, " is outside 0..", in - 1));
      }
      if (perm[k] != -1) {
        return Bad(module, absl::StrCat("q_invperm is not a permutation (", k, " appears at ", perm[k], " and ", j, ")"));
      }
      perm[k] = static_cast<int32_t>(j);
    }
    if (qp != nullptr) {
      if (qp->shape[0] != in) return Bad(module, absl::StrCat("q_perm has ", qp->shape[0], " entries for ", in, " input features"));
      for (int64_t k = 0; k < in; ++k) {
        if (Index(*qp, k) != perm[k]) {
          return Bad(module, absl::StrCat("q_perm is not the inverse of q_invperm (q_perm[", k, "] = ", Index(*qp, k),
                                          ", expected ", perm[k], ")"));
        }
      }
    }

    // Scales: f16(f16((nibble + 1)^2) * f16(q_scale_max / 256)).
    const bool wide = std::any_of(groups.begin(), groups.end(), [](const Group& g) { return g.bits > 4; });
    const int bits = wide ? 8 : 4;
    const int zero = 1 << (bits - 1);
    GroupQuantized q = MakeGroupQuantized(bits, out, in, ngroups);
    std::fill(q.zeros.begin(), q.zeros.end(), zero);
    for (const Group& gr : groups) q.group_bits.push_back(static_cast<uint8_t>(gr.bits));
    for (int64_t g = 0; g < ngroups; ++g) {
      const float max = Fp16ToFp32(Half(*qm, g));
      if (!std::isfinite(max)) return Bad(module, absl::StrCat("q_scale_max[", g, "] is not finite"));
      const float m = Fp16ToFp32(Fp32ToFp16(max * (1.f / 256)));
      for (int64_t r = 0; r < out; ++r) {
        const int nibble = static_cast<int>((Word(*qs, g * (width / 8) + r / 8) >> (4 * (r % 8))) & 0xF);
        q.scales[r * ngroups + g] = Fp16ToFp32(Fp32ToFp16(static_cast<float>((nibble + 1) * (nibble + 1)) * m));
      }
    }

    // Codes: group g's row i, column r is `bits` bits at bit i * bits of the
    // column's words from q_weight row first_qrow.
    for (const Group& gr : groups) {
      const int64_t g = &gr - groups.data();
      const uint32_t mask = (1u << gr.bits) - 1;
      const int centre = 1 << (gr.bits - 1);
      for (int64_t i = 0; i < gr.rows; ++i) {
        const int64_t bit = i * gr.bits, word = gr.first_qrow + bit / 32;
        const int shift = static_cast<int>(bit % 32);
        const int32_t col = perm[gr.first_row + i];
        q.g_idx[col] = static_cast<int32_t>(g);
        for (int64_t r = 0; r < out; ++r) {
          uint64_t v = Word(*qw, word * width + r) >> shift;
          if (shift + gr.bits > 32) v |= static_cast<uint64_t>(Word(*qw, (word + 1) * width + r)) << (32 - shift);
          const int centred = static_cast<int>(v & mask) - centre;
          q.codes[r * in + col] = static_cast<uint8_t>(centred + zero);
          // exllamav2 computes the weight in float16: refuse what overflows it.
          if (std::fabs(static_cast<float>(centred) * q.scales[r * ngroups + g]) >= kF16Overflow) {
            return Bad(module, absl::StrCat("the weight of output ", r, ", group ", g,
                                            " overflows float16 (q_scale_max[", g, "] is too large)"));
          }
        }
      }
    }
    return q;
  }

 private:
  double bpw_;     // quantization_config.bits: average bits per weight; 0 if not recorded
  int head_bits_;  // quantization_config.head_bits; 0 if not recorded
};

}  // namespace

absl::StatusOr<std::unique_ptr<QuantFormat>> CreateExl2Format(const nlohmann::json& c) {
  double bpw = 0;
  if (c.contains("bits") && !c["bits"].is_null()) {
    const nlohmann::json& b = c["bits"];
    if (!b.is_number() || !(b.get<double>() >= 1 && b.get<double>() <= 16)) {
      return absl::InvalidArgumentError(
          absl::StrCat("EXL2 bits (average bits per weight) must be a number from 1 to 16; got ", EscapeForMessage(b.dump())));
    }
    bpw = b.get<double>();
  }
  int head_bits = 0;
  if (c.contains("head_bits") && !c["head_bits"].is_null()) {
    const nlohmann::json& h = c["head_bits"];
    if (!h.is_number_integer() || h.get<int64_t>() < 1 || h.get<int64_t>() > 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("EXL2 head_bits must be an integer from 1 to 16; got ", EscapeForMessage(h.dump())));
    }
    head_bits = h.get<int>();
  }
  return std::make_unique<Exl2Format>(bpw, head_bits);
}

}  // namespace tessera
