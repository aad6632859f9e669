// Scheduler and block manager replayed step by step on the CPU, with the
// expected plan and block counts at each step.
#include "worker/engine/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

namespace tessera {
namespace {

SchedSequence Seq(uint64_t id, int prompt_len, int first_token = 0) {
  SchedSequence s;
  s.id = id;
  s.tokens.resize(prompt_len);
  std::iota(s.tokens.begin(), s.tokens.end(), first_token);
  return s;
}

// One step: the plan as (id, tokens, needs_logits), then a generated token
// for each sequence that got logits.
std::vector<std::tuple<uint64_t, int64_t, bool>> Step(Scheduler& s) {
  auto plan = s.Schedule();
  std::vector<std::tuple<uint64_t, int64_t, bool>> out;
  for (const auto& p : plan) out.emplace_back(p.seq->id, p.num_tokens, p.needs_logits);
  s.Commit(plan);
  for (const auto& p : plan) {
    if (p.needs_logits) p.seq->tokens.push_back(999);
  }
  return out;
}

using Plan = std::vector<std::tuple<uint64_t, int64_t, bool>>;

TEST(SchedulerTest, ChunkedPrefillShareStepsWithDecodes) {
  BlockManager blocks(64, 4, false);
  Scheduler s({.max_num_seqs = 4, .max_num_batched_tokens = 8}, blocks);
  auto a = Seq(1, 3), b = Seq(2, 20);
  s.AddWaiting(&a);
  s.AddWaiting(&b);
  EXPECT_EQ(Step(s), (Plan{{1, 3, true}, {2, 5, false}}));   // a prefills; b takes the rest of the budget
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 7, false}}));   // a decodes while b keeps prefilling
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 7, false}}));
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 1, true}}));    // b's last prompt token: logits
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 1, true}}));
  EXPECT_EQ(blocks.used_blocks(), 2 + 6);  // a: 7 tokens, b: 22 tokens, blocks of 4
}

TEST(SchedulerTest, TimeBudgetCutsLateChunksAndNeverDecodes) {
  // 1 ms fixed, 1 ms per row, 0.1 ms per attended key; a 10 ms target.
  BlockManager blocks(256, 4, false);
  Scheduler s({.max_num_seqs = 4, .max_num_batched_tokens = 64, .step_target_seconds = 0.010}, blocks);
  s.SetStepCost({.fixed_seconds = 0.001, .per_row_seconds = 0.001, .per_pair_seconds = 0.0001});
  auto a = Seq(1, 2), b = Seq(2, 60);
  s.AddWaiting(&a);
  EXPECT_EQ(Step(s), (Plan{{1, 2, true}}));
  s.AddWaiting(&b);
  // a decodes (position 2: 1 ms + 0.3 ms); b's first chunk takes the 7.7 ms
  // left: n rows at 0 cost n ms + n(n+1)/2 * 0.1 ms, so 5 rows (6 take 8.1).
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 5, false}}));
  // Later chunks attend to more keys, so they get shorter.
  std::vector<int64_t> chunks;
  while (b.num_computed + 1 < static_cast<int64_t>(b.tokens.size())) {
    const auto plan = s.Schedule();
    ASSERT_EQ(plan.size(), 2u);
    EXPECT_EQ(plan[0].seq, &a);  // the decode always runs, first
    // Within the target, except the one-token minimum once a prompt row
    // alone costs more than the decodes leave.
    if (plan[1].num_tokens > 1) EXPECT_LE(s.PredictSeconds(plan), 0.010 + 1e-12);
    chunks.push_back(plan[1].num_tokens);
    s.Commit(plan);
    a.tokens.push_back(999);
    if (plan[1].needs_logits) b.tokens.push_back(999);
  }
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_TRUE(std::is_sorted(chunks.rbegin(), chunks.rend()));
  EXPECT_GT(chunks.front(), chunks.back());
}

TEST(SchedulerTest, TimeBudgetStillAdvancesPromptsWhenDecodesFillIt) {
  // Decodes alone exceed the target: the prompt advances one token a step
  // instead of starving, and only one prompt does.
  BlockManager blocks(256, 4, false);
  Scheduler s({.max_num_seqs = 4, .max_num_batched_tokens = 64, .step_target_seconds = 0.002}, blocks);
  s.SetStepCost({.fixed_seconds = 0.001, .per_row_seconds = 0.001});
  auto a = Seq(1, 1), b = Seq(2, 1), c = Seq(3, 5), d = Seq(4, 5);
  s.AddWaiting(&a);
  s.AddWaiting(&b);
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}}));  // the first arrival's one token: the target's worth
  s.AddWaiting(&c);
  s.AddWaiting(&d);
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 1, true}}));
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 1, true}, {3, 1, false}}));
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 1, true}, {3, 1, false}}));
}

TEST(SchedulerTest, RespectsSequenceLimitAndArrivalOrder) {
  BlockManager blocks(64, 4, false);
  Scheduler s({.max_num_seqs = 2, .max_num_batched_tokens = 64}, blocks);
  auto a = Seq(1, 2), b = Seq(2, 2), c = Seq(3, 2);
  s.AddWaiting(&a);
  s.AddWaiting(&b);
  s.AddWaiting(&c);
  EXPECT_EQ(Step(s), (Plan{{1, 2, true}, {2, 2, true}}));
  s.Remove(&a);  // a finishes: c is admitted at the next step
  EXPECT_EQ(Step(s), (Plan{{2, 1, true}, {3, 2, true}}));
}

TEST(SchedulerTest, PreemptsTheNewestWhenMemoryRunsOut) {
  BlockManager blocks(4, 2, false);  // 8 token slots
  Scheduler s({.max_num_seqs = 4, .max_num_batched_tokens = 16}, blocks);
  auto a = Seq(1, 3), b = Seq(2, 3);
  s.AddWaiting(&a);
  s.AddWaiting(&b);
  EXPECT_EQ(Step(s), (Plan{{1, 3, true}, {2, 3, true}}));   // 2 + 2 blocks
  EXPECT_EQ(blocks.available_blocks(), 0);
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 1, true}}));   // 4th tokens still fit
  // a needs a third block for its 5th token: b (newest) is preempted.
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}}));
  EXPECT_EQ(s.preemptions(), 1u);
  EXPECT_EQ(b.num_computed, 0);
  EXPECT_EQ(s.waiting().front(), &b);
  s.Remove(&a);
  // b is recomputed with its generated tokens: 5 tokens in one step.
  EXPECT_EQ(Step(s), (Plan{{2, 5, true}}));
}

TEST(SchedulerTest, PromptLogitsBoundChunksByLogitRowsAndLeaveDecodesAlone) {
  BlockManager blocks(64, 4, false);
  // Two sequences a step, four logit rows: a prompt-logprob prefill may use
  // its own row plus the two nobody else can claim.
  Scheduler s({.max_num_seqs = 2, .max_num_batched_tokens = 64, .max_logit_rows = 4}, blocks);
  auto a = Seq(1, 2), b = Seq(2, 9);
  b.all_logits_until = 8;  // rows 0..7 score prompt tokens 1..8; row 8 is sampled
  s.AddWaiting(&a);
  s.AddWaiting(&b);
  auto plan = s.Schedule();
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[1].num_tokens, 3);  // 1 + (4 - 2) rows, though the token budget allows 9
  EXPECT_EQ(LogitRows(*plan[0].seq, plan[0].num_tokens), 1);
  EXPECT_EQ(LogitRows(*plan[1].seq, plan[1].num_tokens), 3);
  s.Commit(plan);
  a.tokens.push_back(999);
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 3, false}}));  // a keeps decoding every step
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 3, true}}));   // rows 6, 7 and the sampled row 8
  b.all_logits_until = 0;  // consumed (the engine clears it)
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {2, 1, true}}));
  // Without spare rows it still advances, one row a step.
  BlockManager blocks2(64, 4, false);
  Scheduler tight({.max_num_seqs = 2, .max_num_batched_tokens = 64, .max_logit_rows = 2}, blocks2);
  auto c = Seq(3, 5);
  c.all_logits_until = 4;
  tight.AddWaiting(&c);
  EXPECT_EQ(Step(tight), (Plan{{3, 1, false}}));
  EXPECT_EQ(Step(tight), (Plan{{3, 1, false}}));
}

TEST(SchedulerTest, APromptLogitsSequenceTakesNoPrefixCacheHits) {
  BlockManager blocks(64, 4, true);
  Scheduler s({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_logit_rows = 64}, blocks);
  auto a = Seq(1, 10);
  s.AddWaiting(&a);
  EXPECT_EQ(Step(s), (Plan{{1, 10, true}}));  // blocks 0 and 1 now cached
  auto hit = Seq(2, 10), scored = Seq(3, 10);
  scored.all_logits_until = 9;
  s.AddWaiting(&hit);
  s.AddWaiting(&scored);
  auto plan = s.Schedule();
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[1].seq->id, 2u);
  EXPECT_EQ(plan[1].num_tokens, 2);  // 8 tokens from the cache
  EXPECT_EQ(plan[2].seq->id, 3u);
  EXPECT_EQ(plan[2].num_tokens, 10);  // the whole prompt, for its logits
  EXPECT_EQ(LogitRows(*plan[2].seq, plan[2].num_tokens), 10);
}

TEST(BlockManagerTest, PrefixCacheSharesFullBlocksAndKeysBySalt) {
  BlockManager blocks(16, 4, true);
  std::vector<int32_t> tokens(10);
  std::iota(tokens.begin(), tokens.end(), 100);
  std::vector<int32_t> t1;
  BlockManager::Chain h1;
  EXPECT_EQ(blocks.MatchPrefix(tokens, 0, t1, h1), 0);
  ASSERT_TRUE(blocks.Grow(t1, 10).ok());
  blocks.CommitFull(tokens, 10, 0, t1, h1);  // blocks 0 and 1 are full
  std::vector<int32_t> t2;
  BlockManager::Chain h2;
  EXPECT_EQ(blocks.MatchPrefix(tokens, 0, t2, h2), 8);
  EXPECT_EQ(t2[0], t1[0]);
  EXPECT_EQ(t2[1], t1[1]);
  std::vector<int32_t> t3;
  BlockManager::Chain h3;
  EXPECT_EQ(blocks.MatchPrefix(tokens, /*salt=*/7, t3, h3), 0);  // another adapter: no sharing
  // Never the whole prompt: its last token's logits must be computed.
  std::vector<int32_t> eight(tokens.begin(), tokens.begin() + 8);
  std::vector<int32_t> t4;
  BlockManager::Chain h4;
  EXPECT_EQ(blocks.MatchPrefix(eight, 0, t4, h4), 4);
  // Freed cached blocks stay matchable until evicted.
  blocks.Free(t1, h1);
  blocks.Free(t2, h2);
  blocks.Free(t4, h4);
  std::vector<int32_t> t5;
  BlockManager::Chain h5;
  EXPECT_EQ(blocks.MatchPrefix(tokens, 0, t5, h5), 8);
  blocks.Free(t5, h5);
  EXPECT_EQ(blocks.available_blocks(), 16);
  std::vector<int32_t> big;
  ASSERT_TRUE(blocks.Grow(big, 64).ok());  // evicts everything
  EXPECT_FALSE(blocks.Grow(big, 65).ok());
  std::vector<int32_t> t6;
  BlockManager::Chain h6;
  blocks.Free(big, h6);
  EXPECT_EQ(blocks.MatchPrefix(tokens, 0, t6, h6), 0);
}

// A gate with scripted residency: `ready` adapters pin, `loading` ones are
// loading, `no_slot` ones wait for a slot, anything else failed.
class FakeGate : public AdapterGate {
 public:
  std::set<uint64_t> ready, loading, no_slot;
  std::map<uint64_t, int> pins;
  Pin TryPin(uint64_t a) override {
    if (ready.count(a)) {
      ++pins[a];
      return Pin::kPinned;
    }
    if (loading.count(a)) return Pin::kLoading;
    if (no_slot.count(a)) return Pin::kWaitForSlot;
    return Pin::kFailed;
  }
  void Unpin(uint64_t a) override { --pins[a]; }
  bool IsPinned(uint64_t a) const override { return pins.count(a) && pins.at(a) > 0; }
  absl::Status Failure(uint64_t) const override { return absl::InvalidArgumentError("bad adapter"); }
  const LoraView* View(uint64_t) const override { return nullptr; }
};

TEST(SchedulerTest, ColdAdaptersWaitWithoutBlockingOthersAndPinsFollowRunning) {
  BlockManager blocks(64, 4, false);
  FakeGate gate;
  gate.ready = {1};
  gate.loading = {2};
  Scheduler s({.max_num_seqs = 8, .max_num_batched_tokens = 64}, blocks, &gate);
  auto cold = Seq(1, 4), base = Seq(2, 4), warm = Seq(3, 4), broken = Seq(4, 4);
  cold.adapter = 2;
  warm.adapter = 1;
  broken.adapter = 9;
  for (auto* q : {&cold, &base, &warm, &broken}) s.AddWaiting(q);
  EXPECT_EQ(Step(s), (Plan{{2, 4, true}, {3, 4, true}}));  // the cold one is passed over, not waited for
  EXPECT_EQ(s.TakeFailed(), std::vector<SchedSequence*>{&broken});
  EXPECT_EQ(gate.pins[1], 1);
  gate.ready.insert(2);  // its load finished
  EXPECT_EQ(Step(s), (Plan{{2, 1, true}, {3, 1, true}, {1, 4, true}}));
  EXPECT_EQ(gate.pins[2], 1);
  s.Remove(&warm);
  s.Remove(&cold);
  EXPECT_EQ(gate.pins[1], 0);
  EXPECT_EQ(gate.pins[2], 0);
}

TEST(SchedulerTest, AnAdapterWaitingForASlotIsNotStarvedByOtherAdapters) {
  BlockManager blocks(64, 4, false);
  FakeGate gate;
  gate.ready = {1, 3};
  gate.no_slot = {2};
  Scheduler s({.max_num_seqs = 8, .max_num_batched_tokens = 64}, blocks, &gate);
  auto running = Seq(1, 4), starved = Seq(2, 4), same = Seq(3, 4), other = Seq(4, 4), base = Seq(5, 4);
  running.adapter = 1;
  starved.adapter = 2;
  same.adapter = 1;
  other.adapter = 3;
  s.AddWaiting(&running);
  Step(s);
  for (auto* q : {&starved, &same, &other, &base}) s.AddWaiting(q);
  // Behind the starved sequence only adapters already pinned (1) and the
  // base model are admitted; adapter 3 would take a slot it needs.
  EXPECT_EQ(Step(s), (Plan{{1, 1, true}, {3, 4, true}, {5, 4, true}}));
  EXPECT_EQ(gate.pins[3], 0);
}

}  // namespace
}  // namespace tessera
