// The regex subset and its byte DFA against Python's re.fullmatch: the
// expected column of kTable was produced by re.fullmatch(pattern, text) for
// each row (Python 3.11), so a row that disagrees is a semantic difference.
#include <string>

#include "common/json/json_file.h"
#include "gtest/gtest.h"
#include "worker/structured/dfa.h"
#include "worker/structured/json_schema.h"
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

// minLength/maxLength beside a pattern: lengths count characters of the
// decoded string, so an escape (\" \n \u0001) and a multi-byte UTF-8
// character each count one, whatever their width as JSON text.
// Properties are produced in the order the schema text declares them (the
// worker parses it ordered), whatever their alphabetical order.
TEST(JsonSchemaOrder, PropertiesInDeclaredOrder) {
  const auto schema = ParseOrderedJsonLinear(
      R"({"type": "object", "properties": {"zeta": {"const": 1}, "alpha": {"const": 2}, "mid": {"const": 3}},
          "required": ["mid", "zeta", "alpha"], "additionalProperties": false})",
      64);
  ASSERT_FALSE(schema.is_discarded());
  auto n = JsonSchemaToRegex(schema);
  ASSERT_TRUE(n.ok()) << n.status();
  auto d = Dfa::Compile(*n);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->Matches(R"({"zeta": 1, "alpha": 2, "mid": 3})"));
  EXPECT_FALSE(d->Matches(R"({"alpha": 2, "mid": 3, "zeta": 1})"));
}

TEST(LengthBound, CountsDecodedCharactersNotBytes) {
  auto r = ParseRegex("[a\"\\\\\\n\\x01é😀]+");
  ASSERT_TRUE(r.ok()) << r.status();
  auto n = WithLengthBound(ForJsonString(r->root), 2, 3, 1000);
  ASSERT_TRUE(n.ok()) << n.status();
  auto d = Dfa::Compile(*n);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->Matches("a"));
  EXPECT_TRUE(d->Matches("aa"));
  EXPECT_TRUE(d->Matches(R"(\"\\)"));           // 2 characters, 4 bytes
  EXPECT_TRUE(d->Matches(R"(\u0001\n\")"));     // 3 characters, 10 bytes
  EXPECT_FALSE(d->Matches(R"(\u0001\n\"a)"));   // 4
  EXPECT_TRUE(d->Matches("\xC3\xA9\xF0\x9F\x98\x80"));  // é😀: 2 characters, 6 bytes
  EXPECT_FALSE(d->Matches("\xC3\xA9"));         // 1
  EXPECT_FALSE(d->Matches("\xC3\xA9\xF0\x9F\x98\x80\xC3\xA9" "a"));
  EXPECT_FALSE(d->Matches("ab"));               // still the pattern's language
}

TEST(LengthBound, OnlyAMinimumSaturatesTheCounter) {
  auto r = ParseRegex("x+");
  ASSERT_TRUE(r.ok());
  auto n = WithLengthBound(ForJsonString(r->root), 4, -1, 1000);
  ASSERT_TRUE(n.ok()) << n.status();
  auto d = Dfa::Compile(*n);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->Matches("xxx"));
  EXPECT_TRUE(d->Matches("xxxx"));
  EXPECT_TRUE(d->Matches(std::string(500, 'x')));
  EXPECT_LE(d->num_states(), 6);
}

TEST(LengthBound, EmptyIntersectionAndSizeAreRefused) {
  auto r = ParseRegex("[a-z]{6}");
  ASSERT_TRUE(r.ok());
  auto empty = WithLengthBound(ForJsonString(r->root), 0, 4, 1000);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(empty.status().message()).find("no string"), std::string::npos) << empty.status();
  auto big = ParseRegex("[a-z]{1,500}[0-9]{1,500}");
  ASSERT_TRUE(big.ok());
  auto large = WithLengthBound(ForJsonString(big->root), 0, 1000, 5000);
  EXPECT_EQ(large.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(large.status().message()).find("larger than 5000 states"), std::string::npos)
      << large.status();
  auto late = WithLengthBound(ForJsonString(r->root), 0, 10, 1000, absl::Now() - absl::Seconds(1));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LengthBound, JsonSchemaPatternAndFormatWithLengths) {
  auto compile = [](const char* schema) {
    auto n = JsonSchemaToRegex(nlohmann::ordered_json::parse(schema));
    return n.ok() ? Dfa::Compile(*n) : absl::StatusOr<Dfa>(n.status());
  };
  auto d = compile(R"({"type": "string", "pattern": "^[a-z\\\\]+$", "minLength": 2, "maxLength": 3})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->Matches(R"("ab")"));
  EXPECT_TRUE(d->Matches(R"("a\\\\")"));  // a, \, \ : 3 characters
  EXPECT_FALSE(d->Matches(R"("a\\\\b")"));
  EXPECT_FALSE(d->Matches(R"("a")"));
  auto f = compile(R"({"type": "string", "format": "date", "maxLength": 9})");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);  // a date is 10 characters
  EXPECT_NE(std::string(f.status().message()).find("'format' with 'minLength'/'maxLength'"), std::string::npos)
      << f.status();
  EXPECT_TRUE(compile(R"({"type": "string", "format": "date", "maxLength": 10})").ok());
  auto both = compile(R"({"type": "string", "format": "date", "pattern": "^2"})");
  EXPECT_NE(std::string(both.status().message()).find("'format' and 'pattern'"), std::string::npos);
}

}  // namespace
}  // namespace tessera::structured
