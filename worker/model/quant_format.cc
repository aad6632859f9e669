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

template <int B>
void PackQ4(const GroupQuantized& q, const std::vector<int32_t>& order, int64_t r, uint8_t* row) {
  auto* blocks = reinterpret_cast<BlockQ4G<B>*>(row);
  const uint8_t* codes = q.codes.data() + r * q.cols;
  for (int64_t k = 0; k < q.cols / B; ++k) {
    const int64_t first = order[k * B];
    const int64_t g = r * q.groups + q.g_idx[first];
    BlockQ4G<B>& b = blocks[k];
    b.d = q.scales[g];
    // Exact for f16/bf16 scales: 11 (or 8) significant bits times a zero
    // of at most 9 bits fits a float's 24.
    b.m = -q.scales[g] * static_cast<float>(q.zeros[g]);
    for (int c = 0; c < B / 32; ++c) {
      for (int j = 0; j < 16; ++j) {
        const uint8_t lo = codes[order[k * B + 32 * c + j]];
        const uint8_t hi = codes[order[k * B + 32 * c + 16 + j]];
        b.qs[16 * c + j] = static_cast<uint8_t>(lo | (hi << 4));
      }
    }
  }
}

template <int B>
void PackQ8(const GroupQuantized& q, const std::vector<int32_t>& order, int64_t r, uint8_t* row) {
  auto* blocks = reinterpret_cast<BlockQ8G<B>*>(row);
  const uint8_t* codes = q.codes.data() + r * q.cols;
  for (int64_t k = 0; k < q.cols / B; ++k) {
    const int64_t first = order[k * B];
    const int64_t g = r * q.groups + q.g_idx[first];
    BlockQ8G<B>& b = blocks[k];
    b.d = q.scales[g];
    b.m = q.scales[g] * static_cast<float>(128 - q.zeros[g]);  // q * d + m = s * (code - z) with q = code - 128
    for (int j = 0; j < B; ++j) b.qs[j] = static_cast<int8_t>(static_cast<int>(codes[order[k * B + j]]) - 128);
  }
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
  using G = GgmlType;
  const G types4[] = {G::kQ4G32, G::kQ4G64, G::kQ4G128}, types8[] = {G::kQ8G32, G::kQ8G64, G::kQ8G128};
  const int ti = block == 32 ? 0 : block == 64 ? 1 : 2;
  out.type = q.bits == 4 ? types4[ti] : types8[ti];
  const auto traits = *TraitsOf(out.type);
  out.row_bytes = static_cast<size_t>(q.cols / block) * traits.block_bytes;
  out.data.assign(out.row_bytes * static_cast<size_t>(q.rows), 0);
  for (int64_t r = 0; r < q.rows; ++r) {
    uint8_t* row = out.data.data() + r * out.row_bytes;
    switch (out.type) {
      case G::kQ4G32: PackQ4<32>(q, order, r, row); break;
      case G::kQ4G64: PackQ4<64>(q, order, r, row); break;
      case G::kQ4G128: PackQ4<128>(q, order, r, row); break;
      case G::kQ8G32: PackQ8<32>(q, order, r, row); break;
      case G::kQ8G64: PackQ8<64>(q, order, r, row); break;
      case G::kQ8G128: PackQ8<128>(q, order, r, row); break;
      default: break;
    }
  }
  return out;
}

}  // namespace tessera
