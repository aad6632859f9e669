#include "worker/tokenizer/hf_tokenizer.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"
#include "common/json/json_file.h"
#include "common/status_macros.h"

namespace tessera {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";

// The Split regexes of the byte-level families, as tokenizer.json spells them.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

absl::Status Unsupported(std::string_view what, const Json& j) {
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported ", std::string(what), " ",
                                               EscapeForMessage(j.dump(-1, ' ', true), 200)));
}

std::string TypeOf(const Json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

bool Flag(const Json& j, const char* key, bool dflt) {
  return j.is_object() && j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : dflt;
}

// A list of a Sequence's members, or the one component itself.
std::vector<Json> Members(const Json& j, const char* list_key) {
  if (TypeOf(j) == "Sequence" && j.contains(list_key) && j[list_key].is_array()) {
    return std::vector<Json>(j[list_key].begin(), j[list_key].end());
  }
  if (j.is_null()) return {};
  return {j};
}

// A token name in tokenizer_config.json: a string, or an AddedToken object.
std::optional<std::string> TokenName(const Json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key)) return std::nullopt;
  const Json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

absl::Status ReadNormalizer(const Json& n, TokenizerSpec& s) {
  bool prepend = false, replace = false;
  for (const Json& m : Members(n, "normalizers")) {
    const std::string t = TypeOf(m);
    if (t == "NFC") {
      s.nfc = true;
    } else if (t == "Prepend" && m.value("prepend", "") == kSpmSpace) {
      prepend = true;
    } else if (t == "Replace" && m.contains("pattern") && m["pattern"].is_object() &&
               m["pattern"].value("String", "") == " " && m.value("content", "") == kSpmSpace) {
      replace = true;
    } else {
      return Unsupported("normalizer", m);
    }
  }
  if (prepend || replace) {
    if (!replace) return Unsupported("normalizer (Prepend without Replace)", n);
    s.spm_normalizer = true;
    s.space_prefix = prepend ? TokenizerSpec::SpacePrefix::kEverySegment : TokenizerSpec::SpacePrefix::kNone;
  }
  return absl::OkStatus();
}

// Sets the model family and pre-tokenizer from the pre_tokenizer section.
absl::Status ReadPreTokenizer(const Json& p, TokenizerSpec& s, bool* byte_level) {
  const std::vector<Json> parts = Members(p, "pretokenizers");
  *byte_level = false;
  if (parts.empty()) return absl::OkStatus();
  if (parts.size() == 1 && TypeOf(parts[0]) == "Metaspace") {
    const Json& m = parts[0];
    if (m.value("replacement", std::string(kSpmSpace)) != kSpmSpace) return Unsupported("Metaspace replacement", m);
    const std::string scheme = m.value("prepend_scheme", Flag(m, "add_prefix_space", true) ? "always" : "never");
    if (scheme == "first") {
      s.space_prefix = TokenizerSpec::SpacePrefix::kFirstSegment;
    } else if (scheme == "always") {
      s.space_prefix = TokenizerSpec::SpacePrefix::kEverySegment;
    } else if (scheme == "never") {
      s.space_prefix = TokenizerSpec::SpacePrefix::kNone;
    } else {
      return Unsupported("Metaspace prepend_scheme", m);
    }
    s.split_on_space_marker = Flag(m, "split", true);
    return absl::OkStatus();
  }
  const Json& last = parts.back();
  if (TypeOf(last) != "ByteLevel") return Unsupported("pre_tokenizer", p);
  if (Flag(last, "add_prefix_space", false)) return Unsupported("pre_tokenizer (ByteLevel add_prefix_space)", last);
  *byte_level = true;
  const bool regex = Flag(last, "use_regex", true);
  if (parts.size() == 1 && regex) {
    s.pre = PreTokenizer::kGpt2;
    return absl::OkStatus();
  }
  if (parts.size() == 2 && TypeOf(parts[0]) == "Digits" && Flag(parts[0], "individual_digits", false) && regex) {
    s.pre = PreTokenizer::kSmolLm;
    return absl::OkStatus();
  }
  if (parts.size() == 2 && TypeOf(parts[0]) == "Split" && !regex) {
    const Json& sp = parts[0];
    const bool isolated = sp.value("behavior", "") == "Isolated" && !Flag(sp, "invert", false);
    const std::string pattern = sp.contains("pattern") && sp["pattern"].is_object() ? sp["pattern"].value("Regex", "") : "";
    if (isolated && pattern == kLlama3Pattern) { s.pre = PreTokenizer::kLlama3; return absl::OkStatus(); }
    if (isolated && pattern == kQwen2Pattern) { s.pre = PreTokenizer::kQwen2; return absl::OkStatus(); }
    if (isolated && pattern == kGpt2Pattern) { s.pre = PreTokenizer::kGpt2; return absl::OkStatus(); }
  }
  return Unsupported("pre_tokenizer (supported: the GPT-2, SmolLM, Llama 3 and Qwen2 byte-level pipelines, Metaspace)", p);
}

absl::Status ReadPostProcessor(const Json& p, const absl::flat_hash_map<std::string, int32_t>& ids,
                               size_t n_vocab, TokenizerSpec& s) {
  for (const Json& m : Members(p, "processors")) {
    const std::string t = TypeOf(m);
    if (t == "ByteLevel") continue;  // offsets only
    if (t != "TemplateProcessing") return Unsupported("post_processor", m);
    if (!m.contains("single") || !m["single"].is_array()) return Unsupported("TemplateProcessing", m);
    const Json specials = m.value("special_tokens", Json::object());
    bool seen_sequence = false;
    for (const Json& item : m["single"]) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken") || !item["SpecialToken"].is_object()) return Unsupported("TemplateProcessing item", item);
      const std::string name = item["SpecialToken"].value("id", "");
      std::vector<int32_t> token_ids;
      if (specials.is_object() && specials.contains(name) && specials[name].contains("ids") &&
          specials[name]["ids"].is_array()) {
        for (const Json& v : specials[name]["ids"]) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<uint64_t>() >= n_vocab) {
            return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: post-processor token '",
                                                           EscapeForMessage(name), "' has an id outside the vocabulary"));
          }
          token_ids.push_back(v.get<int32_t>());
        }
      } else if (auto it = ids.find(name); it != ids.end()) {
        token_ids.push_back(it->second);
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.json: post-processor token '", EscapeForMessage(name), "' is not in the vocabulary"));
      }
      auto& dst = seen_sequence ? s.suffix_ids : s.prefix_ids;
      dst.insert(dst.end(), token_ids.begin(), token_ids.end());
    }
  }
  return absl::OkStatus();
}

void ReadDecoder(const Json& d, TokenizerSpec& s) {
  for (const Json& m : Members(d, "decoders")) {
    const std::string t = TypeOf(m);
    if (t == "Strip" && m.value("content", "") == " " && m.value("start", 0) >= 1) {
      s.decode_start = TokenizerSpec::DecodeStart::kStripOneSpace;
    } else if (t == "Metaspace" && m.value("prepend_scheme", "always") != "never") {
      s.decode_start = TokenizerSpec::DecodeStart::kDropFirstTokenMarkers;
    }
  }
}

bool IsByteToken(std::string_view t) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return t.size() == 6 && t.substr(0, 3) == "<0x" && t[5] == '>' && hex(t[3]) && hex(t[4]);
}

}  // namespace

absl::StatusOr<HfTokenizer> ParseHfTokenizer(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                                             std::string_view chat_template_file) {
  TESSERA_ASSIGN_OR_RETURN(const Json j, ParseJsonText(tokenizer_json, "tokenizer.json", {.max_bytes = 128u << 20, .max_depth = 64}));
  Json cfg = Json::object();
  if (!tokenizer_config_json.empty()) {
    TESSERA_ASSIGN_OR_RETURN(cfg, ParseJsonText(tokenizer_config_json, "tokenizer_config.json",
                                                {.max_bytes = 64u << 20, .max_depth = 64}));
    if (!cfg.is_object()) return absl::InvalidArgumentError("tokenizer_config.json is not a JSON object");
  }
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json has no 'model' object");
  }
  const Json& model = j["model"];
  if (TypeOf(model) != "BPE" && !(TypeOf(model).empty() && model.contains("merges"))) {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: model type '", EscapeForMessage(TypeOf(model)),
                                                 "' is not supported (only BPE)"));
  }
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    if (model.contains(k) && !model[k].is_null()) return Unsupported(absl::StrCat("BPE option '", k, "'"), model[k]);
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) return absl::InvalidArgumentError("tokenizer.json: BPE model has no vocab");

  HfTokenizer out;
  TokenizerSpec& s = out.spec;
  s.added_match = TokenizerSpec::AddedTokenMatch::kLeftmostLongest;
  // Ids: the vocabulary and the added tokens; holes are unused ids.
  int64_t max_id = -1;
  auto take_id = [&](const Json& v, std::string_view what) -> absl::StatusOr<int32_t> {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", std::string(what), " has a bad id"));
    }
    max_id = std::max<int64_t>(max_id, v.get<int64_t>());
    return v.get<int32_t>();
  };
  std::vector<std::pair<int32_t, std::string>> entries;
  entries.reserve(model["vocab"].size());
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    TESSERA_ASSIGN_OR_RETURN(int32_t id, take_id(it.value(), absl::StrCat("vocab entry '", EscapeForMessage(it.key()), "'")));
    entries.emplace_back(id, it.key());
  }
  const Json added = j.value("added_tokens", Json::array());
  if (!added.is_array()) return absl::InvalidArgumentError("tokenizer.json: added_tokens is not a list");
  for (const Json& a : added) {
    if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id")) {
      return absl::InvalidArgumentError("tokenizer.json: an added token has no id or content");
    }
    AddedToken t;
    TESSERA_ASSIGN_OR_RETURN(t.id, take_id(a["id"], "an added token"));
    t.content = a["content"].get<std::string>();
    t.special = Flag(a, "special", false);
    t.lstrip = Flag(a, "lstrip", false);
    t.rstrip = Flag(a, "rstrip", false);
    t.single_word = Flag(a, "single_word", false);
    t.normalized = Flag(a, "normalized", !t.special);
    if (t.content.empty()) return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: added token ", t.id, " is empty"));
    s.added.push_back(std::move(t));
  }
  if (max_id < 0) return absl::InvalidArgumentError("tokenizer.json: the vocabulary is empty");
  const size_t n = static_cast<size_t>(max_id) + 1;
  s.tokens.assign(n, "");
  s.types.assign(n, TokenType::kUnused);
  std::vector<bool> taken(n, false);
  for (auto& [id, text] : entries) {
    if (taken[id]) return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: id ", id, " is used twice"));
    taken[id] = true;
    s.tokens[id] = std::move(text);
    s.types[id] = TokenType::kNormal;
  }
  for (const AddedToken& a : s.added) {
    if (taken[a.id] && s.tokens[a.id] != a.content) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: added token ", a.id, " '", EscapeForMessage(a.content),
                                                     "' disagrees with the vocabulary's '", EscapeForMessage(s.tokens[a.id]), "'"));
    }
    s.tokens[a.id] = a.content;
    s.types[a.id] = a.special ? TokenType::kControl : TokenType::kUserDefined;
  }
  absl::flat_hash_map<std::string, int32_t> ids;
  for (size_t i = 0; i < n; ++i) {
    if (s.types[i] != TokenType::kUnused) ids.emplace(s.tokens[i], static_cast<int32_t>(i));
  }

  // Merges: "a b" strings or [a, b] pairs.
  const Json merges = model.value("merges", Json::array());
  if (!merges.is_array()) return absl::InvalidArgumentError("tokenizer.json: merges is not a list");
  s.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    if (m.is_string()) {
      const std::string& v = m.get_ref<const std::string&>();
      const size_t space = v.find(' ', 1);
      if (space == std::string::npos || v.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge ", i, " '", EscapeForMessage(v), "' is not 'left right'"));
      }
      s.merges.emplace_back(v.substr(0, space), v.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      s.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge ", i, " is neither 'a b' nor [a, b]"));
    }
  }
  s.ignore_merges = Flag(model, "ignore_merges", false);
  s.byte_fallback = Flag(model, "byte_fallback", false);
  s.fuse_unk = Flag(model, "fuse_unk", false);

  TESSERA_RETURN_IF_ERROR(ReadNormalizer(j.value("normalizer", Json()), s));
  bool byte_level = false;
  TESSERA_RETURN_IF_ERROR(ReadPreTokenizer(j.value("pre_tokenizer", Json()), s, &byte_level));
  if (!byte_level && TypeOf(j.value("decoder", Json())) == "ByteLevel") {
    return Unsupported("pipeline (a ByteLevel decoder without a ByteLevel pre-tokenizer)", j.value("decoder", Json()));
  }
  if (byte_level) {
    if (s.spm_normalizer) return Unsupported("normalizer for a byte-level model", j["normalizer"]);
    s.model = TokenizerSpec::Model::kByteLevelBpe;
  } else {
    if (!s.spm_normalizer && TypeOf(j.value("pre_tokenizer", Json())) != "Metaspace") {
      return absl::UnimplementedError(
          "tokenizer.json: neither a byte-level pipeline nor a SentencePiece-style one (Prepend/Replace normalizer or "
          "Metaspace pre-tokenizer)");
    }
    s.model = TokenizerSpec::Model::kSpmBpe;
    for (size_t i = 0; i < n; ++i) {
      if (s.types[i] == TokenType::kNormal && IsByteToken(s.tokens[i])) s.types[i] = TokenType::kByte;
    }
    ReadDecoder(j.value("decoder", Json()), s);
  }
  TESSERA_RETURN_IF_ERROR(ReadPostProcessor(j.value("post_processor", Json()), ids, n, s));

  auto id_of = [&](const std::optional<std::string>& name) -> int32_t {
    if (!name) return -1;
    auto it = ids.find(*name);
    return it == ids.end() ? -1 : it->second;
  };
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    s.unk = id_of(model["unk_token"].get<std::string>());
    if (s.unk >= 0 && s.types[s.unk] == TokenType::kNormal) s.types[s.unk] = TokenType::kUnknown;
  }
  s.bos = id_of(TokenName(cfg, "bos_token"));
  s.eos = id_of(TokenName(cfg, "eos_token"));
  if (s.unk < 0) s.unk = id_of(TokenName(cfg, "unk_token"));
  // transformers' Llama/Gemma tokenizers rebuild the post-processor from
  // add_bos_token / add_eos_token when the config sets them.
  const std::string cls = cfg.value("tokenizer_class", "");
  if (cls.rfind("Llama", 0) == 0 || cls.rfind("Gemma", 0) == 0 || cls.rfind("Code", 0) == 0) {
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
      s.prefix_ids.clear();
      if (cfg["add_bos_token"].get<bool>() && s.bos >= 0) s.prefix_ids.push_back(s.bos);
    }
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) {
      s.suffix_ids.clear();
      if (cfg["add_eos_token"].get<bool>() && s.eos >= 0) s.suffix_ids.push_back(s.eos);
    }
  }

  // The chat template: a string, or named templates of which transformers
  // uses "default"; else a separate chat_template.jinja.
  if (cfg.contains("chat_template")) {
    const Json& t = cfg["chat_template"];
    if (t.is_string()) {
      out.chat_template = t.get<std::string>();
    } else if (t.is_array()) {
      for (const Json& e : t) {
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string()) {
          out.chat_template = e["template"].get<std::string>();
        }
      }
    }
  }
  if (!out.chat_template && !chat_template_file.empty()) out.chat_template = std::string(chat_template_file);
  return out;
}

absl::StatusOr<HfTokenizer> ReadHfTokenizer(const ModelDirectory& dir) {
  TESSERA_ASSIGN_OR_RETURN(std::string tok_path, dir.Resolve("tokenizer.json"));
  TESSERA_ASSIGN_OR_RETURN(std::string tok, ReadRegularFile(tok_path, 128u << 20));
  std::string cfg, chat;
  auto optional_file = [&](std::string_view name, uint64_t limit, std::string& text) -> absl::Status {
    absl::StatusOr<std::string> path = dir.Resolve(name);
    if (!path.ok()) return path.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus() : path.status();
    TESSERA_ASSIGN_OR_RETURN(text, ReadRegularFile(*path, limit));
    return absl::OkStatus();
  };
  TESSERA_RETURN_IF_ERROR(optional_file("tokenizer_config.json", 64u << 20, cfg));
  TESSERA_RETURN_IF_ERROR(optional_file("chat_template.jinja", 1u << 20, chat));
  return ParseHfTokenizer(tok, cfg, chat);
}

}  // namespace tessera
