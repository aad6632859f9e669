// Quantized block layouts of the GGUF formats, byte-exact with the files.
//
// Shared by the CPU kernels, the CUDA kernels and the tests; the
// static_asserts pin every size so that a layout change cannot go unnoticed.
// Scales stored as IEEE half are kept as raw uint16_t (see common/fp16.h).
#ifndef TESSERA_COMMON_QUANT_BLOCKS_H_
#define TESSERA_COMMON_QUANT_BLOCKS_H_

#include <cstdint>

namespace tessera {

inline constexpr int kQk32 = 32;    // elements per block of the legacy formats
inline constexpr int kQkK = 256;    // elements per super-block of the K formats
inline constexpr int kKScaleBytes = 12;

// x = (q - 8) * d; q in [0,16): low nibbles are elements 0..15, high 16..31.
struct BlockQ4_0 { uint16_t d; uint8_t qs[kQk32 / 2]; };
// x = q * d + m.
struct BlockQ4_1 { uint16_t d; uint16_t m; uint8_t qs[kQk32 / 2]; };
// 5-bit: the fifth bit of element j is bit j of qh; x = (q - 16) * d.
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[kQk32 / 2]; };
// x = q * d + m.
struct BlockQ5_1 { uint16_t d; uint16_t m; uint8_t qh[4]; uint8_t qs[kQk32 / 2]; };
// x = q * d.
struct BlockQ8_0 { uint16_t d; int8_t qs[kQk32]; };
// Activation format paired with Q4_1/Q5_1: s = d * sum(qs).
struct BlockQ8_1 { uint16_t d; uint16_t s; int8_t qs[kQk32]; };

// 2-bit K: 16 sub-blocks of 16; scales[i] low nibble scale, high nibble min.
struct BlockQ2_K { uint8_t scales[kQkK / 16]; uint8_t qs[kQkK / 4]; uint16_t d; uint16_t dmin; };
// 3-bit K: low 2 bits in qs, high bit in hmask, 16 6-bit scales in 12 bytes.
struct BlockQ3_K { uint8_t hmask[kQkK / 8]; uint8_t qs[kQkK / 4]; uint8_t scales[kKScaleBytes]; uint16_t d; };
// 4-bit K: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes.
struct BlockQ4_K { uint16_t d; uint16_t dmin; uint8_t scales[kKScaleBytes]; uint8_t qs[kQkK / 2]; };
// 5-bit K: as Q4_K plus one high bit per element in qh.
struct BlockQ5_K { uint16_t d; uint16_t dmin; uint8_t scales[kKScaleBytes]; uint8_t qh[kQkK / 8]; uint8_t qs[kQkK / 2]; };
// 6-bit K: 16 sub-blocks of 16 with int8 scales; x = d * scale * (q - 32).
struct BlockQ6_K { uint8_t ql[kQkK / 2]; uint8_t qh[kQkK / 4]; int8_t scales[kQkK / 16]; uint16_t d; };
// Activation format paired with the K formats.
struct BlockQ8_K { float d; int8_t qs[kQkK]; int16_t bsums[kQkK / 16]; };

// Tessera's repacked group-quantized layouts (GgmlType kQ4G*/kQ8G*; never
// in a file). One block is one quantization group of G elements (G = 32, 64
// or 128) sharing an f32 scale d and offset m: x = q * d + m. An AWQ/GPTQ
// group with f16 scale s and integer zero z repacks exactly: d = s, m = -s*z
// (s has 11 significant bits and z at most 8, so s*z, q*d and their sum are
// exact in f32). The 4-bit codes q in [0, 16) are stored per 32-element chunk
// as ggml's Q4_1 stores them: chunk c is qs[16c .. 16c+15], low nibbles are
// its elements 0..15, high nibbles 16..31. The 8-bit codes are signed, q in
// [-128, 128): an unsigned code u with zero z becomes q = u - 128 and
// m = s * (128 - z).
template <int G>
struct BlockQ4G { float d; float m; uint8_t qs[G / 2]; };
template <int G>
struct BlockQ8G { float d; float m; int8_t qs[G]; };
// Activation format paired with them: x = q * d, s = d * sum(qs), in f32.
struct BlockQ8_1F { float d; float s; int8_t qs[kQk32]; };

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);
static_assert(sizeof(BlockQ4G<32>) == 24 && sizeof(BlockQ4G<64>) == 40 && sizeof(BlockQ4G<128>) == 72);
static_assert(sizeof(BlockQ8_1F) == 40);
static_assert(sizeof(BlockQ8G<32>) == 40 && sizeof(BlockQ8G<64>) == 72 && sizeof(BlockQ8G<128>) == 136);

}  // namespace tessera

#endif  // TESSERA_COMMON_QUANT_BLOCKS_H_
