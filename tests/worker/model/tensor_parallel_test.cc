// PlanTensorParallel: how heads, KV heads and feed-forward features go to
// ranks, and the splits it refuses.
#include "worker/model/tensor_parallel.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

LlamaConfig Shapes(int heads, int kv_heads, int head_dim, int n_ff) {
  LlamaConfig c;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.n_embd = heads * head_dim;
  c.n_ff = n_ff;
  return c;
}

struct Expected {
  int q0, q1, kv0, kv1;
  int64_t ff0, ff1;
};

void ExpectPlan(const TensorParallelPlan& plan, const std::vector<Expected>& want) {
  ASSERT_EQ(plan.ranks.size(), want.size());
  for (size_t r = 0; r < want.size(); ++r) {
    const RankShard& s = plan.ranks[r];
    EXPECT_EQ(s.q_head_begin, want[r].q0) << "rank " << r;
    EXPECT_EQ(s.q_head_end, want[r].q1) << "rank " << r;
    EXPECT_EQ(s.kv_head_begin, want[r].kv0) << "rank " << r;
    EXPECT_EQ(s.kv_head_end, want[r].kv1) << "rank " << r;
    EXPECT_EQ(s.ff_begin, want[r].ff0) << "rank " << r;
    EXPECT_EQ(s.ff_end, want[r].ff1) << "rank " << r;
  }
}

// SmolLM2-135M: 9 heads in 3 KV groups of 64 values, 1536 features, Q4_1 (32).
TEST(TensorParallelPlanTest, SmolLm2SplitsByWholeKvGroupsThenReplicatesKvHeads) {
  const LlamaConfig c = Shapes(9, 3, 64, 1536);
  auto one = PlanTensorParallel(c, 1, 32, 32);
  ASSERT_TRUE(one.ok()) << one.status();
  ExpectPlan(*one, {{0, 9, 0, 3, 0, 1536}});
  auto two = PlanTensorParallel(c, 2, 32, 32);
  ASSERT_TRUE(two.ok()) << two.status();
  ExpectPlan(*two, {{0, 6, 0, 2, 0, 768}, {6, 9, 2, 3, 768, 1536}});
  auto three = PlanTensorParallel(c, 3, 32, 32);
  ASSERT_TRUE(three.ok()) << three.status();
  ExpectPlan(*three, {{0, 3, 0, 1, 0, 512}, {3, 6, 1, 2, 512, 1024}, {6, 9, 2, 3, 1024, 1536}});
  // Four ranks, three KV heads: group 0 is shared by ranks 0 and 1, each
  // holding a copy of KV head 0.
  auto four = PlanTensorParallel(c, 4, 32, 32);
  ASSERT_TRUE(four.ok()) << four.status();
  ExpectPlan(*four, {{0, 2, 0, 1, 0, 384}, {2, 3, 0, 1, 384, 768}, {3, 6, 1, 2, 768, 1152}, {6, 9, 2, 3, 1152, 1536}});
}

TEST(TensorParallelPlanTest, FeedForwardSplitsOnWholeBlocks) {
  // 1536 features in 256-wide K-quant blocks: 6 blocks over 4 ranks.
  auto plan = PlanTensorParallel(Shapes(8, 8, 64, 1536), 4, 32, 256);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->ranks[0].ff_end, 512);
  EXPECT_EQ(plan->ranks[1].ff_end, 1024);
  EXPECT_EQ(plan->ranks[2].ff_end, 1280);
  EXPECT_EQ(plan->ranks[3].ff_end, 1536);
}

TEST(TensorParallelPlanTest, RefusesSplitsItCannotMake) {
  auto message = [](const absl::StatusOr<TensorParallelPlan>& p) { return std::string(p.status().message()); };
  // Qwen2.5-0.5B's attention output in Q4_K: 7 heads of 64 put rank 1's first
  // column at 448, inside a 256-column block.
  auto qwen = PlanTensorParallel(Shapes(14, 2, 64, 4864), 2, 256, 256);
  ASSERT_FALSE(qwen.ok());
  EXPECT_NE(message(qwen).find("would cut the attention output projection's quantization blocks of 256 columns at "
                               "head 7 (column 448)"),
            std::string::npos)
      << message(qwen);
  auto many = PlanTensorParallel(Shapes(9, 3, 64, 1536), 10, 32, 32);
  ASSERT_FALSE(many.ok());
  EXPECT_NE(message(many).find("exceeds the model's 9 attention heads"), std::string::npos) << message(many);
  EXPECT_FALSE(PlanTensorParallel(Shapes(9, 3, 64, 1536), 0, 32, 32).ok());
  // More ranks than the down projection has blocks.
  auto narrow = PlanTensorParallel(Shapes(8, 8, 64, 512), 4, 32, 256);
  ASSERT_FALSE(narrow.ok());
  EXPECT_NE(message(narrow).find("exceeds the 2 quantization blocks"), std::string::npos) << message(narrow);
  // Features that are not whole blocks.
  EXPECT_FALSE(PlanTensorParallel(Shapes(8, 8, 64, 1000), 2, 32, 256).ok());
}

}  // namespace
}  // namespace tessera
