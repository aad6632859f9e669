#include <gtest/gtest.h>

#include "worker/tokenizer/pre_tokenizer.h"
#include "worker/tokenizer/unicode.h"

namespace tessera {
namespace {

std::vector<std::string> Split(PreTokenizer k, std::string_view s) {
  std::vector<std::string> out;
  for (auto p : PreTokenize(k, s)) out.emplace_back(p);
  return out;
}

TEST(PreTokenizerTest, Gpt2Rules) {
  EXPECT_EQ(Split(PreTokenizer::kGpt2, "Hello world's  end!!\n"),
            (std::vector<std::string>{"Hello", " world", "'s", " ", " end", "!!", "\n"}));
  EXPECT_EQ(Split(PreTokenizer::kSmolLm, "ab 123"), (std::vector<std::string>{"ab", " ", "1", "2", "3"}));
}

TEST(PreTokenizerTest, Llama3Rules) {
  EXPECT_EQ(Split(PreTokenizer::kLlama3, "I'M 12345 ok\n\n  x"),
            (std::vector<std::string>{"I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"}));
  EXPECT_EQ(Split(PreTokenizer::kQwen2, "a12"), (std::vector<std::string>{"a", "1", "2"}));
}

TEST(PreTokenizerTest, PiecesConcatenateBackForAnyBytes) {
  const std::string nasty = std::string("a\xff\xfe b\xc3(\xe2\x82 \xf0\x9f\x98\x80") + std::string(1, '\0') + "z";
  for (auto k : {PreTokenizer::kGpt2, PreTokenizer::kSmolLm, PreTokenizer::kLlama3, PreTokenizer::kQwen2}) {
    std::string joined;
    for (auto p : PreTokenize(k, nasty)) joined += p;
    EXPECT_EQ(joined, nasty);
  }
}

TEST(UnicodeTest, CompletePrefixHoldsBackOnlyIncompleteCharacters) {
  EXPECT_EQ(unicode::CompletePrefixLength("ab\xE2\x82"), 2u);
  EXPECT_EQ(unicode::CompletePrefixLength("ab\xE2\x82\xAC"), 5u);
  EXPECT_EQ(unicode::CompletePrefixLength("ab\xFF"), 3u);
  EXPECT_EQ(unicode::CompletePrefixLength("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(unicode::ValidSequenceLength("\xC0\xAF", 0), 0);  // overlong
  EXPECT_EQ(unicode::ValidSequenceLength("\xED\xA0\x80", 0), 0);  // surrogate
}

TEST(PreTokenizerTest, UnknownNameIsAnError) {
  auto p = PreTokenizerFromName("tekken");
  EXPECT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("'tekken'"), std::string::npos);
}

}  // namespace
}  // namespace tessera
