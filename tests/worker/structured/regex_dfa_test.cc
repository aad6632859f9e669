// The regex subset and its byte DFA against Python's re.fullmatch: the
// expected column of kTable was produced by re.fullmatch(pattern, text) for
// each row (Python 3.11), so a row that disagrees is a semantic difference.
#include <string>

#include "gtest/gtest.h"
#include "worker/structured/dfa.h"
#include "worker/structured/regex.h"

namespace tessera::structured {
namespace {

struct Row {
  const char* pattern;
  const char* text;
  bool match;
};

const Row kTable[] = {
#include "tests/worker/structured/regex_table.inc"
};

absl::StatusOr<Dfa> CompileRegex(const std::string& p) {
  auto r = ParseRegex(p);
  if (!r.ok()) return r.status();
  return Dfa::Compile(r->root);
}

TEST(RegexDfa, MatchesPythonFullmatchOnTable) {
  for (const Row& row : kTable) {
    auto d = CompileRegex(row.pattern);
    ASSERT_TRUE(d.ok()) << row.pattern << ": " << d.status();
    EXPECT_EQ(d->Matches(row.text), row.match) << "pattern " << row.pattern << " text '" << row.text << "'";
  }
}

TEST(RegexDfa, OnlyValidUtf8IsAccepted) {
  auto d = CompileRegex(".*");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->Matches("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(d->Matches("\xFF"));
  EXPECT_FALSE(d->Matches("\xC3"));              // truncated
  EXPECT_FALSE(d->Matches("\xC0\xAF"));          // overlong
  EXPECT_FALSE(d->Matches("\xED\xA0\x80"));      // a surrogate
  EXPECT_FALSE(d->Matches("\xF4\x90\x80\x80"));  // above U+10FFFF
}

TEST(RegexDfa, RefusesNonRegularConstructsByName) {
  const std::pair<const char*, const char*> kBad[] = {
      {R"((a)\1)", "backreference"},   {R"((?P<x>a)(?P=x))", "backreference"},
      {"a(?=b)", "lookahead"},         {"a(?!b)", "lookahead"},
      {"(?<=a)b", "lookbehind"},       {"(?<!a)b", "lookbehind"},
      {R"(\bword\b)", "word boundary"}, {"(?i)abc", "inline flag"},
      {"a^b", "anchor"},               {"a$b", "anchor"},
      {"a{1001}", "repeat count"},     {"(ab", "missing ')'"},
      {"ab)", "unmatched ')'"},        {"[ab", "unterminated"},
      {"*a", "nothing to repeat"},     {"a**", "repeated quantifier"},
      {"[z-a]", "out of order"},       {R"(\p{L})", "Unicode property"},
  };
  for (const auto& [pattern, what] : kBad) {
    auto r = ParseRegex(pattern);
    ASSERT_FALSE(r.ok()) << pattern;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << pattern;
    EXPECT_NE(std::string(r.status().message()).find(what), std::string::npos)
        << pattern << ": " << r.status().message();
  }
}

TEST(RegexDfa, EmptyLanguageAndLimits) {
  auto r = ParseRegex("a[^\\x00-\\U0010FFFF]");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Dfa::Compile(r->root).status().code(), absl::StatusCode::kInvalidArgument);
  // (a|b)*a(a|b){12}: the DFA must remember 13 bytes, 2^13 states.
  auto big = ParseRegex("(a|b)*a(a|b){12}");
  ASSERT_TRUE(big.ok());
  DfaLimits small;
  small.max_dfa_states = 1000;
  auto d = Dfa::Compile(big->root, small);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(d.status().message()).find("1000 states"), std::string::npos);
  DfaLimits late;
  late.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(Dfa::Compile(big->root, late).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(RegexDfa, TrimmedStatesCanAlwaysFinish) {
  // After "ab" only 'c' can follow; "abd" dies at once rather than later.
  auto d = CompileRegex("abc|abd{3}x");
  ASSERT_TRUE(d.ok());
  int32_t s = d->Walk(d->start(), "ab");
  ASSERT_NE(s, Dfa::kDead);
  EXPECT_NE(d->Next(s, 'c'), Dfa::kDead);
  EXPECT_NE(d->Next(s, 'd'), Dfa::kDead);
  EXPECT_EQ(d->Next(s, 'e'), Dfa::kDead);
  EXPECT_TRUE(d->final(d->Walk(d->start(), "abc")));
  EXPECT_FALSE(d->accepting(d->Walk(d->start(), "abdd")));
}

TEST(RegexDfa, JsonStringContentsEscapeWhatJsonMust) {
  auto r = ParseRegex(R"(a"\\.)");
  ASSERT_TRUE(r.ok());
  auto d = Dfa::Compile(ForJsonString(r->root));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->Matches(R"(a\"\\x)"));
  EXPECT_TRUE(d->Matches(R"(a\"\\\t)"));
  EXPECT_FALSE(d->Matches("a\"\\x"));
  EXPECT_FALSE(d->Matches("a\\\"\\\\\t"));  // a raw tab is not JSON
}

}  // namespace
}  // namespace tessera::structured
