// Group quantization of one linear layer and the two on-disk layouts the
// awq, gptq and rtn outputs are written in (AutoAWQ GEMM, GPTQ v1); the
// packing is documented in tools/checkpoints/quant_formats.py, whose
// independent dequantizer the tests hold these bytes to.
//
// Scales are stored as f16. Codes are always computed against the stored f16
// scale (q = clamp(round(w / s_f16) + zero, 0, maxq), round half to even), so
// that what a loader reconstructs, s_f16 * (q - zero), is exactly what the
// quantizer thought it wrote (GPTQ's error feedback relies on that).
#ifndef TESSERA_TOOLS_QUANTIZE_GROUP_QUANT_H_
#define TESSERA_TOOLS_QUANTIZE_GROUP_QUANT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors/safetensors_file.h"

namespace tessera::quantize {

// One matrix [rows = output features][cols = input features] in its
// original column order: w[r][c] = scale(r, g) * (code[r][c] - zero(r, g))
// with g = g_idx[c].
struct GroupQuantizedLinear {
  int bits = 4;
  int64_t rows = 0, cols = 0, groups = 0;
  std::vector<uint8_t> codes;    // rows * cols, each < 2^bits
  std::vector<uint16_t> scales;  // rows * groups, f16 bits
  std::vector<int32_t> zeros;    // rows * groups, each in [0, 2^bits)
  std::vector<int32_t> g_idx;    // cols, each in [0, groups)

  // REQUIRES: the vectors sized for rows, cols, groups.
  static GroupQuantizedLinear Make(int bits, int64_t rows, int64_t cols, int64_t groups);
  float Weight(int64_t r, int64_t c) const;
  // The float weights a loader reconstructs, rows * cols.
  std::vector<float> Dequantize() const;
};

// A group's scale (f16 bits) and zero point.
struct GroupParams {
  uint16_t scale = 0;
  int32_t zero = 0;
};

// f16 bits of a positive scale; an underflow to 0 becomes the smallest
// subnormal (2^-24), as AutoAWQ/GPTQModel files can only hold f16. Returns
// false if the scale does not fit f16 (|w| beyond ~1e6).
bool ScaleToF16(float scale, uint16_t* out);

// GPTQ's Quantizer.find_params over one row's group of n values (xmin/xmax
// widened to include 0; sym: zero at (maxq + 1) / 2; an all-zero group gets
// the range [-1, 1]). The zero is computed with the float scale before it is
// rounded to f16, as GPTQModel does.
absl::StatusOr<GroupParams> GptqGroupParams(const float* w, int64_t n, int bits, bool sym);
// GPTQ's Quantizer with mse=True (norm `norm`, grid 100, maxshrink 0.8):
// the range [xmin, xmax] of GptqGroupParams shrunk by p = 1 - i/100, i = 0..79,
// keeping the first p with the least sum |s16 (q - zero) - w|^norm (the error
// of the stored f16 scale s16; asym: zero = round(-p xmin / scale)).
absl::StatusOr<GroupParams> GptqGroupParamsMse(const float* w, int64_t n, int bits, bool sym, double norm);
// AutoAWQ's pseudo_quantize_tensor (zero_point=True) over n values:
// s = max(max - min, 1e-5) / 15, z = clamp(-round(min / s), 0, 15).
absl::StatusOr<GroupParams> AwqGroupParams(const float* w, int64_t n);
// clamp(round(w / scale) + zero, 0, maxq), scale the f16 value as float.
int QuantizeValue(float w, float scale, int32_t zero, int maxq);

// Round to nearest per group of `group_size` consecutive columns (-1: one
// group per row; a partial last group allowed): GPTQ's find_params
// (layout "gptq") or AutoAWQ's zero-point min/max (layout "awq", 4-bit).
absl::StatusOr<GroupQuantizedLinear> RtnQuantize(const float* w, int64_t rows, int64_t cols, int bits,
                                                 int group_size, bool sym, bool awq_params);

// A tensor ready to be written: name suffix after the module name, dtype,
// shape and little-endian bytes.
struct PackedTensor {
  std::string suffix;  // "qweight", "qzeros", "scales", "g_idx"
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// A tensor of `shape` and `dtype` with every byte zero, for a packer to fill.
PackedTensor ZeroPackedTensor(const char* suffix, SafetensorsDtype dtype, std::vector<int64_t> shape);

// The shapes/dtypes the packers produce, for laying out a file before any
// tensor is quantized. `groups` as in GroupQuantizedLinear.
std::vector<PackedTensor> AwqLayout(int64_t rows, int64_t cols, int64_t groups);
std::vector<PackedTensor> GptqLayout(int bits, int64_t rows, int64_t cols, int64_t groups);

// AutoAWQ GEMM: qweight int32 [in, out/8], qzeros int32 [groups, out/8]
// (nibble order AWQ_ORDER), scales f16 [groups, out]. REQUIRES: 4-bit,
// rows % 8 == 0, g_idx == c / group_size.
std::vector<PackedTensor> PackAwq(const GroupQuantizedLinear& q);
// GPTQ checkpoint_format "gptq" (v1): qweight int32 [ceil(in*b/32), out],
// qzeros int32 [groups, ceil(out*b/32)] holding zero - 1 as GPTQModel
// writes it (one wrapping subtraction of 0x11111111 / 0x01010101 per word),
// scales f16 [groups, out], g_idx int32 [in].
std::vector<PackedTensor> PackGptq(const GroupQuantizedLinear& q);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_GROUP_QUANT_H_
