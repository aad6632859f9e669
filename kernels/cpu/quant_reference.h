// Helpers shared by the reference and SIMD K-format kernels.
#ifndef TESSERA_KERNELS_CPU_QUANT_REFERENCE_H_
#define TESSERA_KERNELS_CPU_QUANT_REFERENCE_H_

#include <cstdint>

namespace tessera::cpu {

// Sub-block j's 6-bit scale and min of a Q4_K/Q5_K block (12 packed bytes).
void ScaleMinK4(int j, const uint8_t* packed, uint8_t* d, uint8_t* m);
// The 16 signed 6-bit scales of a Q3_K block.
void UnpackQ3KScales(const uint8_t packed[12], int8_t out[16]);
// Activation quantizer for the K formats (also used by SIMD variants).
void QuantizeRowQ8_K(const float* x, void* dst, int64_t n);

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_QUANT_REFERENCE_H_
