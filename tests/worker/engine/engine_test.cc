// The batching engine's prompt logprobs (OpenAI's echo with logprobs),
// against the model fed one token at a time as single-sequence generation
// feeds it: chunked prefill, prefix-cache hits, a batch shared with other
// sequences and preemption must leave every prompt row's logprob where it
// belongs.
#include "worker/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "worker/model/model_bundle.h"

namespace tessera {
namespace {

// Batched prefill and one-token feeding sum in different orders; the
// synthetic model's logits are O(1), so 1e-3 nats is far above that noise
// and far below what scoring the wrong row or token gives (O(1)).
constexpr float kTol = 1e-3f;

// Records what a job hears, in order; the test waits for OnFinished.
class Recorder final : public JobSink {
 public:
  void OnStarted(uint64_t, uint64_t) override { log.push_back("started"); }
  void OnPromptLogprobs(std::vector<SampledToken> p) override {
    log.push_back("prompt");
    prompt = std::move(p);
  }
  bool OnEvent(const StreamEvent& e) override {
    if (e.token != nullptr) log.push_back("token");
    return true;
  }
  void OnFinished(const absl::StatusOr<GenerateResult>& r) override {
    log.push_back("finished");
    result = r;
    done.Notify();
  }

  std::vector<std::string> log;
  std::vector<SampledToken> prompt;
  absl::StatusOr<GenerateResult> result = absl::UnknownError("not finished");
  absl::Notification done;
};

std::vector<int32_t> Prompt(int n, int salt = 0) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = 3 + (i * 37 + salt * 101) % 1000;
  return p;
}

std::vector<double> LogSoftmax(const std::vector<float>& row) {
  const double m = *std::max_element(row.begin(), row.end());
  double z = 0;
  for (float x : row) z += std::exp(x - m);
  std::vector<double> out(row.size());
  for (size_t i = 0; i < row.size(); ++i) out[i] = row[i] - m - std::log(z);
  return out;
}

class EnginePromptLogprobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = LoadSyntheticModelBundle("tiny", "q8_0", {.max_batch_tokens = 64, .max_logit_rows = 16});
    ASSERT_TRUE(b.ok()) << b.status();
    bundle_ = std::move(*b);
  }

  // Log-softmax of the logits after each prefix prompt[0, j + 1), the
  // prompt fed one token at a time. Runs before the engine exists (the
  // model is not re-entrant).
  std::vector<std::vector<double>> Reference(const std::vector<int32_t>& prompt) {
    const LlamaConfig& c = bundle_->model->config();
    auto cache = KvCache::Create(*bundle_->backend, c.n_layers, c.kv_dim(), KvCacheOptions{.num_blocks = 64});
    EXPECT_TRUE(cache.ok());
    auto rows = SequenceLogits(*bundle_->model, **cache, prompt, 1);
    EXPECT_TRUE(rows.ok()) << rows.status();
    std::vector<std::vector<double>> out;
    for (const auto& r : *rows) out.push_back(LogSoftmax(r));
    return out;
  }

  void StartEngine(SchedulerOptions s, int64_t kv_bytes = 0) {
    EngineOptions o;
    o.scheduler = s;
    o.block_size = 4;
    o.kv_cache_bytes = kv_bytes;
    auto e = Engine::Create(*bundle_, o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }

  std::shared_ptr<Recorder> Submit(std::vector<int32_t> prompt, int max_tokens, std::optional<int> prompt_logprobs) {
    auto job = std::make_shared<EngineJob>();
    job->request.prompt = std::move(prompt);
    job->request.max_tokens = max_tokens;
    job->request.sampling.temperature = 0;
    job->request.ignore_eos = true;
    job->request.prompt_logprobs = prompt_logprobs;
    auto sink = std::make_shared<Recorder>();
    job->sink = sink;
    EXPECT_TRUE(engine_->Submit(job).ok());
    return sink;
  }

  static void Wait(Recorder& r) {
    ASSERT_TRUE(r.done.WaitForNotificationWithTimeout(absl::Seconds(120)));
    ASSERT_TRUE(r.result.ok()) << r.result.status();
  }

  // Every entry p >= 1 is prompt[p] scored by row p - 1, with the `top` best
  // of that row, best first.
  static void ExpectScored(const std::vector<SampledToken>& got, const std::vector<int32_t>& prompt,
                           const std::vector<std::vector<double>>& ref, int top) {
    ASSERT_EQ(got.size(), prompt.size());
    EXPECT_EQ(got[0].id, prompt[0]);
    EXPECT_TRUE(got[0].top.empty());
    for (size_t p = 1; p < prompt.size(); ++p) {
      const std::vector<double>& row = ref[p - 1];
      EXPECT_EQ(got[p].id, prompt[p]);
      EXPECT_NEAR(got[p].logprob, row[prompt[p]], kTol) << "prompt token " << p;
      std::vector<int32_t> order(row.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
      ASSERT_EQ(got[p].top.size(), static_cast<size_t>(top)) << p;
      for (int i = 0; i < top; ++i) {
        EXPECT_NEAR(got[p].top[i].second, row[order[i]], kTol) << p << " alternative " << i;
        // The same token, unless two are within the noise of each other.
        if (i + 1 < static_cast<int>(order.size()) && row[order[i]] - row[order[i + 1]] > 2 * kTol &&
            (i == 0 || row[order[i - 1]] - row[order[i]] > 2 * kTol)) {
          EXPECT_EQ(got[p].top[i].first, order[i]) << p << " alternative " << i;
        }
      }
    }
  }

  std::unique_ptr<ModelBundle> bundle_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EnginePromptLogprobsTest, ChunkedPrefillScoresEveryPromptTokenInOrderDespiteCachedBlocks) {
  const std::vector<int32_t> prompt = Prompt(41);
  const auto ref = Reference(prompt);
  // Two sequences a step and two spare logit rows: the scored prompt runs in
  // chunks of 3 rows, 14 steps, with blocks of 4 tokens.
  StartEngine({.max_num_seqs = 2, .max_num_batched_tokens = 64, .max_logit_rows = 4});
  auto plain = Submit(prompt, 4, std::nullopt);
  Wait(*plain);
  EXPECT_EQ(plain->log, (std::vector<std::string>{"started", "token", "token", "token", "token", "finished"}));
  const uint64_t hits = engine_->stats().prefix_hit_tokens;
  const uint64_t steps = engine_->stats().steps;

  // The prompt's blocks are cached now; a scored request must not use them.
  auto scored = Submit(prompt, 4, 3);
  Wait(*scored);
  EXPECT_EQ(scored->log,
            (std::vector<std::string>{"started", "prompt", "token", "token", "token", "token", "finished"}));
  ExpectScored(scored->prompt, prompt, ref, 3);
  EXPECT_EQ(engine_->stats().prefix_hit_tokens, hits);
  EXPECT_EQ(engine_->stats().steps - steps, 14u + 3u);  // ceil(41 / 3) prefill steps, 3 more tokens
  // Its generation is the plain request's: the sampled row is the last one.
  EXPECT_EQ(scored->result->tokens, plain->result->tokens);

  // A plain request after it still takes the cache (the scored request's
  // blocks are ordinary KV blocks).
  auto again = Submit(prompt, 1, std::nullopt);
  Wait(*again);
  // The engine publishes its stats after the step that finished the job.
  for (int i = 0; i < 500 && engine_->stats().prefix_hit_tokens == hits; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(engine_->stats().prefix_hit_tokens, hits + 40);  // all ten full blocks
  EXPECT_TRUE(again->prompt.empty());
}

TEST_F(EnginePromptLogprobsTest, SharesStepsWithOtherSequences) {
  const std::vector<int32_t> a = Prompt(30, 1), b = Prompt(23, 2);
  const auto ref_a = Reference(a), ref_b = Reference(b);
  StartEngine({.max_num_seqs = 4, .max_num_batched_tokens = 16, .max_logit_rows = 9});
  // A long decode, two scored prompts and a plain prefill compete for the
  // token budget and the five spare logit rows.
  auto decode = Submit(Prompt(5, 3), 40, std::nullopt);
  auto sa = Submit(a, 2, 5);
  auto plain = Submit(Prompt(20, 4), 2, std::nullopt);
  auto sb = Submit(b, 0, 2);
  for (auto* r : {decode.get(), sa.get(), plain.get(), sb.get()}) Wait(*r);
  ExpectScored(sa->prompt, a, ref_a, 5);
  ExpectScored(sb->prompt, b, ref_b, 2);
  EXPECT_TRUE(decode->prompt.empty());
  EXPECT_TRUE(plain->prompt.empty());
  EXPECT_EQ(decode->result->tokens.size(), 40u);
}

TEST_F(EnginePromptLogprobsTest, MaxTokensZeroEndsAfterThePrompt) {
  const std::vector<int32_t> prompt = Prompt(9);
  const auto ref = Reference(prompt);
  StartEngine({.max_num_seqs = 2, .max_num_batched_tokens = 64});
  auto scored = Submit(prompt, 0, 0);
  Wait(*scored);
  EXPECT_EQ(scored->log, (std::vector<std::string>{"started", "prompt", "finished"}));
  EXPECT_TRUE(scored->result->tokens.empty());
  EXPECT_EQ(scored->result->finish, FinishReason::kLength);
  ExpectScored(scored->prompt, prompt, ref, 0);
  // A one-token prompt has nothing to score: its one entry, no logprob.
  auto single = Submit({42}, 1, 2);
  Wait(*single);
  ASSERT_EQ(single->prompt.size(), 1u);
  EXPECT_EQ(single->prompt[0].id, 42);
  EXPECT_EQ(single->result->tokens.size(), 1u);
}

TEST_F(EnginePromptLogprobsTest, PreemptedMidPromptRecomputesWithoutCachedBlocks) {
  const std::vector<int32_t> prompt = Prompt(24, 5);
  const auto ref = Reference(prompt);
  const LlamaConfig& c = bundle_->model->config();
  // Nine blocks of four tokens. The decode (8 + 24 tokens) advances one
  // token a step while the scored prompt advances three (1 + 2 spare logit
  // rows); after seven steps of both, 15 + 18 tokens fill all nine blocks,
  // and the scored prompt's next chunk preempts it with 18 of its 24 prompt
  // tokens done (and its full blocks in the prefix cache). It is then
  // readmitted and preempted again as the decode grows, and finishes alone.
  StartEngine({.max_num_seqs = 2, .max_num_batched_tokens = 8, .max_logit_rows = 4},
              9 * KvCache::BytesPerBlock(c.n_layers, c.kv_dim(), 4));
  auto decode = Submit(Prompt(8, 6), 24, std::nullopt);
  auto scored = Submit(prompt, 2, 1);
  Wait(*decode);
  Wait(*scored);
  EXPECT_GT(engine_->stats().preemptions, 0u);
  ExpectScored(scored->prompt, prompt, ref, 1);
  EXPECT_EQ(std::count(scored->log.begin(), scored->log.end(), "prompt"), 1);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

TEST(StepCostTest, BudgetIsTheRowsThatFitTheTargetWithinBounds) {
  const StepCost cpu{.fixed_seconds = 0.002, .per_row_seconds = 0.003};
  EXPECT_EQ(cpu.RowsWithin(0.150), 49);  // (150 - 2) / 3
  EXPECT_EQ(cpu.RowsWithin(0.001), 0);
  EXPECT_EQ(BudgetForTarget(cpu, 0.150, 48, 512), 49);
  EXPECT_EQ(BudgetForTarget(cpu, 0.010, 48, 512), 48);    // a full decode batch + 16 always fits
  EXPECT_EQ(BudgetForTarget(cpu, 60.0, 48, 512), 512);    // the model's scratch caps it
  const StepCost flat{.fixed_seconds = 0.010, .per_row_seconds = 0};  // no per-row cost measured
  EXPECT_EQ(BudgetForTarget(flat, 0.020, 48, 2048), 2048);
  EXPECT_EQ(BudgetForTarget(cpu, 0.150, 600, 512), 512);  // bounds that cross: the scratch wins
}

TEST(StepCostTest, LateChunksOfALongPromptAreShorter) {
  // 1 ms per row, 2 us per attended key: a row at position 2,000 costs 5 ms.
  const StepCost cost{.fixed_seconds = 0.010, .per_row_seconds = 0.001, .per_pair_seconds = 2e-6};
  EXPECT_EQ(AttendedPairs(0, 4), 1 + 2 + 3 + 4);
  EXPECT_EQ(AttendedPairs(10, 2), 11 + 12);
  EXPECT_DOUBLE_EQ(cost.ChunkSeconds(10, 2), 0.002 + 23 * 2e-6);
  for (const int64_t position : {0, 100, 1000, 2000, 30000}) {
    for (const double seconds : {0.0005, 0.001, 0.05, 0.14, 1.0}) {
      const int64_t n = cost.ChunkWithin(position, seconds);
      // The longest chunk that fits: n fits, n + 1 does not.
      EXPECT_LE(cost.ChunkSeconds(position, n), seconds) << position << " " << seconds;
      EXPECT_GT(cost.ChunkSeconds(position, n + 1), seconds) << position << " " << seconds;
    }
  }
  EXPECT_EQ(cost.ChunkWithin(0, 0.140), 124);   // 124 ms of rows + 15.5 ms of attention
  EXPECT_EQ(cost.ChunkWithin(2000, 0.140), 27);
  EXPECT_EQ(cost.RowsWithin(0.150), 124);
  const StepCost rows_only{.fixed_seconds = 0.002, .per_row_seconds = 0.003};
  EXPECT_EQ(rows_only.ChunkWithin(5000, 0.031), 10);  // attention not measured: position does not matter
}

TEST(StepCostTest, TrackerFollowsTheMachinesSpeedWithinBounds) {
  const StepCost measured{.fixed_seconds = 0.010, .per_row_seconds = 0.001, .per_pair_seconds = 1e-6};
  StepCostTracker t(measured);
  // The machine runs 3x slower than measured: the factor converges to 3.
  for (int i = 0; i < 200; ++i) {
    const double predicted = t.current().Seconds(40, 5000);
    t.Observe(predicted, 3 * measured.Seconds(40, 5000));
  }
  EXPECT_NEAR(t.factor(), 3.0, 0.01);
  EXPECT_NEAR(t.current().per_row_seconds, 0.003, 1e-5);
  // Noise-sized steps are ignored; a nonsense measurement is bounded.
  StepCostTracker u(measured);
  u.Observe(1e-4, 1.0);
  EXPECT_EQ(u.factor(), 1.0);
  for (int i = 0; i < 1000; ++i) u.Observe(u.current().Seconds(10), 1e6);
  EXPECT_NEAR(u.factor(), 16.0, 1e-9);
}

TEST(StepCostTest, MeasuredModelChargesAttention) {
  // The synthetic model with a context long enough for three chunks: every
  // term is non-negative and a long-context chunk is predicted dearer.
  auto b = LoadSyntheticModelBundle("tiny", "q8_0", {.max_batch_tokens = 128, .max_logit_rows = 16});
  ASSERT_TRUE(b.ok()) << b.status();
  const LlamaConfig& c = (*b)->model->config();
  auto cache = KvCache::Create(*(*b)->backend, c.n_layers, c.kv_dim(), {.block_size = 16, .num_blocks = 64});
  ASSERT_TRUE(cache.ok()) << cache.status();
  auto cost = MeasureStepCost(*(*b)->model, **cache, 16, 8, 64);
  ASSERT_TRUE(cost.ok()) << cost.status();
  EXPECT_GE(cost->fixed_seconds, 0);
  EXPECT_GE(cost->per_row_seconds, 0);
  EXPECT_GE(cost->per_pair_seconds, 0);
  EXPECT_GE(cost->ChunkSeconds(1000, 8), cost->ChunkSeconds(0, 8));
  // Bad shapes are refused, not measured.
  EXPECT_FALSE(MeasureStepCost(*(*b)->model, **cache, 16, 64, 64).ok());
  EXPECT_FALSE(MeasureStepCost(*(*b)->model, **cache, 16, 8, 4096).ok());
}

TEST(StepCostTest, AnAutomaticBudgetIsMeasuredAndPlacedWithinTheModelsBatch) {
  auto b = LoadSyntheticModelBundle("tiny", "q8_0", {.max_batch_tokens = 128, .max_logit_rows = 16});
  ASSERT_TRUE(b.ok()) << b.status();
  EngineOptions o;
  o.scheduler = {.max_num_seqs = 8, .max_num_batched_tokens = 0};
  auto e = Engine::Create(**b, o);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE((*e)->step_cost().has_value());
  EXPECT_GE((*e)->step_cost()->per_row_seconds, 0);
  EXPECT_GE((*e)->options().step_target_seconds, 0.020);
  const int budget = (*e)->options().scheduler.max_num_batched_tokens;
  EXPECT_GE(budget, 8 + 16);
  EXPECT_LE(budget, 128);
  // An explicit budget is kept and nothing is measured.
  o.scheduler.max_num_batched_tokens = 32;
  auto fixed = Engine::Create(**b, o);
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_FALSE((*fixed)->step_cost().has_value());
  EXPECT_EQ((*fixed)->options().scheduler.max_num_batched_tokens, 32);
}

}  // namespace
}  // namespace tessera
