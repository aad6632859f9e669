#include "gateway/openai/request.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/json/json_file.h"
#include "common/status_macros.h"
#include "gateway/openai/errors.h"
#include "nlohmann/json.hpp"

namespace tessera::gateway {
namespace {

// Ordered: a schema (response_format / guided_json) reaches the worker with
// its properties in the order the client wrote them, and they are produced
// in that order (as OpenAI does). Parsed in linear time (json_file.h).
using Json = nlohmann::ordered_json;

std::string TypeName(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::boolean: return "boolean";
    case Json::value_t::string: return "string";
    case Json::value_t::array: return "array";
    case Json::value_t::object: return "object";
    case Json::value_t::number_float: return "number";
    default: return "integer";
  }
}

absl::Status WrongType(const std::string& param, std::string_view want, const Json& got) {
  return ParamError(param, absl::StrCat("'", param, "' must be ", std::string(want), ", got ", TypeName(got)));
}

absl::StatusOr<Json> ParseBody(std::string_view body, int max_depth) {
  if (body.empty()) return ParamError("", "the request body is empty; expected a JSON object");
  bool too_deep = false;
  Json j = ParseOrderedJsonLinear(body, max_depth, &too_deep);
  if (too_deep) return ParamError("", absl::StrCat("the request body is nested deeper than ", max_depth, " levels"));
  if (j.is_discarded()) {
    return ParamError("", "the request body is not valid JSON (or not valid UTF-8)");
  }
  if (!j.is_object()) return ParamError("", absl::StrCat("the request body must be a JSON object, got ", TypeName(j)));
  return j;
}

const Json* Field(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status GetFloat(const Json& obj, const char* key, double lo, double hi, bool lo_open, float* out) {
  const Json* v = Field(obj, key);
  if (!v) return absl::OkStatus();
  if (!v->is_number()) return WrongType(key, "a number", *v);
  const double d = v->get<double>();
  if (!std::isfinite(d) || (lo_open ? d <= lo : d < lo) || d > hi) {
    return ParamError(key, absl::StrCat("'", key, "' must be in ", lo_open ? "(" : "[", lo, ", ", hi, "]; got ",
                                        v->dump()));
  }
  *out = static_cast<float>(d);
  return absl::OkStatus();
}

absl::Status GetInt(const Json& obj, const char* key, int64_t lo, int64_t hi, int64_t* out, bool* present = nullptr) {
  const Json* v = Field(obj, key);
  if (present) *present = v != nullptr;
  if (!v) return absl::OkStatus();
  if (!v->is_number_integer()) return WrongType(key, "an integer", *v);
  const bool neg = v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0;
  if (!neg && v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return ParamError(key, absl::StrCat("'", key, "' must be in [", lo, ", ", hi, "]; got ", v->dump()));
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) return ParamError(key, absl::StrCat("'", key, "' must be in [", lo, ", ", hi, "]; got ", x));
  *out = x;
  return absl::OkStatus();
}

absl::Status GetBool(const Json& obj, const char* key, bool* out) {
  const Json* v = Field(obj, key);
  if (!v) return absl::OkStatus();
  if (!v->is_boolean()) return WrongType(key, "a boolean", *v);
  *out = v->get<bool>();
  return absl::OkStatus();
}

// response_format (OpenAI) and vLLM's guided_json / guided_regex /
// guided_choice: at most one constraint; its size is bounded here, and the
// worker compiles it (refusing what it cannot express, with the param).
absl::Status ParseStructured(const Json& j, const RequestLimits& limits, StructuredOutputSpec& out) {
  using Kind = StructuredOutputSpec::Kind;
  std::vector<std::string> given;
  auto set = [&](Kind kind, std::string param) {
    given.push_back(param);
    out.kind = kind;
    out.param = std::move(param);
  };
  auto schema_text = [&](const Json& schema, const std::string& param) -> absl::Status {
    if (!schema.is_object() && !schema.is_boolean()) return WrongType(param, "an object (a JSON Schema)", schema);
    out.text = schema.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (out.text.size() > limits.max_structured_bytes) {
      return ParamError(param, absl::StrCat("'", param, "' is ", out.text.size(), " bytes; the limit is ",
                                            limits.max_structured_bytes, " bytes"));
    }
    return absl::OkStatus();
  };
  if (const Json* rf = Field(j, "response_format")) {
    if (!rf->is_object()) return WrongType("response_format", "an object", *rf);
    const Json* type = Field(*rf, "type");
    if (!type || !type->is_string()) return ParamError("response_format.type", "'response_format.type' must be a string");
    const std::string t = type->get<std::string>();
    if (t == "json_object") {
      set(Kind::kJsonObject, "response_format");
    } else if (t == "json_schema") {
      const Json* js = Field(*rf, "json_schema");
      if (!js) return ParamError("response_format.json_schema", "'response_format.json_schema' is required for type 'json_schema'");
      if (!js->is_object()) return WrongType("response_format.json_schema", "an object", *js);
      if (const Json* name = Field(*js, "name"); name && !name->is_string()) {
        return WrongType("response_format.json_schema.name", "a string", *name);
      }
      if (const Json* strict = Field(*js, "strict"); strict && !strict->is_boolean()) {
        return WrongType("response_format.json_schema.strict", "a boolean", *strict);
      }
      const Json* schema = Field(*js, "schema");
      // Tessera's extension: the schema as JSON text. The public gRPC API
      // needs it to keep property order (a protobuf Struct is a map).
      const Json* schema_json = Field(*js, "schema_json");
      if (schema && schema_json) {
        return ParamError("response_format.json_schema.schema_json",
                          "give one of 'response_format.json_schema.schema' and 'schema_json', not both");
      }
      if (schema_json) {
        const std::string param = "response_format.json_schema.schema_json";
        if (!schema_json->is_string()) return WrongType(param, "a string (a JSON Schema as JSON text)", *schema_json);
        set(Kind::kJsonSchema, param);
        out.text = schema_json->get<std::string>();
        if (out.text.size() > limits.max_structured_bytes) {
          return ParamError(param, absl::StrCat("'", param, "' is ", out.text.size(), " bytes; the limit is ",
                                                limits.max_structured_bytes, " bytes"));
        }
      } else {
        if (!schema) {
          return ParamError("response_format.json_schema.schema", "'response_format.json_schema.schema' is required");
        }
        set(Kind::kJsonSchema, "response_format.json_schema.schema");
        TESSERA_RETURN_IF_ERROR(schema_text(*schema, out.param));
      }
    } else if (t != "text") {
      return ParamError("response_format.type", absl::StrCat("'response_format.type' must be text, json_object or json_schema; got '",
                                                             EscapeForMessage(t), "'"));
    }
  }
  if (const Json* g = Field(j, "guided_json")) {
    set(Kind::kJsonSchema, "guided_json");
    if (g->is_string()) {
      // vLLM takes the schema as JSON text too.
      const std::string& text = g->get_ref<const std::string&>();
      if (text.size() > limits.max_structured_bytes) {
        return ParamError("guided_json", absl::StrCat("'guided_json' is ", text.size(), " bytes; the limit is ",
                                                      limits.max_structured_bytes, " bytes"));
      }
      out.text = text;
    } else {
      TESSERA_RETURN_IF_ERROR(schema_text(*g, "guided_json"));
    }
  }
  if (const Json* g = Field(j, "guided_regex")) {
    if (!g->is_string()) return WrongType("guided_regex", "a string", *g);
    set(Kind::kRegex, "guided_regex");
    out.text = g->get<std::string>();
    if (out.text.size() > limits.max_structured_bytes) {
      return ParamError("guided_regex", absl::StrCat("'guided_regex' is ", out.text.size(), " bytes; the limit is ",
                                                     limits.max_structured_bytes, " bytes"));
    }
  }
  if (const Json* g = Field(j, "guided_choice")) {
    if (!g->is_array() || g->empty()) return WrongType("guided_choice", "a non-empty array of strings", *g);
    if (g->size() > limits.max_choices) {
      return ParamError("guided_choice", absl::StrCat("'guided_choice' may hold at most ", limits.max_choices, " strings"));
    }
    set(Kind::kChoice, "guided_choice");
    size_t bytes = 0;
    for (const Json& c : *g) {
      if (!c.is_string() || c.get_ref<const std::string&>().empty()) {
        return ParamError("guided_choice", "'guided_choice' must hold non-empty strings");
      }
      bytes += c.get_ref<const std::string&>().size();
      out.choices.push_back(c.get<std::string>());
    }
    if (bytes > limits.max_structured_bytes) {
      return ParamError("guided_choice", absl::StrCat("'guided_choice' is ", bytes, " bytes; the limit is ",
                                                      limits.max_structured_bytes, " bytes"));
    }
  }
  if (given.size() > 1) {
    return ParamError(given[1], absl::StrCat("only one of response_format (json_object/json_schema), guided_json, guided_regex "
                                             "and guided_choice may be given; got ", given[0], " and ", given[1]));
  }
  return absl::OkStatus();
}

absl::Status ParseCommon(const Json& j, const RequestLimits& limits, CompletionRequest& r) {
  const Json* model = Field(j, "model");
  if (!model) return ParamError("model", "'model' is required");
  if (!model->is_string()) return WrongType("model", "a string", *model);
  r.model = model->get<std::string>();
  if (r.model.empty() || r.model.size() > 256) return ParamError("model", "'model' must be 1 to 256 characters");

  TESSERA_RETURN_IF_ERROR(GetFloat(j, "temperature", 0, 2, false, &r.temperature));
  TESSERA_RETURN_IF_ERROR(GetFloat(j, "top_p", 0, 1, true, &r.top_p));
  TESSERA_RETURN_IF_ERROR(GetFloat(j, "presence_penalty", -2, 2, false, &r.presence_penalty));
  TESSERA_RETURN_IF_ERROR(GetFloat(j, "frequency_penalty", -2, 2, false, &r.frequency_penalty));
  int64_t n = 1;
  TESSERA_RETURN_IF_ERROR(GetInt(j, "n", 1, limits.max_n, &n));
  r.n = static_cast<int>(n);
  int64_t seed = 0;
  bool has_seed = false;
  TESSERA_RETURN_IF_ERROR(GetInt(j, "seed", INT64_MIN, INT64_MAX, &seed, &has_seed));
  if (has_seed) r.seed = seed;
  TESSERA_RETURN_IF_ERROR(GetBool(j, "stream", &r.stream));
  if (const Json* so = Field(j, "stream_options")) {
    if (!so->is_object()) return WrongType("stream_options", "an object", *so);
    if (!r.stream) return ParamError("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (const Json* iu = Field(*so, "include_usage")) {
      if (!iu->is_boolean()) return WrongType("stream_options.include_usage", "a boolean", *iu);
      r.include_usage = iu->get<bool>();
    }
  }
  if (const Json* stop = Field(j, "stop")) {
    if (stop->is_string()) {
      r.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > limits.max_stop) {
        return ParamError("stop", absl::StrCat("'stop' may hold at most ", limits.max_stop, " strings; got ", stop->size()));
      }
      for (const Json& s : *stop) {
        if (!s.is_string()) return WrongType("stop", "a string or an array of strings", s);
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      return WrongType("stop", "a string or an array of strings", *stop);
    }
    for (const std::string& s : r.stop) {
      if (s.empty() || s.size() > limits.max_stop_bytes) {
        return ParamError("stop", absl::StrCat("each stop string must be 1 to ", limits.max_stop_bytes, " bytes"));
      }
    }
  }
  if (const Json* lb = Field(j, "logit_bias")) {
    if (!lb->is_object()) return WrongType("logit_bias", "an object", *lb);
    if (lb->size() > 1024) return ParamError("logit_bias", "'logit_bias' may hold at most 1024 entries");
    for (auto it = lb->begin(); it != lb->end(); ++it) {
      const std::string& key = it.key();
      char* end = nullptr;
      const long id = std::strtol(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX) {
        return ParamError("logit_bias", absl::StrCat("'logit_bias' keys must be token ids; got '", EscapeForMessage(key), "'"));
      }
      if (!it.value().is_number() || !std::isfinite(it.value().get<double>()) || it.value().get<double>() < -100 ||
          it.value().get<double>() > 100) {
        return ParamError("logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
      }
      r.logit_bias.emplace_back(static_cast<int32_t>(id), it.value().get<float>());
    }
  }
  TESSERA_RETURN_IF_ERROR(GetBool(j, "ignore_eos", &r.ignore_eos));
  TESSERA_RETURN_IF_ERROR(ParseStructured(j, limits, r.structured));
  if (const Json* u = Field(j, "user")) {
    if (!u->is_string()) return WrongType("user", "a string", *u);
    r.user = u->get<std::string>();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> MessageContent(const Json& m, size_t index) {
  const std::string param = absl::StrCat("messages[", index, "].content");
  const Json* c = Field(m, "content");
  if (!c) return std::string();
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) return WrongType(param, "a string or an array of content parts", *c);
  std::string text;
  for (const Json& part : *c) {
    if (!part.is_object()) return WrongType(param, "an array of content part objects", part);
    const Json* type = Field(part, "type");
    if (!type || !type->is_string()) return ParamError(param, absl::StrCat("'", param, "' parts need a string 'type'"));
    if (type->get<std::string>() != "text") {
      return ParamError(param, absl::StrCat("content part type '", EscapeForMessage(type->get<std::string>()),
                                            "' is not supported; only 'text'"));
    }
    const Json* t = Field(part, "text");
    if (!t || !t->is_string()) return ParamError(param, absl::StrCat("'", param, "' text parts need a string 'text'"));
    text += t->get<std::string>();
  }
  return text;
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseChatCompletionRequest(std::string_view body, const RequestLimits& limits) {
  TESSERA_ASSIGN_OR_RETURN(Json j, ParseBody(body, limits.max_depth));
  CompletionRequest r;
  r.kind = CompletionRequest::Kind::kChat;
  TESSERA_RETURN_IF_ERROR(ParseCommon(j, limits, r));
  const Json* messages = Field(j, "messages");
  if (!messages) return ParamError("messages", "'messages' is required");
  if (!messages->is_array()) return WrongType("messages", "an array", *messages);
  if (messages->empty()) return ParamError("messages", "'messages' must not be empty");
  if (messages->size() > limits.max_messages) {
    return ParamError("messages", absl::StrCat("'messages' may hold at most ", limits.max_messages, " messages"));
  }
  static const char* kRoles[] = {"system", "developer", "user", "assistant", "tool"};
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    if (!m.is_object()) return WrongType(absl::StrCat("messages[", i, "]"), "an object", m);
    const Json* role = Field(m, "role");
    if (!role) return ParamError(absl::StrCat("messages[", i, "].role"), absl::StrCat("'messages[", i, "].role' is required"));
    if (!role->is_string()) return WrongType(absl::StrCat("messages[", i, "].role"), "a string", *role);
    const std::string rs = role->get<std::string>();
    bool known = false;
    for (const char* k : kRoles) known |= rs == k;
    if (!known) {
      return ParamError(absl::StrCat("messages[", i, "].role"),
                        absl::StrCat("'messages[", i, "].role' must be one of system, developer, user, assistant, tool; got '",
                                     EscapeForMessage(rs), "'"));
    }
    TESSERA_ASSIGN_OR_RETURN(std::string content, MessageContent(m, i));
    if (content.empty() && rs != "assistant") {
      return ParamError(absl::StrCat("messages[", i, "].content"),
                        absl::StrCat("'messages[", i, "].content' must not be empty"));
    }
    r.messages.push_back({rs == "developer" ? "system" : rs, std::move(content)});
  }
  int64_t max_tokens = 0;
  bool has_mt = false, has_mct = false;
  TESSERA_RETURN_IF_ERROR(GetInt(j, "max_completion_tokens", 1, limits.max_tokens_cap, &max_tokens, &has_mct));
  if (!has_mct) TESSERA_RETURN_IF_ERROR(GetInt(j, "max_tokens", 1, limits.max_tokens_cap, &max_tokens, &has_mt));
  r.max_tokens = static_cast<int>(max_tokens);
  TESSERA_RETURN_IF_ERROR(GetBool(j, "logprobs", &r.logprobs));
  int64_t top = 0;
  bool has_top = false;
  TESSERA_RETURN_IF_ERROR(GetInt(j, "top_logprobs", 0, 20, &top, &has_top));
  if (has_top && !r.logprobs) return ParamError("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
  r.top_logprobs = static_cast<int>(top);
  return r;
}

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body, const RequestLimits& limits) {
  TESSERA_ASSIGN_OR_RETURN(Json j, ParseBody(body, limits.max_depth));
  CompletionRequest r;
  r.kind = CompletionRequest::Kind::kText;
  TESSERA_RETURN_IF_ERROR(ParseCommon(j, limits, r));
  const Json* prompt = Field(j, "prompt");
  if (!prompt) return ParamError("prompt", "'prompt' is required");
  auto ids_of = [&](const Json& a) -> absl::StatusOr<std::vector<int32_t>> {
    std::vector<int32_t> ids;
    for (const Json& t : a) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
        return ParamError("prompt", "token-id prompts must hold non-negative integers");
      }
      ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    if (ids.empty()) return ParamError("prompt", "'prompt' must not be empty");
    return ids;
  };
  if (prompt->is_string()) {
    r.prompts.push_back(prompt->get<std::string>());
  } else if (prompt->is_array()) {
    if (prompt->empty()) return ParamError("prompt", "'prompt' must not be empty");
    if (prompt->size() > limits.max_prompts && !(*prompt)[0].is_number()) {
      return ParamError("prompt", absl::StrCat("'prompt' may hold at most ", limits.max_prompts, " prompts"));
    }
    if ((*prompt)[0].is_number()) {
      TESSERA_ASSIGN_OR_RETURN(auto ids, ids_of(*prompt));
      r.prompt_ids.push_back(std::move(ids));
    } else {
      for (const Json& p : *prompt) {
        if (p.is_string()) {
          if (!r.prompt_ids.empty()) return ParamError("prompt", "'prompt' must not mix strings and token ids");
          r.prompts.push_back(p.get<std::string>());
        } else if (p.is_array()) {
          if (!r.prompts.empty()) return ParamError("prompt", "'prompt' must not mix strings and token ids");
          TESSERA_ASSIGN_OR_RETURN(auto ids, ids_of(p));
          r.prompt_ids.push_back(std::move(ids));
        } else {
          return WrongType("prompt", "a string, an array of strings or token ids", p);
        }
      }
    }
  } else {
    return WrongType("prompt", "a string or an array", *prompt);
  }
  for (const std::string& p : r.prompts) {
    if (p.empty()) return ParamError("prompt", "'prompt' must not be empty");
  }
  if (r.prompt_count() * static_cast<size_t>(r.n) > static_cast<size_t>(limits.max_n) * 4) {
    return ParamError("n", "too many choices: prompts x n exceeds the limit");
  }
  TESSERA_RETURN_IF_ERROR(GetBool(j, "echo", &r.echo));
  int64_t max_tokens = 16;
  bool has_mt = false;
  // max_tokens 0 asks for the echoed prompt alone (with logprobs: scoring a
  // text), as OpenAI and vLLM allow; without echo there is nothing to return.
  TESSERA_RETURN_IF_ERROR(GetInt(j, "max_tokens", 0, limits.max_tokens_cap, &max_tokens, &has_mt));
  if (has_mt && max_tokens == 0 && !r.echo) {
    return ParamError("max_tokens", "'max_tokens' must be at least 1 unless 'echo' is true; got 0");
  }
  r.max_tokens = static_cast<int>(max_tokens);
  int64_t lp = 0;
  bool has_lp = false;
  TESSERA_RETURN_IF_ERROR(GetInt(j, "logprobs", 0, 5, &lp, &has_lp));
  r.logprobs = has_lp;
  r.top_logprobs = static_cast<int>(lp);
  if (const Json* suffix = Field(j, "suffix")) {
    return ParamError("suffix", "'suffix' is not supported");
  }
  int64_t best_of = 1;
  TESSERA_RETURN_IF_ERROR(GetInt(j, "best_of", 1, 1, &best_of));
  return r;
}

}  // namespace tessera::gateway
