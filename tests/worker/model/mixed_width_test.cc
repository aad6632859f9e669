// Mixed-width layouts (EXL2 matrices mixing 5-8 bit groups with 2-4 bit
// ones): the repack stores the narrow groups at 4 bits without changing a
// weight, the CPU backend multiplies the two parts, and the widened form a
// backend without mixed-width kernels gets is the same matrix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "common/fp16.h"
#include "kernels/backend.h"
#include "kernels/cpu/quant_kernels.h"
#include "worker/model/quant_format.h"

namespace tessera {
namespace {

// rows x (64 * widths.size()) codes, one group of 64 columns per width,
// centred at 128 as the EXL2 loader stores an 8-bit matrix; f16 scales.
GroupQuantized MakeMatrix(const std::vector<int>& widths, int64_t rows, bool permuted, uint32_t seed) {
  const int64_t groups = static_cast<int64_t>(widths.size()), cols = 64 * groups;
  GroupQuantized q = MakeGroupQuantized(8, rows, cols, groups);
  std::mt19937 rng(seed);
  std::vector<int32_t> order(cols);
  std::iota(order.begin(), order.end(), 0);
  if (permuted) std::shuffle(order.begin(), order.end(), rng);
  for (int64_t k = 0; k < cols; ++k) q.g_idx[order[k]] = static_cast<int32_t>(k / 64);
  for (int w : widths) q.group_bits.push_back(static_cast<uint8_t>(w));
  std::fill(q.zeros.begin(), q.zeros.end(), 128);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  for (float& s : q.scales) s = Fp16ToFp32(Fp32ToFp16(scale(rng)));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int bits = widths[q.g_idx[c]];
      std::uniform_int_distribution<int> code(-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
      q.codes[r * cols + c] = static_cast<uint8_t>(128 + code(rng));
    }
  }
  return q;
}

WeightView View(const RepackedWeight& r, const GroupQuantized& q) {
  WeightView w;
  w.data = r.data.data();
  w.type = r.type;
  w.rows = q.rows;
  w.cols = q.cols;
  w.row_bytes = r.row_bytes;
  w.wide_cols = r.wide_cols;
  w.input_perm = r.perm.empty() ? nullptr : r.perm.data();
  return w;
}

// Row r of a plain or mixed-width weight, in input column order, by the
// reference dequantizer.
std::vector<float> Dequantize(const WeightView& w, int64_t r) {
  const cpu::WeightKernels* k = cpu::ReferenceKernelsFor(w.type);
  EXPECT_NE(k, nullptr);
  std::vector<float> stored(static_cast<size_t>(w.cols)), out(stored.size());
  k->dequant(w.data + r * w.row_bytes, stored.data(), IsMixedWidth(w.type) ? cpu::MixedWidthN(w.cols, w.wide_cols) : w.cols);
  for (int64_t j = 0; j < w.cols; ++j) out[w.input_perm != nullptr ? w.input_perm[j] : j] = stored[j];
  return out;
}

struct Case {
  std::vector<int> widths;
  bool permuted;
  GgmlType type;
  int64_t wide_cols;
};

class MixedWidthTest : public ::testing::TestWithParam<Case> {};

TEST_P(MixedWidthTest, RepackKeepsEveryWeightAndWideningKeepsThemToo) {
  const Case& c = GetParam();
  const GroupQuantized q = MakeMatrix(c.widths, 12, c.permuted, 7);
  absl::StatusOr<RepackedWeight> r = RepackGroupQuantized(q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->type, c.type);
  EXPECT_EQ(r->wide_cols, IsMixedWidth(c.type) ? c.wide_cols : 0);
  WeightView w = View(*r, q);
  for (int64_t row = 0; row < q.rows; ++row) {
    const std::vector<float> got = Dequantize(w, row);
    for (int64_t col = 0; col < q.cols; ++col) ASSERT_EQ(got[col], q.Weight(row, col)) << row << "," << col;
  }
  if (!IsMixedWidth(w.type)) return;
  // Narrow blocks take half the bytes of wide ones (plus their scale and offset).
  EXPECT_LT(r->row_bytes, static_cast<size_t>(q.cols / 64) * (8 + 64));
  WeightView widened = w;
  const std::vector<uint8_t> bytes = WidenMixedWidth(widened);
  widened.data = bytes.data();
  EXPECT_EQ(widened.type, GgmlType::kQ8G64);
  EXPECT_EQ(widened.wide_cols, 0);
  for (int64_t row = 0; row < q.rows; ++row) {
    const std::vector<float> got = Dequantize(widened, row);
    for (int64_t col = 0; col < q.cols; ++col) ASSERT_EQ(got[col], q.Weight(row, col)) << row << "," << col;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Widths, MixedWidthTest,
    ::testing::Values(Case{{8, 6, 5, 4, 3, 2}, false, GgmlType::kQ84G64, 192},
                      Case{{8, 6, 5, 4, 3, 2}, true, GgmlType::kQ84G64, 192},
                      Case{{5, 4, 4, 3}, true, GgmlType::kQ84G64, 64},
                      Case{{4, 3, 2, 2}, true, GgmlType::kQ4G64, 0},   // all narrow: plain 4-bit
                      Case{{8, 6, 6, 5}, false, GgmlType::kQ8G64, 256},  // all wide: plain 8-bit
                      // A narrow group before a wide one (not EXL2's order): all 8-bit.
                      Case{{4, 6, 3, 2}, false, GgmlType::kQ8G64, 256}));

// The backend multiplies a mixed-width weight bit for bit as the same matrix
// stored plainly at 8 bits: its kernels read a 4-bit chunk as the 8-bit
// chunk it widens to, in the 8-bit kernels' order (one row, and the 4-row
// and 2x4 kernels plus a remainder).
TEST(MixedWidthMatMulTest, EqualsThePlainEightBitProductBitForBit) {
  for (const bool permuted : {false, true}) {
    GroupQuantized q = MakeMatrix({8, 6, 5, 4, 3, 2}, 40, permuted, 11);
    absl::StatusOr<RepackedWeight> mixed = RepackGroupQuantized(q);
    ASSERT_TRUE(mixed.ok()) << mixed.status();
    ASSERT_TRUE(IsMixedWidth(mixed->type));
    GroupQuantized plain_q = q;
    plain_q.group_bits.clear();
    absl::StatusOr<RepackedWeight> plain = RepackGroupQuantized(plain_q);
    ASSERT_TRUE(plain.ok()) << plain.status();
    ASSERT_EQ(plain->type, GgmlType::kQ8G64);
    // Widening gives the plain repack's bytes.
    WeightView widened = View(*mixed, q);
    const std::vector<uint8_t> widened_bytes = WidenMixedWidth(widened);
    EXPECT_EQ(widened_bytes, plain->data);

    auto be = CreateCpuBackend({.threads = 2});
    ASSERT_TRUE(be->SupportsWeightType(mixed->type));
    for (const int64_t n : {1, 7}) {
      Mat x = *be->AllocateMat(n, q.cols), y_mixed = *be->AllocateMat(n, q.rows), y_plain = *be->AllocateMat(n, q.rows);
      std::mt19937 rng(static_cast<uint32_t>(n));
      std::normal_distribution<float> dist(0.f, 1.f);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < q.cols; ++c) x.row(r)[c] = dist(rng);
      be->MatMul(View(*mixed, q), x, y_mixed);
      be->MatMul(View(*plain, plain_q), x, y_plain);
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t o = 0; o < q.rows; ++o) {
          ASSERT_EQ(y_mixed.row(r)[o], y_plain.row(r)[o]) << "permuted " << permuted << " n " << n << " row " << r
                                                          << " out " << o;
        }
      }
      be->MatMul(View(*mixed, q), x, y_mixed, /*accumulate=*/true);
      EXPECT_EQ(y_mixed.row(0)[0], y_plain.row(0)[0] + y_plain.row(0)[0]);
    }
  }
}

}  // namespace
}  // namespace tessera
