// The OpenAI shapes of echo: the prompt leads a text choice's text and,
// with logprobs, its logprobs (the first prompt token's logprob and
// alternatives null), text_offset counting characters of the echoed text;
// streamed, the prompt is the choice's first chunk.
#include "gateway/openai/renderer.h"

#include <gtest/gtest.h>

namespace tessera::gateway {
namespace {

using Json = nlohmann::json;

class Capture final : public ResponseOutput {
 public:
  void StartStream() override { started = true; }
  void StreamChunk(const Json& chunk) override { chunks.push_back(chunk); }
  void EndStream() override { ended = true; }
  void StreamError(const absl::Status& s) override { error = s; }
  void Whole(const Json& body) override { whole = body; }
  void Error(const absl::Status& s) override { error = s; }

  bool started = false, ended = false;
  std::vector<Json> chunks;
  Json whole;
  absl::Status error;
};

CompletionRequest TextRequest(std::vector<std::string> prompts, bool echo, std::optional<int> logprobs) {
  CompletionRequest r;
  r.kind = CompletionRequest::Kind::kText;
  r.model = "m";
  r.prompts = std::move(prompts);
  r.max_tokens = 2;
  r.echo = echo;
  r.logprobs = logprobs.has_value();
  r.top_logprobs = logprobs.value_or(0);
  return r;
}

TokenLogprobs Lp(std::string token, float logprob, std::vector<std::pair<std::string, float>> top = {}) {
  return TokenLogprobs{std::move(token), logprob, std::move(top)};
}

// "Café is" as the worker reports it: 'é' split over two byte tokens.
const std::string kPrompt = "Caf\xc3\xa9 is";
std::vector<TokenLogprobs> PromptLogprobs() {
  return {Lp("Caf", 0.f), Lp("\xc3", -2.f, {{"e", -0.5f}}), Lp("\xa9", -0.1f, {{"\xa9", -0.1f}}),
          Lp(" is", -1.f, {{" was", -0.7f}})};
}

TEST(CompletionRendererTest, EchoWithLogprobsLeadsWithThePrompt) {
  auto out = std::make_shared<Capture>();
  CompletionRenderer r(out, TextRequest({kPrompt}, true, 1), "id");
  r.OnFirstOutput();
  r.OnEcho(0, kPrompt, PromptLogprobs());
  r.OnDelta(0, " good", {Lp(" good", -0.3f, {{" good", -0.3f}})});
  r.OnDelta(0, "!", {Lp("!", -2.5f, {{".", -0.2f}})});
  r.OnChoiceFinished(0, "length");
  r.OnDone(absl::OkStatus(), 4, 2);
  const Json& c = out->whole["choices"][0];
  EXPECT_EQ(c["text"], kPrompt + " good!");
  const Json& lp = c["logprobs"];
  EXPECT_EQ(lp["tokens"], Json::array({"Caf", "\xc3", "\xa9", " is", " good", "!"}));
  EXPECT_EQ(lp["token_logprobs"][0], nullptr);  // nothing precedes the first prompt token
  EXPECT_EQ(lp["top_logprobs"][0], nullptr);
  EXPECT_EQ(lp["token_logprobs"][1], -2.f);
  EXPECT_EQ(lp["token_logprobs"][4], -0.3f);
  // The N best and the token itself, prompt or generated ("up to logprobs+1").
  EXPECT_EQ(lp["top_logprobs"][1], (Json{{"e", -0.5f}, {"\xc3", -2.f}}));
  EXPECT_EQ(lp["top_logprobs"][2], (Json{{"\xa9", -0.1f}}));
  EXPECT_EQ(lp["top_logprobs"][5], (Json{{".", -0.2f}, {"!", -2.5f}}));
  // Characters of the echoed text: both halves of 'é' point at it (3), and
  // the generated tokens count on from the prompt's 7 characters.
  EXPECT_EQ(lp["text_offset"], Json::array({0, 3, 3, 4, 7, 12}));
}

TEST(CompletionRendererTest, EchoWithoutLogprobsAndWithNothingGenerated) {
  auto out = std::make_shared<Capture>();
  CompletionRenderer r(out, TextRequest({"1, 2,", "a, b,"}, true, std::nullopt), "id");
  r.OnFirstOutput();
  // Each choice echoes its own prompt, whatever order the workers answer in.
  r.OnEcho(1, "a, b,", {});
  r.OnEcho(0, "1, 2,", {});
  r.OnDelta(1, " c", {});
  r.OnChoiceFinished(1, "length");
  r.OnChoiceFinished(0, "length");  // max_tokens 0: the prompt alone
  r.OnDone(absl::OkStatus(), 6, 1);
  EXPECT_EQ(out->whole["choices"][0]["text"], "1, 2,");
  EXPECT_EQ(out->whole["choices"][1]["text"], "a, b, c");
  EXPECT_EQ(out->whole["choices"][0]["logprobs"], nullptr);
  // Without echo nothing is prepended, and offsets start at 0.
  auto plain = std::make_shared<Capture>();
  CompletionRenderer p(plain, TextRequest({"x"}, false, 0), "id");
  p.OnFirstOutput();
  p.OnEcho(0, "x", {});  // ignored: the request did not ask for echo
  p.OnDelta(0, " y", {Lp(" y", -1.f)});
  p.OnChoiceFinished(0, "length");
  p.OnDone(absl::OkStatus(), 1, 1);
  EXPECT_EQ(plain->whole["choices"][0]["text"], " y");
  EXPECT_EQ(plain->whole["choices"][0]["logprobs"]["text_offset"], Json::array({0}));
  EXPECT_EQ(plain->whole["choices"][0]["logprobs"]["top_logprobs"], Json::array({Json{{" y", -1.f}}}));
}

TEST(CompletionRendererTest, StreamedEchoIsTheChoicesFirstChunk) {
  auto out = std::make_shared<Capture>();
  CompletionRequest req = TextRequest({kPrompt}, true, 1);
  req.stream = true;
  CompletionRenderer r(out, req, "id");
  r.OnFirstOutput();
  r.OnEcho(0, kPrompt, PromptLogprobs());
  r.OnDelta(0, " good", {Lp(" good", -0.3f, {{" good", -0.3f}})});
  r.OnChoiceFinished(0, "length");
  r.OnDone(absl::OkStatus(), 4, 1);
  ASSERT_EQ(out->chunks.size(), 3u);
  const Json& first = out->chunks[0]["choices"][0];
  EXPECT_EQ(first["text"], kPrompt);
  EXPECT_EQ(first["finish_reason"], nullptr);
  EXPECT_EQ(first["logprobs"]["token_logprobs"], Json::array({nullptr, -2.f, -0.1f, -1.f}));
  EXPECT_EQ(first["logprobs"]["text_offset"], Json::array({0, 3, 3, 4}));
  const Json& second = out->chunks[1]["choices"][0];
  EXPECT_EQ(second["text"], " good");
  EXPECT_EQ(second["logprobs"]["text_offset"], Json::array({7}));
  EXPECT_EQ(out->chunks[2]["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(out->ended);
}

TEST(CompletionRendererTest, RestartForgetsTheEchoOfTheFailedAttempt) {
  auto out = std::make_shared<Capture>();
  CompletionRenderer r(out, TextRequest({"ab"}, true, 0), "id");
  r.OnFirstOutput();
  r.OnEcho(0, "ab", {Lp("a", 0.f), Lp("b", -1.f)});
  ASSERT_TRUE(r.Restart());
  r.OnFirstOutput();
  r.OnEcho(0, "ab", {Lp("a", 0.f), Lp("b", -1.5f)});
  r.OnChoiceFinished(0, "length");
  r.OnDone(absl::OkStatus(), 2, 0);
  const Json& c = out->whole["choices"][0];
  EXPECT_EQ(c["text"], "ab");
  EXPECT_EQ(c["logprobs"]["tokens"], Json::array({"a", "b"}));
  EXPECT_EQ(c["logprobs"]["token_logprobs"], Json::array({nullptr, -1.5f}));
  EXPECT_EQ(c["logprobs"]["text_offset"], Json::array({0, 1}));
}

TEST(TextOffsetTest, CountsCharactersAndPointsIntoASplitCharacter) {
  int64_t chars = 0;
  EXPECT_EQ(TextOffset("The", chars), 0);
  EXPECT_EQ(TextOffset(" caf", chars), 3);
  EXPECT_EQ(TextOffset("\xc3", chars), 7);  // 'é' split over two tokens: both point at it
  EXPECT_EQ(TextOffset("\xa9!", chars), 7);
  EXPECT_EQ(TextOffset(" \xe2\x82\xac", chars), 9);  // ' €': 2 characters in 4 bytes
  EXPECT_EQ(TextOffset("", chars), 11);
  EXPECT_EQ(chars, 11);
}

}  // namespace
}  // namespace tessera::gateway
