// Row quantizers for the GGUF block formats, producing the same bytes as
// ggml's reference quantizers (ggml-quants.c, quantize_row_*_ref) that
// llama.cpp's llama_model_quantize uses when no importance matrix is given:
// Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K, plus the plain
// conversions to F32, F16 (round to nearest even) and BF16.
//
// Written from the published algorithms (ggml-quants.c of llama.cpp as
// vendored by llama-cpp-python 0.3.36); the statement order of every float
// operation matters for bit-identity and follows theirs. This file must be
// compiled without floating-point contraction (-ffp-contract=off): ggml's
// quantizers live in libggml-base, built for baseline x86-64 without FMA.
//
// Every row is quantized independently, so any split of rows over threads
// gives the same bytes.
#ifndef TESSERA_TOOLS_QUANTIZE_GGUF_BLOCK_QUANTIZE_H_
#define TESSERA_TOOLS_QUANTIZE_GGUF_BLOCK_QUANTIZE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "common/ggml_types.h"

namespace tessera::quantize {

// Whether QuantizeRows can produce `type`.
bool CanQuantizeTo(GgmlType type);

// Bytes of one row of `n_per_row` elements of `type`; 0 if n_per_row is not
// a whole number of blocks or the type is unknown.
size_t GgufRowBytes(GgmlType type, int64_t n_per_row);

// Quantizes rows [0, nrows) of `src` (row-major, n_per_row floats each) into
// `dst` (nrows * GgufRowBytes(type, n_per_row) bytes), over `threads` OpenMP
// threads (<= 0: OpenMP's default). InvalidArgument if the type cannot be
// produced or the row is not whole blocks. The caller checks that the input
// is finite (a NaN or infinity makes no meaningful block).
absl::Status QuantizeRows(GgmlType type, const float* src, int64_t nrows, int64_t n_per_row, uint8_t* dst,
                          int threads = 0);

// One row, single-threaded (the unit tests use it directly).
void QuantizeRow(GgmlType type, const float* src, int64_t n_per_row, uint8_t* dst);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_GGUF_BLOCK_QUANTIZE_H_
