#include "worker/structured/json_schema.h"

#include <cmath>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera::structured {
namespace {

using Json = nlohmann::json;

NodeP Lit(std::string_view s) { return Literal(s); }
NodeP Digit() { return Bytes({{'0', '9'}}); }
NodeP Digits(int min, int max) { return Repeat(Digit(), min, max); }
NodeP Sp() { return Optional(Lit(" ")); }
NodeP Comma() { return Concat({Lit(","), Sp()}); }
NodeP Colon() { return Concat({Lit(":"), Sp()}); }
NodeP Quoted(NodeP body) { return Concat({Lit("\""), std::move(body), Lit("\"")}); }

// One character of a JSON string's contents, as JSON writes it.
NodeP JsonChar() {
  static const NodeP n = [] {
    const NodeP hex = Bytes({{'0', '9'}, {'A', 'F'}, {'a', 'f'}});
    // \uXXXX for a non-surrogate code point (D800-DFFF excluded).
    const NodeP u = Alt({Concat({Bytes({{'0', '9'}, {'A', 'C'}, {'E', 'F'}, {'a', 'c'}, {'e', 'f'}}), hex, hex, hex}),
                         Concat({Bytes({{'D', 'D'}, {'d', 'd'}}), Bytes({{'0', '7'}}), hex, hex})});
    return Alt({Chars(Subtract({{0, 0x10FFFF}}, {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}})),
                Concat({Lit("\\"), Alt({Bytes({{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {'b', 'b'}, {'f', 'f'},
                                               {'n', 'n'}, {'r', 'r'}, {'t', 't'}}),
                                        Concat({Lit("u"), u})})})});
  }();
  return n;
}

NodeP AnyString() { return Quoted(Repeat(JsonChar(), 0, -1)); }

// Numbers are written with at most kMaxDigits digits in their integer part
// and in their fraction, and an exponent of at most 3 digits: a subset of
// JSON numbers, so that a model that keeps choosing digits still ends.
constexpr int kMaxDigits = 15;

NodeP AnyNumber() {
  return Concat({Optional(Lit("-")), Alt({Lit("0"), Concat({Bytes({{'1', '9'}}), Digits(0, kMaxDigits - 1)})}),
                 Optional(Concat({Lit("."), Digits(1, kMaxDigits)})),
                 Optional(Concat({Bytes({{'E', 'E'}, {'e', 'e'}}), Optional(Bytes({{'+', '+'}, {'-', '-'}})), Digits(1, 3)}))});
}

NodeP AnyInteger() {
  return Concat({Optional(Lit("-")), Alt({Lit("0"), Concat({Bytes({{'1', '9'}}), Digits(0, kMaxDigits - 1)})})});
}

NodeP AnyValue(int depth) {
  std::vector<NodeP> alts = {AnyString(), AnyNumber(), Lit("true"), Lit("false"), Lit("null")};
  if (depth > 0) {
    const NodeP inner = AnyValue(depth - 1);
    alts.push_back(Concat({Lit("["), Optional(SepList(inner, Comma())), Lit("]")}));
    alts.push_back(Concat({Lit("{"), Optional(SepList(Concat({AnyString(), Colon(), inner}), Comma())), Lit("}")}));
  }
  return Alt(std::move(alts));
}

// Decimal digit strings of one length n, each digit between a[i] and b[i]
// lexicographically: the strings s with a <= s <= b (leading zeros allowed).
NodeP DigitRange(std::string_view a, std::string_view b) {
  if (a.empty()) return Empty();
  if (a[0] == b[0]) return Concat({Bytes({{static_cast<uint32_t>(a[0]), static_cast<uint32_t>(a[0])}}), DigitRange(a.substr(1), b.substr(1))});
  const std::string nines(a.size() - 1, '9'), zeros(a.size() - 1, '0');
  std::vector<NodeP> alts;
  alts.push_back(Concat({Bytes({{static_cast<uint32_t>(a[0]), static_cast<uint32_t>(a[0])}}), DigitRange(a.substr(1), nines)}));
  if (a[0] + 1 <= b[0] - 1) {
    alts.push_back(Concat({Bytes({{static_cast<uint32_t>(a[0] + 1), static_cast<uint32_t>(b[0] - 1)}}),
                           Digits(static_cast<int>(a.size()) - 1, static_cast<int>(a.size()) - 1)}));
  }
  alts.push_back(Concat({Bytes({{static_cast<uint32_t>(b[0]), static_cast<uint32_t>(b[0])}}), DigitRange(zeros, b.substr(1))}));
  return Alt(std::move(alts));
}

// Non-negative integers in [lo, hi] (hi unset: unbounded), no leading zeros.
NodeP NonNegRange(uint64_t lo, std::optional<uint64_t> hi) {
  if (hi && lo > *hi) return Never();
  std::vector<NodeP> alts;
  std::string a = std::to_string(lo);
  while (true) {
    // Numbers with a.size() digits from lo up.
    std::string top(a.size(), '9');
    const std::string hs = hi ? std::to_string(*hi) : "";
    if (hi && hs.size() == a.size()) {
      alts.push_back(DigitRange(a, hs));
      break;
    }
    alts.push_back(DigitRange(a, top));
    if (!hi) {
      // Every longer number (up to kMaxDigits digits).
      if (static_cast<int>(a.size()) < kMaxDigits) {
        alts.push_back(Concat({Bytes({{'1', '9'}}), Digits(static_cast<int>(a.size()), kMaxDigits - 1)}));
      }
      break;
    }
    a = "1" + std::string(a.size(), '0');
  }
  return Alt(std::move(alts));
}

// Integers in [lo, hi]; unset: unbounded on that side.
NodeP IntRange(std::optional<int64_t> lo, std::optional<int64_t> hi) {
  if (lo && hi && *lo > *hi) return Never();
  std::vector<NodeP> alts;
  // Negative values: "-" then magnitudes in [max(1, -hi), -lo].
  if (!lo || *lo < 0) {
    const uint64_t mag_lo = hi && *hi < 0 ? static_cast<uint64_t>(-*hi) : 1;
    std::optional<uint64_t> mag_hi;
    if (lo) mag_hi = static_cast<uint64_t>(-*lo);
    alts.push_back(Concat({Lit("-"), NonNegRange(mag_lo, mag_hi)}));
  }
  if (!hi || *hi >= 0) {
    const uint64_t from = lo && *lo > 0 ? static_cast<uint64_t>(*lo) : 0;
    std::optional<uint64_t> to;
    if (hi) to = static_cast<uint64_t>(*hi);
    alts.push_back(NonNegRange(from, to));
  }
  return Alt(std::move(alts));
}

constexpr double kMaxBound = 9007199254740992.0;  // 2^53

// Days valid in every year, per month (February to the 28th).
NodeP Date() {
  const NodeP year = Digits(4, 4);
  const NodeP d28 = Alt({Concat({Lit("0"), Bytes({{'1', '9'}})}), Concat({Lit("1"), Digit()}), Concat({Lit("2"), Bytes({{'0', '8'}})})});
  const NodeP d30 = Alt({d28, Lit("29"), Lit("30")});
  const NodeP d31 = Alt({d30, Lit("31")});
  const NodeP md = Alt({Concat({Alt({Lit("01"), Lit("03"), Lit("05"), Lit("07"), Lit("08"), Lit("10"), Lit("12")}), Lit("-"), d31}),
                        Concat({Alt({Lit("04"), Lit("06"), Lit("09"), Lit("11")}), Lit("-"), d30}),
                        Concat({Lit("02-"), d28})});
  return Concat({year, Lit("-"), md});
}

NodeP Time() {
  const NodeP hh = Alt({Concat({Bytes({{'0', '1'}}), Digit()}), Concat({Lit("2"), Bytes({{'0', '3'}})})});
  const NodeP mm = Concat({Bytes({{'0', '5'}}), Digit()});
  return Concat({hh, Lit(":"), mm, Lit(":"), mm, Optional(Concat({Lit("."), Digits(1, 9)})),
                 Alt({Lit("Z"), Concat({Bytes({{'+', '+'}, {'-', '-'}}), hh, Lit(":"), mm})})});
}

NodeP Hex(int n) { return Repeat(Bytes({{'0', '9'}, {'a', 'f'}}), n, n); }

absl::StatusOr<NodeP> Format(const std::string& f) {
  if (f == "date") return Date();
  if (f == "time") return Time();
  if (f == "date-time") return Concat({Date(), Lit("T"), Time()});
  if (f == "uuid") return Concat({Hex(8), Lit("-"), Hex(4), Lit("-"), Hex(4), Lit("-"), Hex(4), Lit("-"), Hex(12)});
  if (f == "email") {
    // Bounded parts (a subset of addresses), so that generation ends.
    const NodeP atom = Repeat(Bytes({{'a', 'z'}, {'A', 'Z'}, {'0', '9'}, {'_', '_'}, {'+', '+'}, {'-', '-'}}), 1, 24);
    const NodeP label = Repeat(Bytes({{'a', 'z'}, {'A', 'Z'}, {'0', '9'}}), 1, 24);
    return Concat({atom, Repeat(Concat({Lit("."), atom}), 0, 2), Lit("@"), label, Repeat(Concat({Lit("."), label}), 0, 2),
                   Lit("."), Repeat(Bytes({{'a', 'z'}}), 2, 6)});
  }
  if (f == "ipv4") {
    const NodeP octet = Alt({Concat({Lit("25"), Bytes({{'0', '5'}})}), Concat({Lit("2"), Bytes({{'0', '4'}}), Digit()}),
                             Concat({Lit("1"), Digit(), Digit()}), Concat({Bytes({{'1', '9'}}), Digit()}), Digit()});
    return Concat({octet, Repeat(Concat({Lit("."), octet}), 3, 3)});
  }
  return absl::InvalidArgumentError(
      absl::StrCat("format '", f, "' is not supported (supported: date, time, date-time, uuid, email, ipv4)"));
}

class Compiler {
 public:
  Compiler(const Json& root, const JsonSchemaOptions& o) : root_(root), o_(o) {}

  absl::StatusOr<NodeP> Compile(const Json& s, const std::string& path, int depth,
                                std::vector<std::string>& bare_refs) {
    if (depth > o_.max_depth) {
      return Error(path, absl::StrCat("the schema is nested deeper than ", o_.max_depth, " levels"));
    }
    if (s.is_boolean()) return s.get<bool>() ? AnyValue(o_.any_value_depth) : Never();
    if (!s.is_object()) return Error(path, "a schema must be an object or a boolean");
    static const absl::flat_hash_set<std::string> kKnown = {
        "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum",
        "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format", "minLength",
        "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
    static const absl::flat_hash_set<std::string> kAnnotations = {
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
        "writeOnly"};
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (!kKnown.contains(it.key()) && !kAnnotations.contains(it.key())) {
        return Error(path, absl::StrCat("keyword '", it.key(), "' is not supported"));
      }
    }
    if (auto it = s.find("$ref"); it != s.end()) {
      for (auto k = s.begin(); k != s.end(); ++k) {
        if (k.key() != "$ref" && k.key() != "$defs" && k.key() != "definitions" && !kAnnotations.contains(k.key())) {
          return Error(path, absl::StrCat("'$ref' beside '", k.key(), "' is not supported"));
        }
      }
      return Ref(*it, path, depth, bare_refs);
    }
    if (auto it = s.find("const"); it != s.end()) return Lit(it->dump());
    if (auto it = s.find("enum"); it != s.end()) {
      if (!it->is_array() || it->empty()) return Error(path + "/enum", "'enum' must be a non-empty array");
      if (static_cast<int>(it->size()) > o_.max_enum) {
        return Error(path + "/enum", absl::StrCat("'enum' has more than ", o_.max_enum, " values"));
      }
      std::vector<NodeP> alts;
      for (const Json& v : *it) alts.push_back(Lit(v.dump()));
      return Alt(std::move(alts));
    }
    for (const char* kw : {"anyOf", "oneOf", "allOf"}) {
      auto it = s.find(kw);
      if (it == s.end()) continue;
      if (!it->is_array() || it->empty()) return Error(path, absl::StrCat("'", kw, "' must be a non-empty array"));
      if (std::string(kw) == "allOf" && it->size() != 1) {
        return Error(path + "/allOf", "'allOf' with more than one schema is not supported");
      }
      for (auto k = s.begin(); k != s.end(); ++k) {
        if (k.key() != kw && k.key() != "$defs" && k.key() != "definitions" && !kAnnotations.contains(k.key())) {
          return Error(path, absl::StrCat("'", kw, "' beside '", k.key(), "' is not supported"));
        }
      }
      std::vector<NodeP> alts;
      for (size_t i = 0; i < it->size(); ++i) {
        auto b = Compile((*it)[i], absl::StrCat(path, "/", kw, "/", i), depth + 1, bare_refs);
        if (!b.ok()) return b;
        alts.push_back(*b);
      }
      return Alt(std::move(alts));
    }
    // Below, the schema consumes output: a cycle of bare $refs is broken.
    std::vector<std::string> fresh;
    auto type = s.find("type");
    if (type == s.end()) {
      // Typed by its keywords, or any value.
      if (s.contains("properties") || s.contains("additionalProperties") || s.contains("required")) {
        return Typed("object", s, path, depth, fresh);
      }
      if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) return Typed("array", s, path, depth, fresh);
      if (s.contains("pattern") || s.contains("format") || s.contains("minLength") || s.contains("maxLength")) {
        return Typed("string", s, path, depth, fresh);
      }
      if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") || s.contains("exclusiveMaximum")) {
        return Typed("number", s, path, depth, fresh);
      }
      return AnyValue(o_.any_value_depth);
    }
    if (type->is_string()) return Typed(type->get<std::string>(), s, path, depth, fresh);
    if (!type->is_array() || type->empty()) return Error(path + "/type", "'type' must be a string or a non-empty array");
    std::vector<NodeP> alts;
    for (const Json& t : *type) {
      if (!t.is_string()) return Error(path + "/type", "'type' entries must be strings");
      auto b = Typed(t.get<std::string>(), s, path, depth, fresh);
      if (!b.ok()) return b;
      alts.push_back(*b);
    }
    return Alt(std::move(alts));
  }

  std::string cut_ref() const { return cut_ref_; }

 private:
  static absl::Status Error(const std::string& path, std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("schema at '", path.empty() ? "#" : path, "': ", std::string(what)));
  }

  absl::StatusOr<NodeP> Ref(const Json& ref, const std::string& path, int depth, std::vector<std::string>& bare_refs) {
    if (!ref.is_string()) return Error(path + "/$ref", "'$ref' must be a string");
    const std::string r = ref.get<std::string>();
    const Json* target = nullptr;
    if (r == "#") {
      target = &root_;
    } else {
      for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
        if (r.rfind(prefix, 0) != 0) continue;
        const std::string key = r.substr(std::string(prefix).size());
        const std::string container = std::string(prefix).substr(2, std::string(prefix).size() - 3);
        auto defs = root_.find(container);
        if (defs != root_.end() && defs->is_object()) {
          auto t = defs->find(key);
          if (t != defs->end()) target = &*t;
        }
      }
    }
    if (target == nullptr) {
      return Error(path + "/$ref", absl::StrCat("'$ref' '", r,
                                                "' does not resolve (supported: '#', '#/$defs/NAME', '#/definitions/NAME' in the same document)"));
    }
    if (std::find(bare_refs.begin(), bare_refs.end(), r) != bare_refs.end()) {
      bare_refs.push_back(r);
      return Error(path + "/$ref", absl::StrCat("'$ref' cycle ", absl::StrJoin(bare_refs, " -> "),
                                                " never reaches a schema that produces output"));
    }
    int& active = active_[r];
    if (active >= o_.max_recursion) {
      // Unrolled enough: this branch is dropped (the caller's alternatives,
      // optional members or empty arrays remain).
      cut_ref_ = r;
      return Never();
    }
    ++active;
    bare_refs.push_back(r);
    auto out = Compile(*target, r, depth + 1, bare_refs);
    bare_refs.pop_back();
    --active_[r];
    return out;
  }

  absl::Status Bound(const Json& s, const char* key, const std::string& path, std::optional<double>* out) {
    auto it = s.find(key);
    if (it == s.end()) return absl::OkStatus();
    if (!it->is_number()) return Error(path + "/" + key, absl::StrCat("'", key, "' must be a number"));
    const double v = it->get<double>();
    if (!(std::fabs(v) <= kMaxBound)) {
      return Error(path + "/" + key, absl::StrCat("'", key, "' beyond +/-2^53 is not supported"));
    }
    *out = v;
    return absl::OkStatus();
  }

  // Integer bounds [lo, hi] from minimum/maximum and their exclusive forms.
  absl::Status IntBounds(const Json& s, const std::string& path, std::optional<int64_t>* lo, std::optional<int64_t>* hi) {
    std::optional<double> mn, mx, xmn, xmx;
    if (auto st = Bound(s, "minimum", path, &mn); !st.ok()) return st;
    if (auto st = Bound(s, "maximum", path, &mx); !st.ok()) return st;
    if (auto st = Bound(s, "exclusiveMinimum", path, &xmn); !st.ok()) return st;
    if (auto st = Bound(s, "exclusiveMaximum", path, &xmx); !st.ok()) return st;
    if (mn) *lo = static_cast<int64_t>(std::ceil(*mn));
    if (xmn) {
      const auto v = static_cast<int64_t>(std::floor(*xmn)) + 1;
      *lo = *lo ? std::max(**lo, v) : v;
    }
    if (mx) *hi = static_cast<int64_t>(std::floor(*mx));
    if (xmx) {
      const auto v = static_cast<int64_t>(std::ceil(*xmx)) - 1;
      *hi = *hi ? std::min(**hi, v) : v;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int> Count(const Json& s, const char* key, const std::string& path, int dflt) {
    auto it = s.find(key);
    if (it == s.end()) return dflt;
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > kMaxRepeat) {
      return Error(path + "/" + key, absl::StrCat("'", key, "' must be an integer in [0, ", kMaxRepeat, "]"));
    }
    return static_cast<int>(it->get<int64_t>());
  }

  absl::StatusOr<NodeP> Typed(const std::string& type, const Json& s, const std::string& path, int depth,
                              std::vector<std::string>& fresh) {
    if (type == "null") return Lit("null");
    if (type == "boolean") return Alt({Lit("true"), Lit("false")});
    if (type == "integer" || type == "number") {
      std::optional<int64_t> lo, hi;
      if (auto st = IntBounds(s, path, &lo, &hi); !st.ok()) return st;
      if (!lo && !hi) return type == "integer" ? AnyInteger() : AnyNumber();
      NodeP ints = IntRange(lo, hi);
      if (type == "number") {
        // A fraction after integer part I stays within [lo, hi] when the
        // next integer does: I in [max(lo, 0), hi - 1], or -I with I in
        // [1, -lo - 1] ... written as the signed range [lo + 1, min(hi, -1)].
        std::optional<int64_t> pos_hi, neg_lo, neg_hi = -1;
        if (hi) pos_hi = *hi - 1;
        if (lo) neg_lo = *lo + 1;
        if (hi) neg_hi = std::min<int64_t>(*hi, -1);
        const int64_t pos_lo = lo ? std::max<int64_t>(*lo, 0) : 0;
        NodeP with_frac = Alt({(!hi || pos_lo <= *pos_hi) ? IntRange(pos_lo, pos_hi) : Never(),
                               (!neg_lo || *neg_lo <= *neg_hi) ? IntRange(neg_lo, neg_hi) : Never()});
        ints = Alt({ints, Concat({with_frac, Lit("."), Digits(1, kMaxDigits)})});
      }
      if (IsNever(ints)) return Error(path, "the numeric bounds admit no value");
      return ints;
    }
    if (type == "string") {
      auto f = s.find("format");
      auto p = s.find("pattern");
      const bool lengths = s.contains("minLength") || s.contains("maxLength");
      if ((f != s.end()) + (p != s.end()) + lengths > 1) {
        return Error(path, "combining 'format', 'pattern' and 'minLength'/'maxLength' is not supported");
      }
      if (f != s.end()) {
        if (!f->is_string()) return Error(path + "/format", "'format' must be a string");
        auto n = Format(f->get<std::string>());
        if (!n.ok()) return Error(path + "/format", std::string(n.status().message()));
        return Quoted(*n);
      }
      if (p != s.end()) {
        if (!p->is_string()) return Error(path + "/pattern", "'pattern' must be a string");
        auto re = ParseRegex(p->get<std::string>());
        if (!re.ok()) return Error(path + "/pattern", std::string(re.status().message()));
        const NodeP any = Repeat(Chars({{0, 0x10FFFF}}), 0, -1);
        NodeP body = Concat({re->anchored_start ? Empty() : any, re->root, re->anchored_end ? Empty() : any});
        return Quoted(ForJsonString(body));
      }
      auto mn = Count(s, "minLength", path, 0);
      if (!mn.ok()) return mn.status();
      auto mx = Count(s, "maxLength", path, -1);
      if (!mx.ok()) return mx.status();
      if (*mx >= 0 && *mx < *mn) return Error(path, "'maxLength' is below 'minLength'");
      return Quoted(Repeat(JsonChar(), *mn, *mx));
    }
    if (type == "array") {
      NodeP item = AnyValue(o_.any_value_depth);
      if (auto it = s.find("items"); it != s.end()) {
        std::vector<std::string> none;
        auto n = Compile(*it, path + "/items", depth + 1, none);
        if (!n.ok()) return n;
        item = *n;
      }
      auto mn = Count(s, "minItems", path, 0);
      if (!mn.ok()) return mn.status();
      auto mx = Count(s, "maxItems", path, -1);
      if (!mx.ok()) return mx.status();
      if (*mx >= 0 && *mx < *mn) return Error(path, "'maxItems' is below 'minItems'");
      NodeP list;
      if (*mn <= 1 && *mx < 0) {
        list = SepList(item, Comma());
      } else {
        const int first = std::max(*mn, 1);
        list = Concat({item, Repeat(Concat({Comma(), item}), first - 1, *mx < 0 ? -1 : *mx - 1)});
        if (*mx >= 0 && *mx < first) list = Never();
      }
      NodeP body = *mn == 0 ? Optional(list) : list;
      if (*mx == 0) body = Empty();
      if (IsNever(body)) return Never();  // e.g. minItems 1 of a recursion that was cut
      return Concat({Lit("["), body, Lit("]")});
    }
    if (type == "object") return Object(s, path, depth);
    return Error(path + "/type", absl::StrCat("type '", type, "' is not a JSON Schema type"));
  }

  absl::StatusOr<NodeP> Object(const Json& s, const std::string& path, int depth) {
    std::vector<std::string> none;
    absl::flat_hash_set<std::string> required;
    if (auto it = s.find("required"); it != s.end()) {
      if (!it->is_array()) return Error(path + "/required", "'required' must be an array of strings");
      for (const Json& r : *it) {
        if (!r.is_string()) return Error(path + "/required", "'required' must be an array of strings");
        required.insert(r.get<std::string>());
      }
    }
    auto props = s.find("properties");
    if (props == s.end() || (props->is_object() && props->empty())) {
      if (!required.empty()) return Error(path + "/required", "a required property is not declared in 'properties'");
      // Members follow additionalProperties.
      NodeP value = AnyValue(o_.any_value_depth);
      if (auto ap = s.find("additionalProperties"); ap != s.end()) {
        auto n = Compile(*ap, path + "/additionalProperties", depth + 1, none);
        if (!n.ok()) return n;
        value = *n;
      }
      return Concat({Lit("{"), Optional(SepList(Concat({AnyString(), Colon(), value}), Comma())), Lit("}")});
    }
    if (!props->is_object()) return Error(path + "/properties", "'properties' must be an object");
    if (static_cast<int>(props->size()) > o_.max_properties) {
      return Error(path + "/properties", absl::StrCat("more than ", o_.max_properties, " properties"));
    }
    if (auto ap = s.find("additionalProperties"); ap != s.end() && !ap->is_boolean()) {
      // Only declared members are produced; the schema is still checked.
      auto n = Compile(*ap, path + "/additionalProperties", depth + 1, none);
      if (!n.ok()) return n;
    }
    struct Member {
      NodeP node;
      bool required;
    };
    std::vector<Member> members;
    for (auto it = props->begin(); it != props->end(); ++it) {
      auto v = Compile(it.value(), path + "/properties/" + it.key(), depth + 1, none);
      if (!v.ok()) return v;
      const bool req = required.erase(it.key()) > 0;
      if (IsNever(*v) && req) return Never();  // a required member with no finite value
      members.push_back({Concat({Lit(Json(it.key()).dump()), Colon(), *v}), req});
    }
    if (!required.empty()) {
      return Error(path + "/required",
                   absl::StrCat("required property '", *required.begin(), "' is not declared in 'properties'"));
    }
    // Members i.. given that one was already written (with_prev: each
    // starts with a comma) or not (without_prev), built from the back.
    NodeP with_prev = Empty(), without_prev = Empty();
    for (size_t i = members.size(); i-- > 0;) {
      const Member& m = members[i];
      // Linear in the members for with_prev, quadratic for without_prev
      // (each optional member either starts the list or not).
      const NodeP wo = Concat({m.node, with_prev});
      if (m.required) {
        with_prev = Concat({Comma(), m.node, with_prev});
        without_prev = wo;
      } else {
        without_prev = Alt({wo, without_prev});
        with_prev = Concat({Optional(Concat({Comma(), m.node})), with_prev});
      }
    }
    return Concat({Lit("{"), without_prev, Lit("}")});
  }

  const Json& root_;
  const JsonSchemaOptions& o_;
  absl::flat_hash_map<std::string, int> active_;
  std::string cut_ref_;
};

}  // namespace

absl::StatusOr<NodeP> JsonSchemaToRegex(const Json& schema, const JsonSchemaOptions& options) {
  Compiler c(schema, options);
  std::vector<std::string> bare;
  auto n = c.Compile(schema, "", 0, bare);
  if (!n.ok()) return n;
  if (IsNever(*n)) {
    if (!c.cut_ref().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("schema: the recursion through '$ref' '", c.cut_ref(),
                                                     "' never ends in a finite value (no optional or empty base case)"));
    }
    return absl::InvalidArgumentError("schema: no JSON value satisfies it");
  }
  return n;
}

NodeP AnyJsonObject(int depth) {
  const NodeP inner = AnyValue(std::max(0, depth - 1));
  return Concat({Lit("{"), Optional(SepList(Concat({AnyString(), Colon(), inner}), Comma())), Lit("}")});
}

}  // namespace tessera::structured
