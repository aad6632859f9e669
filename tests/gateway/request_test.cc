#include "gateway/openai/request.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "gateway/openai/errors.h"

namespace tessera::gateway {
namespace {

TEST(ChatRequestTest, ParsesEveryParameter) {
  auto r = ParseChatCompletionRequest(R"({
    "model": "m", "messages": [{"role": "system", "content": "s"},
                               {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                               {"role": "assistant", "content": null}],
    "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "n": 2, "stop": ["x", "y"], "seed": -3,
    "presence_penalty": 1, "frequency_penalty": -1, "logit_bias": {"42": -100}, "logprobs": true,
    "top_logprobs": 3, "stream": true, "stream_options": {"include_usage": true}, "user": "u",
    "some_future_field": {"ignored": true}})",
                                      {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_EQ(r->messages[1].content, "ab");
  EXPECT_EQ(r->max_tokens, 7);
  EXPECT_FLOAT_EQ(r->temperature, 0.5f);
  EXPECT_EQ(r->n, 2);
  EXPECT_EQ(r->stop.size(), 2u);
  EXPECT_EQ(*r->seed, -3);
  EXPECT_EQ(r->logit_bias[0].first, 42);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->top_logprobs, 3);
  EXPECT_TRUE(r->stream && r->include_usage);
}

TEST(ChatRequestTest, ErrorsNameTheParameter) {
  auto check = [](const char* body, const char* param, const char* text) {
    auto r = ParseChatCompletionRequest(body, {});
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(ParamOf(r.status()), param) << body;
    EXPECT_NE(r.status().message().find(text), std::string::npos) << r.status();
  };
  check(R"({"messages": [{"role": "user", "content": "x"}]})", "model", "'model' is required");
  check(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 1.7})", "top_p",
        "'top_p' must be in (0, 1]; got 1.7");
  check(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 17})", "n", "[1, 16]");
  check(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"})", "max_tokens",
        "must be an integer, got string");
  check(R"({"model": "m", "messages": [{"role": "bot", "content": "x"}]})", "messages[0].role", "must be one of");
  check(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]})", "stop",
        "at most 4");
  check(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs",
        "requires 'logprobs'");
}

TEST(ChatRequestTest, RejectsHostileBodies) {
  EXPECT_FALSE(ParseChatCompletionRequest("", {}).ok());
  EXPECT_FALSE(ParseChatCompletionRequest("{", {}).ok());
  EXPECT_FALSE(ParseChatCompletionRequest("\xff", {}).ok());
  std::string deep = std::string(100, '[') + std::string(100, ']');
  auto r = ParseChatCompletionRequest(deep, {});
  EXPECT_NE(r.status().message().find("nested deeper"), std::string::npos);
}

// A schema reaches the worker with its properties in the client's order
// (the worker produces them in that order, as OpenAI does), not sorted.
TEST(ChatRequestTest, SchemaKeepsTheClientsPropertyOrder) {
  const std::string schema =
      R"({"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"string"},"mid":{"type":"boolean"}},"required":["zeta","alpha","mid"]})";
  for (const std::string& field :
       {R"("response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": )" + schema + "}}",
        R"("guided_json": )" + schema}) {
    auto r = ParseChatCompletionRequest(
        R"({"model": "m", "messages": [{"role": "user", "content": "x"}], )" + field + "}", {});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->structured.text, schema);
  }
  // schema_json: the schema as text (the public gRPC API's way to keep order).
  std::string quoted;
  for (char c : schema) quoted += c == '"' ? std::string("\\\"") : std::string(1, c);
  auto r = ParseChatCompletionRequest(
      R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema_json": ")" +
          quoted + "\"}}}",
      {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->structured.text, schema);
  EXPECT_EQ(r->structured.param, "response_format.json_schema.schema_json");
  auto both = ParseChatCompletionRequest(
      R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {}, "schema_json": "{}"}}})",
      {});
  EXPECT_EQ(ParamOf(both.status()), "response_format.json_schema.schema_json");
}

// The ordered parse stays linear: an object of 200,000 members (nlohmann's
// own ordered parse scans the object for every name: minutes).
TEST(ChatRequestTest, HugeObjectsParseInLinearTime) {
  std::string members;
  for (int i = 0; i < 200000; ++i) members += "\"k" + std::to_string(i) + "\":0,";
  const std::string body = R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "x": {)" + members +
                           R"("k7": 1}, "n": 1, "n": 2})";
  const auto t0 = std::chrono::steady_clock::now();
  auto r = ParseChatCompletionRequest(body, {});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->n, 2);  // a repeated name: the last value, as nlohmann::json
  EXPECT_LT(seconds, 5.0);
}

TEST(CompletionRequestTest, PromptForms) {
  auto one = ParseCompletionRequest(R"({"model": "m", "prompt": "hi"})", {});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->max_tokens, 16);  // OpenAI's default for completions
  auto many = ParseCompletionRequest(R"({"model": "m", "prompt": ["a", "b"], "n": 2})", {});
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->prompt_count(), 2u);
  auto ids = ParseCompletionRequest(R"({"model": "m", "prompt": [1, 2, 3]})", {});
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->prompt_ids[0].size(), 3u);
  auto lists = ParseCompletionRequest(R"({"model": "m", "prompt": [[1], [2, 3]]})", {});
  ASSERT_TRUE(lists.ok());
  EXPECT_EQ(lists->prompt_count(), 2u);
  EXPECT_FALSE(ParseCompletionRequest(R"({"model": "m", "prompt": ["a", [1]]})", {}).ok());
}

TEST(CompletionRequestTest, EchoAllowsMaxTokensZeroAndStreaming) {
  auto score = ParseCompletionRequest(R"({"model": "m", "prompt": "hi", "echo": true, "max_tokens": 0, "logprobs": 0})", {});
  ASSERT_TRUE(score.ok()) << score.status();
  EXPECT_EQ(score->max_tokens, 0);
  EXPECT_TRUE(score->echo);
  EXPECT_TRUE(score->logprobs);
  EXPECT_EQ(score->top_logprobs, 0);
  auto streamed = ParseCompletionRequest(R"({"model": "m", "prompt": "hi", "echo": true, "stream": true, "logprobs": 2})", {});
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_TRUE(streamed->stream);
  auto zero = ParseCompletionRequest(R"({"model": "m", "prompt": "hi", "max_tokens": 0})", {});
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(ParamOf(zero.status()), "max_tokens");
  auto too_many = ParseCompletionRequest(R"({"model": "m", "prompt": "hi", "echo": true, "logprobs": 6})", {});
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(ParamOf(too_many.status()), "logprobs");
}

TEST(ErrorsTest, StatusMapsToHttpAndOpenAiShape) {
  EXPECT_EQ(MapStatus(absl::StatusCode::kInvalidArgument).http_status, 400);
  EXPECT_EQ(MapStatus(absl::StatusCode::kUnauthenticated).http_status, 401);
  EXPECT_EQ(MapStatus(absl::StatusCode::kNotFound).http_status, 404);
  EXPECT_EQ(MapStatus(absl::StatusCode::kResourceExhausted).http_status, 429);
  EXPECT_EQ(MapStatus(absl::StatusCode::kUnavailable).http_status, 503);
  EXPECT_EQ(ErrorBody(ParamError("n", "bad n")),
            R"({"error":{"code":null,"message":"bad n","param":"n","type":"invalid_request_error"}})");
  EXPECT_EQ(ErrorBody(WithCode(absl::NotFoundError("no"), "model_not_found")),
            R"({"error":{"code":"model_not_found","message":"no","param":null,"type":"invalid_request_error"}})");
}

}  // namespace
}  // namespace tessera::gateway
