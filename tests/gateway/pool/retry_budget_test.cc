#include "gateway/pool/retry_budget.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace tessera::gateway {
namespace {

TEST(RetryBudgetTest, AShareOfTheRequestsInFlightWithAFloor) {
  RetryBudget b(0.2, 3);
  EXPECT_EQ(b.Limit(0), 3);
  EXPECT_EQ(b.Limit(10), 3);
  EXPECT_EQ(b.Limit(100), 20);
  // With 10 requests in flight: 3 retries at once, the fourth refused.
  EXPECT_TRUE(b.TryStart(10));
  EXPECT_TRUE(b.TryStart(10));
  EXPECT_TRUE(b.TryStart(10));
  EXPECT_FALSE(b.TryStart(10));
  EXPECT_EQ(b.in_progress(), 3);
  // More traffic, more room.
  EXPECT_TRUE(b.TryStart(100));
  b.End();
  b.End();
  EXPECT_EQ(b.in_progress(), 2);
  EXPECT_TRUE(b.TryStart(10));
}

TEST(RetryBudgetTest, RacingRetriesNeverExceedTheLimit) {
  RetryBudget b(0.0, 4);
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) granted += b.TryStart(0);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(granted.load(), 4);
  EXPECT_EQ(b.in_progress(), 4);
}

}  // namespace
}  // namespace tessera::gateway
