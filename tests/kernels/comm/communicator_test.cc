// The Communicator seam on CPU ranks (Gloo over loopback): each collective's
// result on every rank, for 1, 2, 3 and 4 ranks; and the failure contract: a
// rank that never joins a collective makes the others fail with
// DeadlineExceeded within the timeout, one that goes away makes them fail,
// and a broken communicator stays failed.
#include "kernels/comm/communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

namespace tessera {
namespace {

using namespace std::chrono_literals;

std::vector<std::unique_ptr<Communicator>> Group(int size, std::chrono::milliseconds timeout = 20s) {
  auto g = CreateLocalGlooGroup(size, {.timeout = timeout});
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(*g) : std::vector<std::unique_ptr<Communicator>>{};
}

// Runs `f(rank)` on one thread per rank and returns each rank's status.
std::vector<absl::Status> OnEveryRank(int size, const std::function<absl::Status(int)>& f) {
  std::vector<absl::Status> out(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) threads.emplace_back([&, r] { out[r] = f(r); });
  for (auto& t : threads) t.join();
  return out;
}

class CommunicatorTest : public ::testing::TestWithParam<int> {};

TEST_P(CommunicatorTest, CollectivesGiveEveryRankTheSameAnswer) {
  const int n = GetParam();
  auto group = Group(n);
  ASSERT_EQ(static_cast<int>(group.size()), n);
  // Sizes around Gloo's segmenting and a ragged one; integer-valued floats,
  // so every summation order gives the exact answer.
  const std::vector<size_t> sizes = {1, 7, 1000, 300001};
  std::vector<std::vector<float>> data(n), gathered(n);
  std::vector<std::vector<std::byte>> bytes(n, std::vector<std::byte>(13));
  auto statuses = OnEveryRank(n, [&](int r) -> absl::Status {
    Communicator& c = *group[r];
    if (c.rank() != r || c.size() != n) return absl::InternalError("rank or size");
    for (size_t len : sizes) {
      data[r].assign(len, 0.f);
      for (size_t i = 0; i < len; ++i) data[r][i] = static_cast<float>((r + 1) * static_cast<int>(i % 97));
      if (auto s = c.AllReduceSum(data[r]); !s.ok()) return s;
    }
    const std::vector<float> mine = {static_cast<float>(r), static_cast<float>(10 * r)};
    gathered[r].assign(2 * n, -1.f);
    if (auto s = c.AllGather(mine, gathered[r]); !s.ok()) return s;
    std::memset(bytes[r].data(), r == n - 1 ? 0xAB : r, bytes[r].size());
    if (auto s = c.Broadcast(bytes[r], n - 1); !s.ok()) return s;
    return c.Barrier();
  });
  const float ranks_sum = n * (n + 1) / 2.f;
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(statuses[r].ok()) << r << ": " << statuses[r];
    ASSERT_EQ(data[r].size(), sizes.back());
    for (size_t i = 0; i < data[r].size(); i += 997) {
      ASSERT_EQ(data[r][i], ranks_sum * static_cast<float>(i % 97)) << "rank " << r << " element " << i;
    }
    for (int q = 0; q < n; ++q) {
      EXPECT_EQ(gathered[r][2 * q], q);
      EXPECT_EQ(gathered[r][2 * q + 1], 10 * q);
    }
    for (std::byte b : bytes[r]) EXPECT_EQ(b, std::byte{0xAB}) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, CommunicatorTest, ::testing::Values(1, 2, 3, 4));

TEST(CommunicatorErrorsTest, ARankThatNeverJoinsTimesTheOthersOut) {
  auto group = Group(3, 500ms);
  ASSERT_EQ(group.size(), 3u);
  const auto start = std::chrono::steady_clock::now();
  // Ranks 0 and 1 reduce; rank 2 never does.
  auto statuses = OnEveryRank(2, [&](int r) {
    std::vector<float> x(64, 1.f);
    return group[r]->AllReduceSum(x);
  });
  const auto waited = std::chrono::steady_clock::now() - start;
  for (const absl::Status& s : statuses) {
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_NE(s.message().find("500 ms"), std::string::npos) << s;
  }
  EXPECT_LT(waited, 10s);
  // Broken for good: the next collective fails at once with the same error.
  std::vector<float> y(4);
  EXPECT_EQ(group[0]->AllReduceSum(y).code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(CommunicatorErrorsTest, ARankThatGoesAwayFailsTheOthers) {
  auto group = Group(2, 5s);
  ASSERT_EQ(group.size(), 2u);
  group[1].reset();  // its connections close
  std::vector<float> x(1024, 1.f);
  const absl::Status s = group[0]->AllReduceSum(x);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded) << s;
}

TEST(CommunicatorErrorsTest, BadArgumentsAreRefusedWithoutACollective) {
  auto group = Group(2);
  ASSERT_EQ(group.size(), 2u);
  std::vector<float> in(3), out(5);
  EXPECT_EQ(group[0]->AllGather(in, out).code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::byte> b(4);
  EXPECT_EQ(group[0]->Broadcast(b, 2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateLocalGlooGroup(0, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateLocalGlooGroup(65, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera
