// The prefix cache under hostile hashes: a hash only nominates a candidate,
// so even a hash that collides on every block must never serve one prompt's
// KV blocks to another.
#include "worker/engine/block_manager.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

namespace tessera {
namespace {

uint64_t ConstantHash(uint64_t, std::span<const int32_t>, uint64_t) { return 42; }
// Ignores the parent and the salt: chains collide whenever blocks start alike.
uint64_t FirstTokenHash(uint64_t, std::span<const int32_t> tokens, uint64_t) { return 1000 + tokens[0]; }

struct Seq {
  std::vector<int32_t> table;
  BlockManager::Chain chain;
};

TEST(BlockManagerTest, AnUnrelatedPromptWithTheSameHashIsAMiss) {
  BlockManager blocks(8, 4, true, ConstantHash);
  const std::vector<int32_t> a = {1, 2, 3, 4, 5};
  Seq s;
  ASSERT_EQ(blocks.MatchPrefix(a, 0, s.table, s.chain), 0);
  ASSERT_TRUE(blocks.Grow(s.table, 5).ok());
  blocks.CommitFull(a, 5, 0, s.table, s.chain);
  // The same prompt still hits: verification accepts the true match.
  Seq same;
  EXPECT_EQ(blocks.MatchPrefix(a, 0, same.table, same.chain), 4);
  EXPECT_EQ(same.table[0], s.table[0]);
  // Another prompt (and the same prompt under another salt) hash alike but
  // must not reuse the block; before verification both were hits.
  Seq other, salted;
  EXPECT_EQ(blocks.MatchPrefix(std::vector<int32_t>{9, 9, 9, 9, 5}, 0, other.table, other.chain), 0);
  EXPECT_EQ(blocks.MatchPrefix(a, 7, salted.table, salted.chain), 0);
  EXPECT_EQ(blocks.prefix_false_candidates(), 2u);
}

TEST(BlockManagerTest, TheChildOfAnEvictedAndReusedParentIsAMiss) {
  // Block size 2. Prompt [1,2 | 3,4 | 5] caches P=[1,2] and C=[3,4] after P.
  BlockManager blocks(6, 2, true, FirstTokenHash);
  const std::vector<int32_t> first = {1, 2, 3, 4, 5};
  Seq s1;
  blocks.MatchPrefix(first, 0, s1.table, s1.chain);
  ASSERT_TRUE(blocks.Grow(s1.table, 5).ok());
  blocks.CommitFull(first, 5, 0, s1.table, s1.chain);
  const int32_t p = s1.table[0], c = s1.table[1];
  blocks.Free(s1.table, s1.chain);
  // [1,9] collides with P's hash and wins the slot: P loses its identity and
  // is free again, while C stays cached and still names P as its parent.
  const std::vector<int32_t> collide = {1, 9, 7};
  Seq s2;
  EXPECT_EQ(blocks.MatchPrefix(collide, 0, s2.table, s2.chain), 0);
  ASSERT_TRUE(blocks.Grow(s2.table, 3).ok());
  blocks.CommitFull(collide, 2, 0, s2.table, s2.chain);
  // The freed P is handed out again and now holds [7,8].
  const std::vector<int32_t> reuse = {7, 8, 3, 4, 6};
  Seq s3;
  blocks.MatchPrefix(reuse, 0, s3.table, s3.chain);
  ASSERT_TRUE(blocks.Grow(s3.table, 5).ok());
  ASSERT_EQ(s3.table[0], p);
  blocks.CommitFull(reuse, 2, 0, s3.table, s3.chain);  // only [7,8] so far
  // [7,8 | 3,4] finds P by hash, then C by hash with C's parent == P: only
  // the generation tells that C's K/V were computed after [1,2], not [7,8].
  Seq s4;
  EXPECT_EQ(blocks.MatchPrefix(reuse, 0, s4.table, s4.chain), 2);
  ASSERT_EQ(s4.table.size(), 1u);
  EXPECT_NE(s4.table[0], c);
}

// Random prompts over a tiny alphabet, a tiny pool and a hash with only a
// handful of values; a shadow records what each physical block truly holds
// (the salt and every token from position 0 to its end). Every hit must be
// a block whose true contents are the query's.
TEST(BlockManagerTest, RandomWorkloadUnderAWeakHashNeverServesForeignBlocks) {
  constexpr int kBlock = 2;
  // Three values; blind to the salt and to a block's second token.
  auto weak = [](uint64_t parent, std::span<const int32_t> tokens, uint64_t) { return 1 + (parent + tokens[0]) % 3; };
  BlockManager blocks(12, kBlock, true, weak);
  std::mt19937 rng(1234);
  struct Truth {
    uint64_t salt;
    std::vector<int32_t> prefix;
  };
  std::map<int32_t, Truth> truth;
  struct Live {
    std::vector<int32_t> tokens;
    uint64_t salt;
    Seq seq;
  };
  std::vector<Live> live;
  int hits = 0;
  for (int step = 0; step < 20000; ++step) {
    if (!live.empty() && (live.size() >= 3 || rng() % 2)) {
      const size_t i = rng() % live.size();
      blocks.Free(live[i].seq.table, live[i].seq.chain);
      live.erase(live.begin() + i);
      continue;
    }
    Live l;
    l.salt = rng() % 2;
    const int len = 1 + rng() % 7;
    for (int t = 0; t < len; ++t) l.tokens.push_back(rng() % 2);
    const int64_t matched = blocks.MatchPrefix(l.tokens, l.salt, l.seq.table, l.seq.chain);
    for (int64_t b = 0; b < matched / kBlock; ++b) {
      const Truth& t = truth.at(l.seq.table[b]);
      ASSERT_EQ(t.salt, l.salt) << "step " << step;
      ASSERT_EQ(t.prefix, std::vector<int32_t>(l.tokens.begin(), l.tokens.begin() + (b + 1) * kBlock))
          << "step " << step << " block " << b;
      ++hits;
    }
    if (!blocks.Grow(l.seq.table, len).ok()) {
      blocks.Free(l.seq.table, l.seq.chain);
      continue;
    }
    // "Compute" the rest of the prompt, possibly in two chunks.
    const int64_t mid = matched + rng() % (len - matched + 1);
    for (int64_t computed : {mid, int64_t{len}}) {
      for (int64_t b = matched / kBlock; b < computed / kBlock; ++b) {
        truth[l.seq.table[b]] = Truth{l.salt, std::vector<int32_t>(l.tokens.begin(), l.tokens.begin() + (b + 1) * kBlock)};
      }
      blocks.CommitFull(l.tokens, computed, l.salt, l.seq.table, l.seq.chain);
    }
    live.push_back(std::move(l));
  }
  // The workload must exercise both sides: real reuse and refused candidates.
  EXPECT_GT(hits, 1000);
  EXPECT_GT(blocks.prefix_false_candidates(), 1000u);
}

}  // namespace
}  // namespace tessera
