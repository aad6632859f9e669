#include "tools/quantize/group_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/fp16.h"

namespace tessera::quantize {
namespace {

// AutoAWQ's AWQ_ORDER: nibble i of a word holds output column 8w + kAwqOrder[i].
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

void PutU32(std::vector<uint8_t>& bytes, int64_t index, uint32_t v) { std::memcpy(bytes.data() + 4 * index, &v, 4); }

absl::Status ScaleError(float scale) {
  return absl::InvalidArgumentError(absl::StrCat("a group's scale (", scale,
                                                 ") does not fit float16: the weights are too large for this format"));
}

}  // namespace

GroupQuantizedLinear GroupQuantizedLinear::Make(int bits, int64_t rows, int64_t cols, int64_t groups) {
  GroupQuantizedLinear q;
  q.bits = bits;
  q.rows = rows;
  q.cols = cols;
  q.groups = groups;
  q.codes.assign(static_cast<size_t>(rows * cols), 0);
  q.scales.assign(static_cast<size_t>(rows * groups), 0);
  q.zeros.assign(q.scales.size(), 0);
  q.g_idx.assign(static_cast<size_t>(cols), 0);
  return q;
}

float GroupQuantizedLinear::Weight(int64_t r, int64_t c) const {
  const int64_t k = r * groups + g_idx[c];
  return Fp16ToFp32(scales[k]) * static_cast<float>(static_cast<int32_t>(codes[r * cols + c]) - zeros[k]);
}

std::vector<float> GroupQuantizedLinear::Dequantize() const {
  std::vector<float> w(static_cast<size_t>(rows * cols));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = Weight(r, c);
  }
  return w;
}

bool ScaleToF16(float scale, uint16_t* out) {
  if (!(scale > 0) || !std::isfinite(scale)) return false;
  uint16_t h = Fp32ToFp16(scale);
  if ((h & 0x7FFF) == 0) h = 1;  // 2^-24, the smallest subnormal
  if ((h & 0x7C00) == 0x7C00) return false;
  *out = h;
  return true;
}

int QuantizeValue(float w, float scale, int32_t zero, int maxq) {
  const float q = std::nearbyint(w / scale) + static_cast<float>(zero);
  return static_cast<int>(std::clamp(q, 0.f, static_cast<float>(maxq)));
}

namespace {

// GPTQ's quantizer range: [min(w, 0), max(w, 0)], symmetric about 0 for
// sym, and [-1, 1] for an all-zero group.
std::pair<float, float> GptqRange(const float* w, int64_t n, bool sym) {
  float xmin = 0, xmax = 0;
  for (int64_t i = 0; i < n; ++i) {
    xmin = std::min(xmin, w[i]);
    xmax = std::max(xmax, w[i]);
  }
  if (sym) {
    xmax = std::max(std::fabs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin == 0 && xmax == 0) return {-1.f, 1.f};
  return {xmin, xmax};
}

// Scale and zero point of the range [lo, hi]; false if the scale has no
// finite f16 form.
bool ParamsForRange(float lo, float hi, int maxq, bool sym, GroupParams* out, float* scale) {
  *scale = (hi - lo) / static_cast<float>(maxq);
  out->zero = sym ? (maxq + 1) / 2 : static_cast<int32_t>(std::nearbyint(-lo / *scale));
  return ScaleToF16(*scale, &out->scale);
}

}  // namespace

absl::StatusOr<GroupParams> GptqGroupParams(const float* w, int64_t n, int bits, bool sym) {
  const auto [xmin, xmax] = GptqRange(w, n, sym);
  GroupParams p;
  float scale = 0;
  if (!ParamsForRange(xmin, xmax, (1 << bits) - 1, sym, &p, &scale)) return ScaleError(scale);
  return p;
}

absl::StatusOr<GroupParams> GptqGroupParamsMse(const float* w, int64_t n, int bits, bool sym, double norm) {
  const int maxq = (1 << bits) - 1;
  const auto [xmin, xmax] = GptqRange(w, n, sym);
  GroupParams best;
  double best_err = 0;
  bool have = false;
  constexpr int kGrid = 100, kSteps = 80;  // maxshrink 0.8
  for (int i = 0; i < kSteps; ++i) {
    const float p = 1.f - static_cast<float>(i) / static_cast<float>(kGrid);
    GroupParams g;
    float scale = 0;
    if (!ParamsForRange(p * xmin, p * xmax, maxq, sym, &g, &scale)) {
      if (i == 0) return ScaleError(scale);
      continue;
    }
    const float s = Fp16ToFp32(g.scale);
    double err = 0;
    for (int64_t k = 0; k < n; ++k) {
      const float d = s * static_cast<float>(QuantizeValue(w[k], s, g.zero, maxq) - g.zero) - w[k];
      err += std::pow(std::fabs(static_cast<double>(d)), norm);
    }
    if (!have || err < best_err) {
      best = g;
      best_err = err;
      have = true;
    }
  }
  return best;
}

absl::StatusOr<GroupParams> AwqGroupParams(const float* w, int64_t n) {
  float mn = w[0], mx = w[0];
  for (int64_t i = 1; i < n; ++i) {
    mn = std::min(mn, w[i]);
    mx = std::max(mx, w[i]);
  }
  const float scale = std::max(mx - mn, 1e-5f) / 15.f;
  GroupParams p;
  p.zero = static_cast<int32_t>(std::clamp(-std::nearbyint(mn / scale), 0.f, 15.f));
  if (!ScaleToF16(scale, &p.scale)) return ScaleError(scale);
  return p;
}

absl::StatusOr<GroupQuantizedLinear> RtnQuantize(const float* w, int64_t rows, int64_t cols, int bits,
                                                 int group_size, bool sym, bool awq_params) {
  const int64_t g = group_size == -1 ? cols : group_size;
  const int64_t groups = (cols + g - 1) / g;
  const int maxq = (1 << bits) - 1;
  GroupQuantizedLinear q = GroupQuantizedLinear::Make(bits, rows, cols, groups);
  for (int64_t c = 0; c < cols; ++c) q.g_idx[c] = static_cast<int32_t>(c / g);
  absl::Status error;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t c0 = gi * g, n = std::min(g, cols - c0);
      const float* src = w + r * cols + c0;
      absl::StatusOr<GroupParams> p = awq_params ? AwqGroupParams(src, n) : GptqGroupParams(src, n, bits, sym);
      if (!p.ok()) {
#pragma omp critical
        error = p.status();
        continue;
      }
      q.scales[r * groups + gi] = p->scale;
      q.zeros[r * groups + gi] = p->zero;
      const float s = Fp16ToFp32(p->scale);
      for (int64_t i = 0; i < n; ++i) {
        q.codes[r * cols + c0 + i] = static_cast<uint8_t>(QuantizeValue(src[i], s, p->zero, maxq));
      }
    }
  }
  if (!error.ok()) return error;
  return q;
}

std::vector<PackedTensor> AwqLayout(int64_t rows, int64_t cols, int64_t groups) {
  std::vector<PackedTensor> t;
  t.push_back(ZeroPackedTensor("qweight", SafetensorsDtype::kI32, {cols, rows / 8}));
  t.push_back(ZeroPackedTensor("qzeros", SafetensorsDtype::kI32, {groups, rows / 8}));
  t.push_back(ZeroPackedTensor("scales", SafetensorsDtype::kF16, {groups, rows}));
  return t;
}

std::vector<PackedTensor> GptqLayout(int bits, int64_t rows, int64_t cols, int64_t groups) {
  const int64_t per_word = 32 / bits;
  std::vector<PackedTensor> t;
  t.push_back(ZeroPackedTensor("qweight", SafetensorsDtype::kI32, {(cols + per_word - 1) / per_word, rows}));
  t.push_back(ZeroPackedTensor("qzeros", SafetensorsDtype::kI32, {groups, (rows + per_word - 1) / per_word}));
  t.push_back(ZeroPackedTensor("scales", SafetensorsDtype::kF16, {groups, rows}));
  t.push_back(ZeroPackedTensor("g_idx", SafetensorsDtype::kI32, {cols}));
  return t;
}

std::vector<PackedTensor> PackAwq(const GroupQuantizedLinear& q) {
  std::vector<PackedTensor> t = AwqLayout(q.rows, q.cols, q.groups);
  const int64_t words = q.rows / 8;
  for (int64_t c = 0; c < q.cols; ++c) {
    for (int64_t w = 0; w < words; ++w) {
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) word |= static_cast<uint32_t>(q.codes[(8 * w + kAwqOrder[i]) * q.cols + c]) << (4 * i);
      PutU32(t[0].bytes, c * words + w, word);
    }
  }
  for (int64_t g = 0; g < q.groups; ++g) {
    for (int64_t w = 0; w < words; ++w) {
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) word |= static_cast<uint32_t>(q.zeros[(8 * w + kAwqOrder[i]) * q.groups + g]) << (4 * i);
      PutU32(t[1].bytes, g * words + w, word);
    }
    for (int64_t r = 0; r < q.rows; ++r) std::memcpy(t[2].bytes.data() + 2 * (g * q.rows + r), &q.scales[r * q.groups + g], 2);
  }
  return t;
}

std::vector<PackedTensor> PackGptq(const GroupQuantizedLinear& q) {
  std::vector<PackedTensor> t = GptqLayout(q.bits, q.rows, q.cols, q.groups);
  const int b = q.bits;
  const int64_t per_word = 32 / b;
  const int64_t qweight_rows = (q.cols + per_word - 1) / per_word;
  for (int64_t k = 0; k < qweight_rows; ++k) {
    for (int64_t r = 0; r < q.rows; ++r) {
      uint32_t word = 0;
      for (int64_t j = 0; j < per_word && k * per_word + j < q.cols; ++j) {
        word |= static_cast<uint32_t>(q.codes[r * q.cols + k * per_word + j]) << (b * j);
      }
      PutU32(t[0].bytes, k * q.rows + r, word);
    }
  }
  // v1 stores zero - 1 the way GPTQModel's convert_gptq_v2_to_v1_format
  // makes it: one subtraction per packed word, wrapping (a zero of 0 borrows
  // from the next field); loaders undo it by adding the same constant.
  const uint32_t v1_offset = b == 4 ? 0x11111111u : 0x01010101u;
  const int64_t zero_words = (q.rows + per_word - 1) / per_word;
  for (int64_t g = 0; g < q.groups; ++g) {
    for (int64_t w = 0; w < zero_words; ++w) {
      uint32_t word = 0;
      for (int64_t j = 0; j < per_word && w * per_word + j < q.rows; ++j) {
        word |= static_cast<uint32_t>(q.zeros[(w * per_word + j) * q.groups + g]) << (b * j);
      }
      PutU32(t[1].bytes, g * zero_words + w, word - v1_offset);
    }
    for (int64_t r = 0; r < q.rows; ++r) std::memcpy(t[2].bytes.data() + 2 * (g * q.rows + r), &q.scales[r * q.groups + g], 2);
  }
  for (int64_t c = 0; c < q.cols; ++c) PutU32(t[3].bytes, c, static_cast<uint32_t>(q.g_idx[c]));
  return t;
}

PackedTensor ZeroPackedTensor(const char* suffix, SafetensorsDtype dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  PackedTensor t{suffix, dtype, std::move(shape), {}};
  t.bytes.assign(static_cast<size_t>(n) * DtypeSize(dtype), 0);
  return t;
}

}  // namespace tessera::quantize
