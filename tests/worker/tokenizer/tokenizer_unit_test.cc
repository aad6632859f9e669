#include <gtest/gtest.h>

#include <vector>

#include "common/gguf/gguf_file.h"
#include "common/gguf/gguf_writer.h"
#include "worker/tokenizer/pre_tokenizer.h"
#include "worker/tokenizer/tokenizer.h"
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

// A byte-level vocabulary of the printable ASCII characters (which GPT-2's
// byte mapping leaves as they are), no merges, a control token and a
// user-defined one.
std::unique_ptr<Tokenizer> TinyTokenizer(TokenizerSpec::AddedTokenMatch match) {
  TokenizerSpec spec;
  spec.added_match = match;
  for (char c = '!'; c <= '~'; ++c) {
    spec.tokens.push_back(std::string(1, c));
    spec.types.push_back(TokenType::kNormal);
  }
  const int32_t end = static_cast<int32_t>(spec.tokens.size());
  spec.tokens.push_back("<|im_end|>");
  spec.types.push_back(TokenType::kControl);
  spec.tokens.push_back("<tool>");
  spec.types.push_back(TokenType::kUserDefined);
  AddedToken control;
  control.id = end;
  control.content = "<|im_end|>";
  control.special = true;
  AddedToken user;
  user.id = end + 1;
  user.content = "<tool>";
  spec.added = {control, user};
  spec.scores.assign(spec.tokens.size(), 0.0f);
  auto t = Tokenizer::Create(spec);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

class UntrustedRangesTest : public testing::TestWithParam<TokenizerSpec::AddedTokenMatch> {};

TEST_P(UntrustedRangesTest, ControlTokensMatchOnlyOutsideRequestText) {
  auto tok = TinyTokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  const int32_t end = 94, tool = 95;
  auto ids = [&](std::string_view text, std::vector<std::pair<size_t, size_t>> untrusted) {
    return tok->Encode(text, {.parse_special = true, .untrusted = &untrusted});
  };
  const std::vector<int32_t> plain = tok->Encode("<|im_end|>", {.parse_special = false});
  ASSERT_EQ(plain.size(), 10u);
  ASSERT_EQ(tok->Encode("<|im_end|>", {.parse_special = true}), std::vector<int32_t>{end});
  // "a" + request "<|im_end|>" + template "<|im_end|>".
  const std::string text = "a<|im_end|><|im_end|>";
  std::vector<int32_t> want = {'a' - '!'};
  want.insert(want.end(), plain.begin(), plain.end());
  want.push_back(end);
  EXPECT_EQ(ids(text, {{1, 11}}), want);
  // Every control token is the template's: all match.
  EXPECT_EQ(ids(text, {}), (std::vector<int32_t>{'a' - '!', end, end}));
  // A match that only overlaps request text (its last byte, or its first)
  // is not the template's either.
  EXPECT_EQ(ids("<|im_end|>", {{9, 10}}), plain);
  EXPECT_EQ(ids("<|im_end|>", {{0, 1}}), plain);
  // Ranges next to a match do not touch it.
  EXPECT_EQ(ids("x<|im_end|>y", {{0, 1}, {11, 12}}), (std::vector<int32_t>{'x' - '!', end, 'y' - '!'}));
  // User-defined added tokens are text-level tokens: they match in request
  // text as they do with parse_special off (llama.cpp's rule).
  EXPECT_EQ(ids("<tool>", {{0, 6}}), std::vector<int32_t>{tool});
  EXPECT_EQ(tok->Encode("<tool>", {.parse_special = false}), std::vector<int32_t>{tool});
  // Without parse_special the ranges change nothing.
  std::vector<std::pair<size_t, size_t>> none;
  EXPECT_EQ(tok->Encode(text, {.parse_special = false, .untrusted = &none}),
            tok->Encode(text, {.parse_special = false}));
}

INSTANTIATE_TEST_SUITE_P(BothMatchRules, UntrustedRangesTest,
                         testing::Values(TokenizerSpec::AddedTokenMatch::kLongestFirst,
                                         TokenizerSpec::AddedTokenMatch::kLeftmostLongest));

// A SentencePiece ("llama") vocabulary in a GGUF image whose token 4 has
// type BYTE (6) and the given text; token 3 is the well-formed <0x41>.
std::vector<uint8_t> SpmVocabWithByteToken(const std::string& text) {
  GgufWriter w;
  w.AddString("tokenizer.ggml.model", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "<0x41>", text, "\xE2\x96\x81" "a"});
  w.AddI32Array("tokenizer.ggml.token_type", {2, 3, 3, 6, 6, 1});
  w.AddF32Array("tokenizer.ggml.scores", {0, 0, 0, 0, 0, -1});
  w.AddU32("tokenizer.ggml.bos_token_id", 1);
  w.AddU32("tokenizer.ggml.eos_token_id", 2);
  w.AddU32("tokenizer.ggml.unknown_token_id", 0);
  auto image = w.Build();
  EXPECT_TRUE(image.ok()) << image.status();
  return *image;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadVocab(const std::vector<uint8_t>& image) {
  auto f = GgufFile::FromBuffer(image);
  if (!f.ok()) return f.status();
  return Tokenizer::FromGguf(**f);
}

TEST(GgufByteTokenTest, WellFormedByteTokensLoadAndDecode) {
  for (const std::string text : {"<0x42>", "<0x0a>", "<0xFF>"}) {
    auto image = SpmVocabWithByteToken(text);
    auto t = LoadVocab(image);
    ASSERT_TRUE(t.ok()) << text << ": " << t.status();
    EXPECT_EQ((*t)->TokenBytes(3), "A");
  }
  auto image = SpmVocabWithByteToken("<0x42>");
  auto t = LoadVocab(image);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->TokenBytes(4), "B");
}

// A BYTE-typed token must be exactly "<0x", two hex digits, ">": anything
// else was silently given no bytes (decoding dropped it) and is now refused
// at load, naming the token id and showing its text escaped.
TEST(GgufByteTokenTest, MalformedByteTokensAreRefusedWithIdAndEscapedText) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"<0xZZ>", "'<0xZZ>'"},
      {"<0x-1>", "'<0x-1>'"},
      {"<0x4>", "'<0x4>'"},
      {"<0x041>", "'<0x041>'"},
      {"<0x41", "'<0x41'"},
      {"0x41>", "'0x41>'"},
      {"<0X41>", "'<0X41>'"},
      {"abc", "'abc'"},
      {"", "''"},
      {"<0x\xFF\xFE>", "'<0x\\xFF\\xFE>'"},
      {std::string("<0x4\0>", 6), "'<0x4\\x00>'"},
      {"<0x\x1B[>", "'<0x\\x1B[>'"},
  };
  for (const auto& [text, shown] : cases) {
    auto image = SpmVocabWithByteToken(text);
    auto t = LoadVocab(image);
    ASSERT_FALSE(t.ok()) << "accepted BYTE token " << shown;
    const std::string msg(t.status().message());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << msg;
    EXPECT_NE(msg.find("token 4 " + shown + " has type BYTE but is not <0xNN>"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\x1B'), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\0'), std::string::npos) << msg;
  }
}

// The same rule holds whatever built the spec (tokenizer.json readers mark
// only well-formed byte tokens BYTE, but Create is the one gate).
TEST(GgufByteTokenTest, CreateRefusesMalformedByteTokenInAnySpec) {
  TokenizerSpec spec;
  spec.model = TokenizerSpec::Model::kSpmBpe;
  spec.tokens = {"<unk>", "<0xG0>"};
  spec.types = {TokenType::kUnknown, TokenType::kByte};
  auto t = Tokenizer::Create(spec);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("token 1 '<0xG0>' has type BYTE but is not <0xNN>"), std::string::npos)
      << t.status();
}

}  // namespace
}  // namespace tessera
