// Token masks against brute force over the bundled model's vocabulary: for
// a sample of automaton states of several constraints, the tokens the trie
// walk allows are exactly the tokens whose bytes (the tokenizer's own
// TokenBytes) the DFA can walk from that state, plus the end-of-generation
// ids where the state accepts.
#include <random>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "worker/model/model_bundle.h"
#include "worker/structured/constraint.h"
#include "worker/tokenizer/tokenizer.h"

namespace tessera::structured {
namespace {

class TokenMaskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto file = GgufFile::Open(DefaultModelPath());
    ASSERT_TRUE(file.ok()) << file.status();
    auto tok = Tokenizer::FromGguf(**file);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
    std::vector<std::string> pieces(tokenizer_->vocab_size());
    for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
      if (tokenizer_->token_type(id) != TokenType::kControl) pieces[id] = std::string(tokenizer_->TokenBytes(id));
    }
    const auto eog = tokenizer_->end_of_generation_ids();
    index_ = new std::shared_ptr<const TokenIndex>(
        std::make_shared<const TokenIndex>(std::move(pieces), std::vector<int32_t>(eog.begin(), eog.end())));
  }
  static Tokenizer* tokenizer_;
  static std::shared_ptr<const TokenIndex>* index_;
};
Tokenizer* TokenMaskTest::tokenizer_ = nullptr;
std::shared_ptr<const TokenIndex>* TokenMaskTest::index_ = nullptr;

// Independent of the trie: every token, walked byte by byte.
bool BruteForceAllowed(const Tokenizer& tok, const Dfa& dfa, int32_t state, int32_t id) {
  if (tok.IsEndOfGeneration(id)) return dfa.accepting(state);
  if (tok.token_type(id) == TokenType::kControl) return false;
  const std::string_view bytes = tok.TokenBytes(id);
  if (bytes.empty()) return false;
  int32_t s = state;
  for (unsigned char b : bytes) {
    s = dfa.Next(s, b);
    if (s == Dfa::kDead) return false;
  }
  return true;
}

TEST_F(TokenMaskTest, MasksEqualBruteForceOnSampledStates) {
  const std::vector<ConstraintSpec> specs = {
      {ConstraintSpec::Kind::kJsonObject, "", {}},
      {ConstraintSpec::Kind::kJsonSchema,
       R"({"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":120},"tags":{"type":"array","items":{"enum":["a","b c","\u00e9t\u00e9"]}}},"required":["name"]})",
       {}},
      {ConstraintSpec::Kind::kJsonSchema, R"({"type":"string","format":"date-time"})", {}},
      {ConstraintSpec::Kind::kRegex, R"([A-Z][a-z]{2,9}( [A-Z][a-z]{2,9})?|\d{3}-\d{4}|[α-ω]+)", {}},
      {ConstraintSpec::Kind::kChoice, "", {"yes", "no", "it depends", " maybe\n"}},
  };
  ConstraintCache cache(*index_);
  std::mt19937 rng(17);
  int checked = 0;
  for (const ConstraintSpec& spec : specs) {
    auto c = cache.Get(spec);
    ASSERT_TRUE(c.ok()) << c.status();
    const Dfa& dfa = (*c)->dfa();
    // All states when few, else a random sample (always the start).
    std::vector<int32_t> states = {dfa.start()};
    for (int32_t s = 0; s < dfa.num_states(); ++s) {
      if (s != dfa.start() && (dfa.num_states() <= 40 || rng() % dfa.num_states() < 40)) states.push_back(s);
    }
    for (int32_t s : states) {
      const uint64_t* mask = (*c)->Mask(s);
      int allowed = 0;
      for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
        const bool bf = BruteForceAllowed(*tokenizer_, dfa, s, id);
        ASSERT_EQ(TestBit(mask, id), bf) << "state " << s << " token " << id << " '" << tokenizer_->TokenBytes(id) << "'";
        allowed += bf;
        if (bf && !tokenizer_->IsEndOfGeneration(id)) {
          ASSERT_EQ((*c)->Advance(s, id), dfa.Walk(s, tokenizer_->TokenBytes(id)));
        }
      }
      EXPECT_GT(allowed, 0) << "state " << s;
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST_F(TokenMaskTest, ControlTokensNeverAndEosOnlyWhenComplete) {
  ConstraintCache cache(*index_);
  auto c = cache.Get({ConstraintSpec::Kind::kChoice, "", {"ab", "abc"}});
  ASSERT_TRUE(c.ok());
  const Dfa& dfa = (*c)->dfa();
  const int32_t eos = tokenizer_->end_of_generation_ids()[0];
  EXPECT_FALSE(TestBit((*c)->Mask(dfa.start()), eos));
  const int32_t ab = dfa.Walk(dfa.start(), "ab");
  EXPECT_TRUE(TestBit((*c)->Mask(ab), eos));  // "ab" is complete, "abc" may follow
  EXPECT_FALSE(dfa.final(ab));
  EXPECT_TRUE(dfa.final(dfa.Walk(dfa.start(), "abc")));
  for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
    if (tokenizer_->token_type(id) == TokenType::kControl && !tokenizer_->IsEndOfGeneration(id)) {
      EXPECT_FALSE(TestBit((*c)->Mask(ab), id)) << id;
    }
  }
}

TEST_F(TokenMaskTest, CacheSharesCompiledConstraints) {
  ConstraintCache cache(*index_);
  ConstraintSpec spec{ConstraintSpec::Kind::kRegex, "[0-9]+", {}};
  auto a = cache.Get(spec);
  auto b = cache.Get(spec);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ(cache.stats().hits, 1u);
  EXPECT_EQ(cache.stats().misses, 1u);
  spec.text = "(a)\\1";
  EXPECT_EQ(cache.Get(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TokenMaskTest, CompilePrecomputesTheFirstStepsMasks) {
  ConstraintLimits limits;
  limits.precompute_budget = absl::Seconds(30);  // no deadline in the test
  ConstraintCache cache(*index_, limits);
  auto c = cache.Get({ConstraintSpec::Kind::kJsonSchema,
                      R"({"type":"object","properties":{"k":{"enum":["alpha","beta"]},"n":{"type":"integer"}},"required":["k","n"]})",
                      {}});
  ASSERT_TRUE(c.ok()) << c.status();
  const int precomputed = (*c)->cached_masks();
  EXPECT_GT(precomputed, 1);
  // Every state one token from the start already has its mask: walking the
  // first two steps computes nothing new.
  const uint64_t* m = (*c)->Mask((*c)->start());
  for (int32_t id = 0; id < (*index_)->vocab_size(); ++id) {
    if (!TestBit(m, id) || (*index_)->is_eos(id)) continue;
    const int32_t s = (*c)->Advance((*c)->start(), id);
    ASSERT_NE(s, Dfa::kDead);
    (*c)->Mask(s);
  }
  EXPECT_EQ((*c)->cached_masks(), precomputed);
  const ConstraintCache::Stats st = cache.stats();
  EXPECT_EQ(st.masks_computed, static_cast<uint64_t>(precomputed));
  EXPECT_GT(st.mask_seconds, 0);
  EXPECT_GT(st.compile_seconds, 0);
}

TEST_F(TokenMaskTest, ConcurrentRequestsForANewSpecCompileItOnce) {
  ConstraintCache cache(*index_);
  const ConstraintSpec spec{ConstraintSpec::Kind::kRegex, "[a-z]{1,40}@[a-z]{1,20}\\.(com|org)", {}};
  std::vector<std::shared_ptr<const Constraint>> got(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto c = cache.Get(spec);
      if (c.ok()) got[i] = *c;
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& c : got) EXPECT_EQ(c.get(), got[0].get());
  EXPECT_NE(got[0], nullptr);
  EXPECT_EQ(cache.stats().misses, 1u);
  EXPECT_EQ(cache.stats().hits, 7u);
  // A refused spec is shared the same way, and counted as an error.
  ConstraintCache bad(*index_);
  EXPECT_EQ(bad.Get({ConstraintSpec::Kind::kRegex, "(a)\\1", {}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.stats().errors, 1u);
  EXPECT_EQ(bad.stats().misses, 0u);
}

}  // namespace
}  // namespace tessera::structured
