#include "worker/model/quant_format.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"
#include "common/quant_blocks.h"
#include "common/status_macros.h"

namespace tessera {
namespace {

struct Entry {
  std::string_view method;
  absl::StatusOr<std::unique_ptr<QuantFormat>> (*create)(const nlohmann::json&);
};

// The registry: one line per format.
constexpr Entry kFormats[] = {
    {"awq", CreateAwqFormat},
    {"gptq", CreateGptqFormat},
    {"compressed-tensors", CreateCompressedTensorsFormat},
    {"exl2", CreateExl2Format},
};

std::string ShapeText(std::span<const int64_t> s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// Blocks [k0, k1) of row r (block k: stored columns [k B, (k + 1) B)) as
// Q4G<B>, written from `out`. `recentre`: the codes are those of an 8-bit
// matrix's narrow group, stored as code - zero + 8 around zero 8; false
// when something outside [0, 16) comes out.
template <int B>
bool PackQ4(const GroupQuantized& q, const std::vector<int32_t>& order, int64_t r, int64_t k0, int64_t k1,
            bool recentre, uint8_t* out) {
  auto* blocks = reinterpret_cast<BlockQ4G<B>*>(out);
  const uint8_t* codes = q.codes.data() + r * q.cols;
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t first = order[k * B];
    const int64_t g = r * q.groups + q.g_idx[first];
    const int zero = recentre ? 8 : q.zeros[g];
    const int shift = recentre ? 8 - q.zeros[g] : 0;
    BlockQ4G<B>& b = blocks[k - k0];
    b.d = q.scales[g];
    // Exact for f16/bf16 scales: 11 (or 8) significant bits times a zero
    // of at most 9 bits fits a float's 24.
    b.m = -q.scales[g] * static_cast<float>(zero);
    for (int c = 0; c < B / 32; ++c) {
      for (int j = 0; j < 16; ++j) {
        const int lo = codes[order[k * B + 32 * c + j]] + shift;
        const int hi = codes[order[k * B + 32 * c + 16 + j]] + shift;
        if (lo < 0 || lo > 15 || hi < 0 || hi > 15) return false;
        b.qs[16 * c + j] = static_cast<uint8_t>(lo | (hi << 4));
      }
    }
  }
  return true;
}

// Blocks [k0, k1) of row r as Q8G<B> (8-bit codes), written from `out`.
template <int B>
void PackQ8(const GroupQuantized& q, const std::vector<int32_t>& order, int64_t r, int64_t k0, int64_t k1,
            uint8_t* out) {
  auto* blocks = reinterpret_cast<BlockQ8G<B>*>(out);
  const uint8_t* codes = q.codes.data() + r * q.cols;
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t first = order[k * B];
    const int64_t g = r * q.groups + q.g_idx[first];
    BlockQ8G<B>& b = blocks[k - k0];
    b.d = q.scales[g];
    b.m = q.scales[g] * static_cast<float>(128 - q.zeros[g]);  // q * d + m = s * (code - z) with q = code - 128
    for (int j = 0; j < B; ++j) b.qs[j] = static_cast<int8_t>(static_cast<int>(codes[order[k * B + j]]) - 128);
  }
}

// One row: blocks [0, wide) at 8 bits, the rest at 4 (of the matrix's own
// bits when `wide` is 0 and the matrix is 4-bit).
template <int B>
bool PackRow(const GroupQuantized& q, const std::vector<int32_t>& order, int64_t r, int64_t wide, uint8_t* row) {
  const int64_t blocks = q.cols / B;
  if (q.bits == 8) PackQ8<B>(q, order, r, 0, wide, row);
  if (wide == blocks) return true;
  return PackQ4<B>(q, order, r, wide, blocks, /*recentre=*/q.bits == 8, row + wide * sizeof(BlockQ8G<B>));
}

template <int G>
std::vector<uint8_t> WidenRows(WeightView& w) {
  const int64_t wide = w.wide_cols / G, blocks = w.cols / G;
  const size_t row_bytes = static_cast<size_t>(blocks) * sizeof(BlockQ8G<G>);
  std::vector<uint8_t> data(row_bytes * static_cast<size_t>(w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* src = w.data + static_cast<size_t>(r) * w.row_bytes;
    auto* dst = reinterpret_cast<BlockQ8G<G>*>(data.data() + static_cast<size_t>(r) * row_bytes);
    std::memcpy(dst, src, static_cast<size_t>(wide) * sizeof(BlockQ8G<G>));
    const auto* narrow = reinterpret_cast<const BlockQ4G<G>*>(src + static_cast<size_t>(wide) * sizeof(BlockQ8G<G>));
    for (int64_t k = 0; k < blocks - wide; ++k) {
      const BlockQ4G<G>& b = narrow[k];
      BlockQ8G<G>& o = dst[wide + k];
      o.d = b.d;
      o.m = b.m + 8 * b.d;
      for (int c = 0; c < G / 32; ++c) {
        for (int j = 0; j < 16; ++j) {
          o.qs[32 * c + j] = static_cast<int8_t>((b.qs[16 * c + j] & 0x0F) - 8);
          o.qs[32 * c + 16 + j] = static_cast<int8_t>((b.qs[16 * c + j] >> 4) - 8);
        }
      }
    }
  }
  w.type = MixedWideType(w.type);
  w.row_bytes = row_bytes;
  w.wide_cols = 0;
  return data;
}

}  // namespace

std::string QuantFormat::WeightType() const {
  return absl::StrCat(std::string(method()), "-int", bits(), group_size() > 0 ? absl::StrCat("-g", group_size()) : "");
}

absl::StatusOr<std::unique_ptr<QuantFormat>> CreateQuantFormat(const nlohmann::json& config) {
  if (!config.is_object()) return absl::InvalidArgumentError("quantization_config is not an object");
  const std::string method = config.value("quant_method", "");
  std::vector<std::string> names;
  for (const Entry& e : kFormats) {
    if (e.method == method) return e.create(config);
    names.emplace_back(e.method);
  }
  return absl::UnimplementedError(absl::StrCat("quantization_config quant_method '", EscapeForMessage(method),
                                               "' is not supported; supported: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<const SafetensorsTensor*> RequireTensor(const TensorSource& src, const std::string& name,
                                                       std::span<const SafetensorsDtype> dtypes,
                                                       const std::vector<int64_t>& shape) {
  const SafetensorsTensor* t = src.Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("checkpoint is missing tensor '", name, "'"));
  if (std::find(dtypes.begin(), dtypes.end(), t->dtype) == dtypes.end()) {
    std::vector<std::string> want;
    for (SafetensorsDtype d : dtypes) want.emplace_back(DtypeName(d));
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has dtype ", std::string(DtypeName(t->dtype)),
                                                   "; expected ", absl::StrJoin(want, " or ")));
  }
  if (t->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ", ShapeText(t->shape), "; expected ",
                                                   ShapeText(shape)));
  }
  return t;
}

GroupQuantized MakeGroupQuantized(int bits, int64_t rows, int64_t cols, int64_t groups) {
  GroupQuantized q;
  q.bits = bits;
  q.rows = rows;
  q.cols = cols;
  q.groups = groups;
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(rows * groups));
  q.zeros.resize(q.scales.size());
  q.g_idx.resize(static_cast<size_t>(cols));
  return q;
}

absl::Status ReadGroupIndex(const TensorSource& src, const std::string& name, int64_t group_size, GroupQuantized& q) {
  const SafetensorsTensor* gi = nullptr;
  if (src.Find(name) != nullptr) {
    const SafetensorsDtype i32[] = {SafetensorsDtype::kI32};
    TESSERA_ASSIGN_OR_RETURN(gi, RequireTensor(src, name, i32, {q.cols}));
  }
  for (int64_t c = 0; c < q.cols; ++c) {
    q.g_idx[c] = gi != nullptr ? static_cast<int32_t>(Word(*gi, c)) : static_cast<int32_t>(c / group_size);
    if (q.g_idx[c] < 0 || q.g_idx[c] >= q.groups) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "[", c, "] = ", q.g_idx[c], " is outside the ", q.groups, " groups"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ReadGroupSize(const nlohmann::json& config, const char* key, std::string_view method) {
  if (!config.contains(key) || config[key].is_null()) return -1;
  const nlohmann::json& v = config[key];
  if (!v.is_number_integer() || (v.get<int64_t>() < 1 && v.get<int64_t>() != -1) || v.get<int64_t>() > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(method), " ", key, " must be -1 or a positive integer; got ",
                                                   EscapeForMessage(v.dump())));
  }
  return v.get<int>();
}

absl::StatusOr<RepackedWeight> RepackGroupQuantized(const GroupQuantized& q) {
  if (q.bits != 4 && q.bits != 8) return absl::UnimplementedError(absl::StrCat(q.bits, "-bit weights are not supported"));
  if (q.rows < 1 || q.cols < 1 || q.groups < 1 || q.codes.size() != static_cast<size_t>(q.rows * q.cols) ||
      q.scales.size() != static_cast<size_t>(q.rows * q.groups) || q.zeros.size() != q.scales.size() ||
      q.g_idx.size() != static_cast<size_t>(q.cols)) {
    return absl::InternalError("inconsistent group-quantized matrix");
  }
  std::vector<int64_t> count(q.groups, 0);
  for (int64_t c = 0; c < q.cols; ++c) {
    if (q.g_idx[c] < 0 || q.g_idx[c] >= q.groups) {
      return absl::InvalidArgumentError(absl::StrCat("g_idx[", c, "] = ", q.g_idx[c], " is outside [0, ", q.groups, ")"));
    }
    ++count[q.g_idx[c]];
  }
  for (size_t i = 0; i < q.scales.size(); ++i) {
    if (!std::isfinite(q.scales[i])) {
      return absl::InvalidArgumentError(absl::StrCat("scale ", i % q.groups, " of row ", i / q.groups, " is not finite"));
    }
    if (q.zeros[i] < 0 || q.zeros[i] > (1 << q.bits)) {
      return absl::InvalidArgumentError(absl::StrCat("zero point ", q.zeros[i], " is outside [0, ", 1 << q.bits, "]"));
    }
  }
  // The block: the largest of 128, 64, 32 dividing every group's size.
  int block = 0;
  for (int b : {128, 64, 32}) {
    if (std::all_of(count.begin(), count.end(), [b](int64_t n) { return n % b == 0; })) {
      block = b;
      break;
    }
  }
  if (block == 0) {
    for (int64_t g = 0; g < q.groups; ++g) {
      if (count[g] % 32 != 0) {
        return absl::UnimplementedError(absl::StrCat("group ", g, " has ", count[g],
                                                     " columns; groups must be whole multiples of 32 columns"));
      }
    }
  }
  std::vector<int32_t> order(q.cols);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return q.g_idx[a] < q.g_idx[b]; });
  RepackedWeight out;
  const bool identity = std::is_sorted(q.g_idx.begin(), q.g_idx.end());
  if (!identity) out.perm = order;
  // Mixed widths: the stored columns of groups wider than 4 bits, if they
  // all come first (else the whole matrix stays 8-bit).
  int64_t wide_cols = q.bits == 8 ? q.cols : 0;
  if (q.bits == 8 && !q.group_bits.empty()) {
    if (q.group_bits.size() != static_cast<size_t>(q.groups)) return absl::InternalError("inconsistent group widths");
    int64_t k = 0;
    while (k < q.cols && q.group_bits[q.g_idx[order[k]]] > 4) ++k;
    bool narrow_rest = true;
    for (int64_t j = k; j < q.cols && narrow_rest; ++j) narrow_rest = q.group_bits[q.g_idx[order[j]]] <= 4;
    // k ends a group, and groups are whole blocks.
    if (narrow_rest) wide_cols = k;
  }
  using G = GgmlType;
  const G types4[] = {G::kQ4G32, G::kQ4G64, G::kQ4G128}, types8[] = {G::kQ8G32, G::kQ8G64, G::kQ8G128},
          mixed[] = {G::kQ84G32, G::kQ84G64, G::kQ84G128};
  const int ti = block == 32 ? 0 : block == 64 ? 1 : 2;
  const int64_t wide_blocks = wide_cols / block, blocks = q.cols / block;
  out.type = wide_cols == 0 ? types4[ti] : wide_cols == q.cols ? types8[ti] : mixed[ti];
  out.wide_cols = IsMixedWidth(out.type) ? wide_cols : 0;
  out.row_bytes = static_cast<size_t>(wide_blocks) * TraitsOf(types8[ti])->block_bytes +
                  static_cast<size_t>(blocks - wide_blocks) * TraitsOf(types4[ti])->block_bytes;
  out.data.assign(out.row_bytes * static_cast<size_t>(q.rows), 0);
  for (int64_t r = 0; r < q.rows; ++r) {
    uint8_t* row = out.data.data() + r * out.row_bytes;
    const bool ok = block == 32    ? PackRow<32>(q, order, r, wide_blocks, row)
                    : block == 64 ? PackRow<64>(q, order, r, wide_blocks, row)
                                  : PackRow<128>(q, order, r, wide_blocks, row);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("row ", r, " has a code outside the 4 bits its group declares"));
    }
  }
  return out;
}

std::vector<uint8_t> WidenMixedWidth(WeightView& w) {
  const int64_t g = TraitsOf(w.type)->block_elems;
  return g == 32 ? WidenRows<32>(w) : g == 64 ? WidenRows<64>(w) : WidenRows<128>(w);
}

}  // namespace tessera
