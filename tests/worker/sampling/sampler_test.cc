#include "worker/sampling/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "worker/sampling/stop_matcher.h"

namespace tessera {
namespace {

std::vector<float> Logits() { return {1.f, 3.f, 2.f, 0.5f, 2.9f, -1.f}; }

SampledToken SampleOnce(const SamplingParams& p, std::vector<float> logits = Logits()) {
  Sampler s(p, static_cast<int>(logits.size()), {});
  return s.Sample(logits.data());
}

TEST(SamplerTest, GreedyPicksArgmax) {
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(SampleOnce(p).id, 1);
}

TEST(SamplerTest, LogitBiasCanForceAToken) {
  SamplingParams p;
  p.temperature = 0;
  p.logit_bias = {{5, 100.f}};
  EXPECT_EQ(SampleOnce(p).id, 5);
  p.logit_bias = {{1, -100.f}};
  EXPECT_EQ(SampleOnce(p).id, 4);
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedsDiffer) {
  SamplingParams p;
  p.temperature = 1.5f;
  std::vector<int> a, b, c;
  for (auto* out : {&a, &b}) {
    p.seed = 42;
    Sampler s(p, 6, {});
    for (int i = 0; i < 50; ++i) { auto l = Logits(); out->push_back(s.Sample(l.data()).id); }
  }
  p.seed = 43;
  Sampler s(p, 6, {});
  for (int i = 0; i < 50; ++i) { auto l = Logits(); c.push_back(s.Sample(l.data()).id); }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 1;
  p.top_k = 1;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(SampleOnce(p).id, 1);
  p.top_k = 0;
  p.top_p = 0.01f;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(SampleOnce(p).id, 1);
}

TEST(SamplerTest, MinPAndTopKRestrictTheSupport) {
  SamplingParams p;
  p.temperature = 1.f;
  p.top_k = 3;
  std::map<int, int> seen;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    p.seed = seed;
    ++seen[SampleOnce(p).id];
  }
  for (auto [id, n] : seen) EXPECT_TRUE(id == 1 || id == 4 || id == 2) << id;
  p.top_k = 0;
  p.min_p = 0.5f;  // keeps tokens with prob >= half the best: ids 1 and 4
  seen.clear();
  for (uint64_t seed = 0; seed < 300; ++seed) {
    p.seed = seed;
    ++seen[SampleOnce(p).id];
  }
  EXPECT_EQ(seen.size(), 2u);
}

TEST(SamplerTest, PenaltiesDiscourageRepeats) {
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 2.f;
  Sampler s(p, 6, {});
  auto l = Logits();
  EXPECT_EQ(s.Sample(l.data()).id, 1);
  s.Accept(1);
  l = Logits();
  EXPECT_EQ(s.Sample(l.data()).id, 4);  // 3 - 2 < 2.9
  SamplingParams r;
  r.temperature = 0;
  r.repetition_penalty = 2.f;
  std::vector<int32_t> prompt = {1};
  Sampler s2(r, 6, prompt);
  l = Logits();
  EXPECT_EQ(s2.Sample(l.data()).id, 4);  // 3 / 2 < 2.9
}

TEST(SamplerTest, LogprobsAreFromTheModelDistribution) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = true;
  p.top_logprobs = 2;
  auto t = SampleOnce(p);
  double z = 0;
  for (float v : Logits()) z += std::exp(v);
  EXPECT_NEAR(t.logprob, 3.f - std::log(z), 1e-5);
  ASSERT_EQ(t.top.size(), 2u);
  EXPECT_EQ(t.top[0].first, 1);
  EXPECT_EQ(t.top[1].first, 4);
  EXPECT_NEAR(t.top[1].second, 2.9f - std::log(z), 1e-5);
}

TEST(SamplerTest, ScoreTokenReportsWhatSampleReports) {
  // Prompt logprobs and generated ones must agree for the same row.
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = true;
  p.top_logprobs = 3;
  const SampledToken sampled = SampleOnce(p);
  const std::vector<float> logits = Logits();
  const SampledToken scored = ScoreToken(logits, sampled.id, 3);
  EXPECT_EQ(scored.id, sampled.id);
  EXPECT_EQ(scored.logprob, sampled.logprob);
  EXPECT_EQ(scored.top, sampled.top);
  // Any token, not only the best: here the least likely.
  double z = 0;
  for (float v : logits) z += std::exp(v);
  EXPECT_NEAR(ScoreToken(logits, 5, 0).logprob, -1.f - std::log(z), 1e-5);
  EXPECT_TRUE(ScoreToken(logits, 5, 0).top.empty());
  EXPECT_EQ(ScoreToken(logits, 5, 50).top.size(), logits.size());  // clamped to the vocabulary
}

TEST(SamplerTest, ScoreTokenBreaksTiesByLowerId) {
  const std::vector<float> tied = {0.f, 2.f, 1.f, 2.f, 2.f};
  const SampledToken t = ScoreToken(tied, 0, 2);
  ASSERT_EQ(t.top.size(), 2u);
  EXPECT_EQ(t.top[0].first, 1);
  EXPECT_EQ(t.top[1].first, 3);
  SamplingParams p;
  p.temperature = 0;
  p.top_logprobs = 2;
  EXPECT_EQ(SampleOnce(p, tied).top, t.top);
}

TEST(SamplerTest, ValidateNamesFieldAndValue) {
  SamplingParams p;
  p.top_p = 1.7f;
  auto s = p.Validate(10);
  EXPECT_EQ(s.message(), "top_p must be in (0, 1]; got 1.7");
  p = {};
  p.temperature = NAN;
  EXPECT_FALSE(p.Validate(10).ok());
  p = {};
  p.logit_bias = {{10, 1.f}};
  EXPECT_NE(p.Validate(10).message().find("outside the vocabulary"), std::string::npos);
  p = {};
  p.top_logprobs = 21;
  EXPECT_FALSE(p.Validate(10).ok());
}

TEST(StopMatcherTest, HoldsBackPartialStopsAndCutsAtTheStop) {
  StopMatcher m({"END", "\n\n"});
  auto r = m.Push("hello E");
  EXPECT_EQ(r.emit, "hello ");
  EXPECT_FALSE(r.stopped);
  r = m.Push("N");
  EXPECT_EQ(r.emit, "");
  r = m.Push("D and more");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.emit, "");
  StopMatcher m2({"END"});
  r = m2.Push("EN");
  EXPECT_EQ(r.emit, "");
  r = m2.Push("X");
  EXPECT_EQ(r.emit, "ENX");
  EXPECT_EQ(m2.Flush(), "");
  StopMatcher m3({"\n\n"});
  r = m3.Push("a\n");
  EXPECT_EQ(r.emit, "a");
  EXPECT_EQ(m3.Flush(), "\n");
}

TEST(StopMatcherTest, NeverSplitsUtf8) {
  StopMatcher m({"zz"});
  auto r = m.Push("\xE2\x82");  // first two bytes of the euro sign
  EXPECT_EQ(r.emit, "");
  r = m.Push("\xAC!");
  EXPECT_EQ(r.emit, "\xE2\x82\xAC!");
}

}  // namespace
}  // namespace tessera
