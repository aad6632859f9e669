#include "worker/structured/json_schema.h"

#include <array>
#include <cmath>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"
#include "worker/structured/dfa.h"

namespace tessera::structured {
namespace {

using Json = nlohmann::ordered_json;  // declared key order kept

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
        "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "prefixItems", "minProperties",
        "maxProperties"};
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
      bool siblings = false;
      for (auto k = s.begin(); k != s.end(); ++k) {
        siblings |= k.key() != kw && k.key() != "$defs" && k.key() != "definitions" && !kAnnotations.contains(k.key());
      }
      if (std::string(kw) == "allOf" && (it->size() > 1 || siblings)) {
        // Object schemas only: merged into one object schema.
        auto merged = MergeAllOf(s, path, depth);
        if (!merged.ok()) return merged.status();
        std::vector<std::string> none;
        return Compile(*merged, path + "/allOf", depth + 1, none);
      }
      for (auto k = s.begin(); k != s.end(); ++k) {
        if (k.key() != kw && k.key() != "$defs" && k.key() != "definitions" && !kAnnotations.contains(k.key())) {
          return Error(path, absl::StrCat("'", kw, "' beside '", k.key(), "' is not supported"));
        }
      }
      if (std::string(kw) == "oneOf") {
        // oneOf is exact only when no value can match two branches: each
        // pair must be provably exclusive (see Exclusive), or it is refused.
        for (size_t i = 0; i < it->size(); ++i) {
          for (size_t j = i + 1; j < it->size(); ++j) {
            if (!Exclusive((*it)[i], (*it)[j])) {
              return Error(path + "/oneOf",
                           absl::StrCat("branches ", i, " and ", j,
                                        " may both match the same value, and Tessera compiles 'oneOf' only when its "
                                        "branches are provably exclusive (different types, disjoint const/enum "
                                        "values, a property required by both whose const/enum values differ or "
                                        "that one forbids, or non-overlapping numeric bounds); use 'anyOf' if a "
                                        "value may match several"));
            }
          }
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
      if (s.contains("properties") || s.contains("additionalProperties") || s.contains("required") ||
          s.contains("minProperties") || s.contains("maxProperties")) {
        return Typed("object", s, path, depth, fresh);
      }
      if (s.contains("items") || s.contains("prefixItems") || s.contains("minItems") || s.contains("maxItems")) {
        return Typed("array", s, path, depth, fresh);
      }
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
    const Json* target = RefTarget(r);
    if (target == nullptr) {
      return Error(path + "/$ref", absl::StrCat("'$ref' '", EscapeForMessage(r),
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
      if (f != s.end() && p != s.end()) return Error(path, "combining 'format' and 'pattern' is not supported");
      auto mn = Count(s, "minLength", path, 0);
      if (!mn.ok()) return mn.status();
      auto mx = Count(s, "maxLength", path, -1);
      if (!mx.ok()) return mx.status();
      if (*mx >= 0 && *mx < *mn) return Error(path, "'maxLength' is below 'minLength'");
      NodeP body;  // the string's contents as JSON writes them
      std::string what;
      if (f != s.end()) {
        if (!f->is_string()) return Error(path + "/format", "'format' must be a string");
        auto n = Format(f->get<std::string>());
        if (!n.ok()) return Error(path + "/format", std::string(n.status().message()));
        body = *n;
        what = "'format'";
      } else if (p != s.end()) {
        if (!p->is_string()) return Error(path + "/pattern", "'pattern' must be a string");
        auto re = ParseRegex(p->get<std::string>());
        if (!re.ok()) return Error(path + "/pattern", std::string(re.status().message()));
        const NodeP any = Repeat(Chars({{0, 0x10FFFF}}), 0, -1);
        body = ForJsonString(Concat({re->anchored_start ? Empty() : any, re->root, re->anchored_end ? Empty() : any}));
        what = "'pattern'";
      } else {
        return Quoted(Repeat(JsonChar(), *mn, *mx));
      }
      if (!lengths) return Quoted(body);
      // Both: the product of the form's automaton with a character counter
      // (escapes and UTF-8 sequences count one character each).
      auto bounded = WithLengthBound(body, static_cast<int>(*mn), static_cast<int>(*mx), o_.max_length_states,
                                     o_.deadline);
      if (!bounded.ok()) {
        return Error(path, absl::StrCat(what, " with 'minLength'/'maxLength': ", bounded.status().message()));
      }
      return Quoted(*bounded);
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
      if (auto pi = s.find("prefixItems"); pi != s.end()) {
        if (!pi->is_array() || pi->empty()) return Error(path + "/prefixItems", "'prefixItems' must be a non-empty array");
        if (static_cast<int>(pi->size()) > o_.max_properties) {
          return Error(path + "/prefixItems", absl::StrCat("more than ", o_.max_properties, " 'prefixItems'"));
        }
        std::vector<NodeP> prefix;
        for (size_t i = 0; i < pi->size(); ++i) {
          std::vector<std::string> none;
          auto n = Compile((*pi)[i], absl::StrCat(path, "/prefixItems/", i), depth + 1, none);
          if (!n.ok()) return n;
          prefix.push_back(*n);
        }
        return PrefixArray(prefix, item, *mn, *mx);
      }
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
    auto min_props = Count(s, "minProperties", path, 0);
    if (!min_props.ok()) return min_props.status();
    auto max_props = Count(s, "maxProperties", path, -1);
    if (!max_props.ok()) return max_props.status();
    if (*max_props >= 0 && *max_props < *min_props) return Error(path, "'maxProperties' is below 'minProperties'");
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
      const NodeP member = Concat({AnyString(), Colon(), value});
      if (*min_props == 0 && *max_props < 0) {
        return Concat({Lit("{"), Optional(SepList(member, Comma())), Lit("}")});
      }
      // Member names are free here, so a count bound is a repeat bound. The
      // names are not kept distinct (not a regular language), and a
      // repeated name parses as one member: so at most one is demanded.
      if (*min_props > 1) {
        return Error(path + "/minProperties",
                     "'minProperties' above 1 needs the members declared in 'properties' (free member names are "
                     "not kept distinct)");
      }
      if (*max_props == 0) return Lit("{}");
      const NodeP list = Concat({member, Repeat(Concat({Comma(), member}), std::max(*min_props, 1) - 1,
                                                *max_props < 0 ? -1 : *max_props - 1)});
      return Concat({Lit("{"), *min_props == 0 ? Optional(list) : list, Lit("}")});
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
    int n_required = 0;
    for (const Member& m : members) n_required += m.required;
    const int n_optional = static_cast<int>(members.size()) - n_required;
    // Optional members to include: [k_min, k_max] (k_max < 0: any number).
    const int k_min = std::max(0, *min_props - n_required);
    const int k_max = *max_props < 0 ? -1 : *max_props - n_required;
    if (k_max >= 0 && k_max < k_min) return Never();
    if (k_min > n_optional) {
      return Error(path, absl::StrCat("'minProperties' ", *min_props, " exceeds the ",
                                      members.size(), " declared properties (only declared properties are produced)"));
    }
    if (k_min > 0 || (k_max >= 0 && k_max < n_optional)) return CountedMembers(members, k_min, k_max);
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

  struct Member {
    NodeP node;
    bool required;
  };

  // Members in order with between k_min and k_max (-1: no bound) of the
  // optional ones: memoized on (member, optional ones taken, any written),
  // the count capped where it stops mattering. Only used when a bound
  // binds, since the tree grows with the number of ways to choose.
  static NodeP CountedMembers(const std::vector<Member>& members, int k_min, int k_max) {
    const int cap = k_max >= 0 ? k_max : k_min;
    const int n = static_cast<int>(members.size());
    // memo[i][k][w]: members i.. with k optional taken so far (<= cap), w:
    // a member was written (the next one needs a comma).
    std::vector<std::vector<std::array<NodeP, 2>>> memo(n + 1, std::vector<std::array<NodeP, 2>>(cap + 1));
    for (int i = n; i >= 0; --i) {
      for (int k = 0; k <= cap; ++k) {
        for (int w = 0; w < 2; ++w) {
          if (i == n) {
            memo[i][k][w] = k >= k_min ? Empty() : Never();
            continue;
          }
          const Member& m = members[i];
          const NodeP item = w ? Concat({Comma(), m.node}) : m.node;
          if (m.required) {
            memo[i][k][w] = Concat({item, memo[i + 1][k][1]});
            continue;
          }
          // Past the cap (no upper bound), more optional members change nothing.
          const int taken = k + 1;
          NodeP with;
          if (taken <= cap) {
            with = Concat({item, memo[i + 1][taken][1]});
          } else {
            with = k_max >= 0 ? Never() : Concat({item, memo[i + 1][cap][1]});
          }
          memo[i][k][w] = Alt({with, memo[i + 1][k][w]});
        }
      }
    }
    const NodeP body = memo[0][0][0];
    if (IsNever(body)) return Never();
    return Concat({Lit("{"), body, Lit("}")});
  }

  // An array whose item i < prefix.size() follows prefix[i] and whose later
  // items follow `rest`, with [mn, mx] items (mx < 0: unbounded).
  static NodeP PrefixArray(const std::vector<NodeP>& prefix, const NodeP& rest, int mn, int mx) {
    const int k = static_cast<int>(prefix.size());
    // Tail(i): the items after the first i (i >= 1), each after a comma.
    // Built from the back; each level is referenced once, so the tree stays
    // linear in k.
    NodeP tail = Repeat(Concat({Comma(), rest}), std::max(0, mn - k), mx < 0 ? -1 : std::max(0, mx - k));
    if (mx >= 0 && mx <= k) tail = Empty();
    for (int i = k - 1; i >= 1; --i) {
      if (mx >= 0 && i >= mx) {
        tail = Empty();
        continue;
      }
      const NodeP more = Concat({Comma(), prefix[i], tail});
      tail = i >= mn ? Optional(more) : more;
    }
    if (mx == 0) return Lit("[]");
    const NodeP first = Concat({prefix[0], tail});
    const NodeP body = mn == 0 ? Optional(first) : first;
    if (IsNever(body)) return Never();
    return Concat({Lit("["), body, Lit("]")});
  }

  // Follows $ref (within the document) to the schema it names; the schema
  // itself otherwise, or when the chain is longer than 16 or unresolved.
  const Json& Resolve(const Json& s) const {
    const Json* cur = &s;
    for (int hops = 0; hops < 16 && cur->is_object(); ++hops) {
      auto r = cur->find("$ref");
      if (r == cur->end() || !r->is_string()) break;
      const Json* t = RefTarget(r->get<std::string>());
      if (t == nullptr) break;
      cur = t;
    }
    return *cur;
  }

  const Json* RefTarget(const std::string& r) const {
    if (r == "#") return &root_;
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      if (r.rfind(prefix, 0) != 0) continue;
      const std::string key = r.substr(std::string(prefix).size());
      const std::string container = std::string(prefix).substr(2, std::string(prefix).size() - 3);
      auto defs = root_.find(container);
      if (defs != root_.end() && defs->is_object()) {
        auto t = defs->find(key);
        if (t != defs->end()) return &*t;
      }
    }
    return nullptr;
  }

  // JSON types as bits; an integral number is kInt, any other kFrac.
  enum : int { kNull = 1, kBool = 2, kObj = 4, kArr = 8, kStr = 16, kInt = 32, kFrac = 64, kAll = 127 };

  static int TypeOfValue(const Json& v) {
    if (v.is_null()) return kNull;
    if (v.is_boolean()) return kBool;
    if (v.is_object()) return kObj;
    if (v.is_array()) return kArr;
    if (v.is_string()) return kStr;
    if (v.is_number_integer() || v.is_number_unsigned()) return kInt;
    const double d = v.get<double>();
    return d == std::floor(d) ? kInt : kFrac;
  }

  // The types a value valid against `s` can have (a superset; kAll when
  // unknown).
  int ValidTypes(const Json& schema, int depth = 0) const {
    if (depth > 16) return kAll;
    const Json& s = Resolve(schema);
    if (s.is_boolean()) return s.get<bool>() ? kAll : 0;
    if (!s.is_object()) return kAll;
    if (s.contains("$ref")) return kAll;  // unresolved
    if (auto c = s.find("const"); c != s.end()) return TypeOfValue(*c);
    if (auto e = s.find("enum"); e != s.end() && e->is_array()) {
      int t = 0;
      for (const Json& v : *e) t |= TypeOfValue(v);
      return t;
    }
    int t = kAll;
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (auto it = s.find(kw); it != s.end() && it->is_array()) {
        int u = 0;
        for (const Json& b : *it) u |= ValidTypes(b, depth + 1);
        t &= u;
      }
    }
    if (auto it = s.find("allOf"); it != s.end() && it->is_array()) {
      for (const Json& b : *it) t &= ValidTypes(b, depth + 1);
    }
    if (auto ty = s.find("type"); ty != s.end()) {
      int u = 0;
      auto one = [&](const Json& n) -> int {
        if (!n.is_string()) return kAll;
        const std::string x = n.get<std::string>();
        return x == "null" ? kNull : x == "boolean" ? kBool : x == "object" ? kObj : x == "array" ? kArr
             : x == "string" ? kStr : x == "integer" ? kInt : x == "number" ? (kInt | kFrac) : kAll;
      };
      if (ty->is_array()) {
        for (const Json& n : *ty) u |= one(n);
      } else {
        u = one(*ty);
      }
      t &= u;
    }
    return t;
  }

  // The values `s` allows when it lists them (const or enum), else none.
  std::optional<std::vector<Json>> Values(const Json& schema) const {
    const Json& s = Resolve(schema);
    if (!s.is_object()) return std::nullopt;
    if (auto c = s.find("const"); c != s.end()) return std::vector<Json>{*c};
    if (auto e = s.find("enum"); e != s.end() && e->is_array()) return std::vector<Json>(e->begin(), e->end());
    return std::nullopt;
  }

  static bool Requires(const Json& s, const std::string& p) {
    auto r = s.find("required");
    if (r == s.end() || !r->is_array()) return false;
    for (const Json& x : *r) {
      if (x.is_string() && x.get<std::string>() == p) return true;
    }
    return false;
  }

  // `s` (an object schema) admits no member named p.
  bool Forbids(const Json& s, const std::string& p) const {
    auto props = s.find("properties");
    if (props != s.end() && props->is_object()) {
      auto it = props->find(p);
      if (it != props->end()) return ValidTypes(*it) == 0;
    }
    auto ap = s.find("additionalProperties");
    return ap != s.end() && ap->is_boolean() && !ap->get<bool>();
  }

  // [lo, hi] of a numeric schema's bounds (infinite when unset), with
  // whether each end is exclusive.
  struct Interval {
    double lo = -INFINITY, hi = INFINITY;
    bool lo_open = false, hi_open = false;
  };
  static Interval Bounds(const Json& s) {
    Interval iv;
    auto num = [&](const char* k) -> std::optional<double> {
      auto it = s.find(k);
      if (it == s.end() || !it->is_number()) return std::nullopt;
      return it->get<double>();
    };
    if (auto v = num("minimum")) iv.lo = *v;
    if (auto v = num("exclusiveMinimum"); v && *v >= iv.lo) iv.lo = *v, iv.lo_open = true;
    if (auto v = num("maximum")) iv.hi = *v;
    if (auto v = num("exclusiveMaximum"); v && *v <= iv.hi) iv.hi = *v, iv.hi_open = true;
    return iv;
  }

  // The oneOf rule: true only when no JSON value can validate against both
  // `a` and `b`, proven by one of: (1) no type in common; (2) both list
  // their values (const/enum) and share none; (3) their only common type is
  // object and some property is required by both with disjoint listed
  // values, or required by one and forbidden by the other; (4) their only
  // common types are numbers and their bounds do not overlap. Anything else
  // counts as overlapping (refused), never guessed.
  bool Exclusive(const Json& a_in, const Json& b_in) const {
    const int common = ValidTypes(a_in) & ValidTypes(b_in);
    if (common == 0) return true;
    const Json& a = Resolve(a_in);
    const Json& b = Resolve(b_in);
    auto va = Values(a), vb = Values(b);
    if (va && vb) {
      for (const Json& x : *va) {
        for (const Json& y : *vb) {
          if (x == y) return false;
        }
      }
      return true;
    }
    if (!a.is_object() || !b.is_object()) return false;
    if (common == kObj) {
      auto props = [](const Json& s) {
        auto it = s.find("properties");
        return it != s.end() && it->is_object() ? *it : Json::object();
      };
      const Json pa = props(a), pb = props(b);
      auto required_names = [](const Json& s) {
        std::vector<std::string> out;
        if (auto r = s.find("required"); r != s.end() && r->is_array()) {
          for (const Json& x : *r) {
            if (x.is_string()) out.push_back(x.get<std::string>());
          }
        }
        return out;
      };
      for (const std::string& p : required_names(a)) {
        if (Forbids(b, p)) return true;
        if (!Requires(b, p) || !pa.contains(p) || !pb.contains(p)) continue;
        if (Exclusive(pa[p], pb[p])) return true;
      }
      for (const std::string& p : required_names(b)) {
        if (Forbids(a, p)) return true;
      }
      return false;
    }
    if ((common & ~(kInt | kFrac)) == 0) {
      const Interval x = Bounds(a), y = Bounds(b);
      auto below = [](const Interval& u, const Interval& v) {
        return u.hi < v.lo || (u.hi == v.lo && (u.hi_open || v.lo_open));
      };
      return below(x, y) || below(y, x);
    }
    return false;
  }

  // allOf of object schemas (and the object keywords beside it) as one
  // object schema: properties in first-declared order (one declared twice
  // must be the same schema), required and min/max bounds combined, and a
  // property produced only where every part admits it (a part with
  // additionalProperties false admits its declared properties only).
  absl::StatusOr<Json> MergeAllOf(const Json& s, const std::string& path, int depth) const {
    static const absl::flat_hash_set<std::string> kObjectKeys = {
        "type", "properties", "required", "additionalProperties", "minProperties", "maxProperties", "allOf",
        "$defs", "definitions", "title", "description", "default", "examples", "$schema", "$id", "$comment",
        "deprecated", "readOnly", "writeOnly"};
    std::vector<std::pair<const Json*, std::string>> parts;
    std::vector<std::pair<const Json*, std::string>> todo = {{&s, path}};
    while (!todo.empty()) {
      auto [cur, where] = todo.back();
      todo.pop_back();
      if (parts.size() + todo.size() > static_cast<size_t>(o_.max_properties) || depth + static_cast<int>(parts.size()) > 4 * o_.max_depth) {
        return Error(path + "/allOf", "'allOf' has too many parts");
      }
      const Json& part = Resolve(*cur);
      if (!part.is_object()) return Error(where, "a multi-schema 'allOf' is supported for object schemas only");
      for (auto k = part.begin(); k != part.end(); ++k) {
        if (!kObjectKeys.contains(k.key())) {
          return Error(where, absl::StrCat("a multi-schema 'allOf' is supported for object schemas only (this part has '",
                                           k.key(), "')"));
        }
      }
      if (auto t = part.find("type"); t != part.end() && *t != "object") {
        return Error(where + "/type", "a multi-schema 'allOf' is supported for object schemas only");
      }
      if (auto ap = part.find("additionalProperties"); ap != part.end() && !ap->is_boolean()) {
        return Error(where + "/additionalProperties",
                     "'additionalProperties' as a schema inside a multi-schema 'allOf' is not supported");
      }
      parts.push_back({&part, where});
      if (auto all = part.find("allOf"); all != part.end()) {
        if (!all->is_array() || all->empty()) return Error(where + "/allOf", "'allOf' must be a non-empty array");
        for (size_t i = all->size(); i-- > 0;) todo.push_back({&(*all)[i], absl::StrCat(where, "/allOf/", i)});
      }
    }
    Json props = Json::object();
    std::vector<std::string> order;
    Json required = Json::array();
    std::optional<int64_t> min_p, max_p;
    for (const auto& [part, where] : parts) {
      if (auto p = part->find("properties"); p != part->end()) {
        if (!p->is_object()) return Error(where + "/properties", "'properties' must be an object");
        for (auto it = p->begin(); it != p->end(); ++it) {
          if (!props.contains(it.key())) {
            props[it.key()] = it.value();
            order.push_back(it.key());
          } else if (props[it.key()] != it.value()) {
            return Error(where + "/properties/" + it.key(),
                         "a property declared with different schemas by two 'allOf' parts is not supported");
          }
        }
      }
      if (auto r = part->find("required"); r != part->end()) {
        if (!r->is_array()) return Error(where + "/required", "'required' must be an array of strings");
        for (const Json& x : *r) {
          if (std::find(required.begin(), required.end(), x) == required.end()) required.push_back(x);
        }
      }
      for (const char* k : {"minProperties", "maxProperties"}) {
        auto it = part->find(k);
        if (it == part->end()) continue;
        if (!it->is_number_integer() || it->get<int64_t>() < 0) {
          return Error(where + "/" + k, absl::StrCat("'", k, "' must be a non-negative integer"));
        }
        const int64_t v = it->get<int64_t>();
        if (k[1] == 'i') {
          min_p = min_p ? std::max(*min_p, v) : v;
        } else {
          max_p = max_p ? std::min(*max_p, v) : v;
        }
      }
    }
    Json merged = {{"type", "object"}};
    Json kept = Json::object();
    for (const std::string& name : order) {
      bool admitted = true;
      for (const auto& [part, where] : parts) {
        auto ap = part->find("additionalProperties");
        auto p = part->find("properties");
        if (ap != part->end() && *ap == false && (p == part->end() || !p->contains(name))) admitted = false;
      }
      const bool req = std::find(required.begin(), required.end(), Json(name)) != required.end();
      if (!admitted && req) {
        return Error(path + "/allOf", absl::StrCat("required property '", name,
                                                  "' is forbidden by another part (additionalProperties false)"));
      }
      if (admitted) kept[name] = props[name];
    }
    merged["properties"] = kept;
    merged["required"] = required;
    merged["additionalProperties"] = false;
    if (min_p) merged["minProperties"] = *min_p;
    if (max_p) merged["maxProperties"] = *max_p;
    return merged;
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
