// Deterministic normal random values for kernel tests.
#ifndef TESSERA_TESTS_KERNELS_RANDOM_VALUES_H_
#define TESSERA_TESTS_KERNELS_RANDOM_VALUES_H_

#include <cstdint>
#include <random>
#include <vector>

namespace tessera::testing {

inline std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_KERNELS_RANDOM_VALUES_H_
