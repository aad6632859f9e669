#include "worker/chat/jinja_builtins.h"

#include <cmath>
#include <cstdlib>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tessera::jinja {

absl::Status RenderError(int line, std::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("chat template line ", line, ": ", std::string(msg)));
}

Value Part(const Value& v, size_t from, size_t len) {
  TextBuilder b;
  b.AppendPart(v, from, len);
  return std::move(b).Build();
}

bool AnyUntrusted(const CallArgs& args) {
  for (const Value& v : args.positional) if (v.AnyUntrusted()) return true;
  for (const auto& [k, v] : args.keyword) if (v.AnyUntrusted()) return true;
  return false;
}

namespace {

// ---- string helpers ---------------------------------------------------------

// The part of `s` that Python's strip() keeps: [first, second).
std::pair<size_t, size_t> StripBounds(const std::string& s, const std::string* chars, bool left, bool right) {
  auto strip = [&](char c) {
    return chars ? chars->find(c) != std::string::npos : std::isspace(static_cast<unsigned char>(c)) != 0;
  };
  size_t b = 0, e = s.size();
  if (left) while (b < e && strip(s[b])) ++b;
  if (right) while (e > b && strip(s[e - 1])) --e;
  return {b, e};
}

Value Strip(const Value& v, const std::string* chars, bool left, bool right) {
  const Value s = v.is_string() ? v : Value::WithProvenance(v.Str(), {});
  const auto [b, e] = StripBounds(s.as_string(), chars, left, right);
  if (v.is_string()) return Part(s, b, e - b);
  TextBuilder out;
  out.Append(std::string_view(s.as_string()).substr(b, e - b), v.AnyUntrusted());
  return std::move(out).Build();
}

std::string Title(const std::string& s, bool only_first) {
  std::string out = s;
  bool start = true;
  for (size_t i = 0; i < out.size(); ++i) {
    unsigned char c = out[i];
    if (only_first) {
      out[i] = i == 0 ? absl::ascii_toupper(c) : absl::ascii_tolower(c);
      continue;
    }
    if (std::isalpha(c)) {
      out[i] = start ? absl::ascii_toupper(c) : absl::ascii_tolower(c);
      start = false;
    } else {
      start = true;
    }
  }
  return out;
}

// Python's str.replace; refuses (before building it) a result that would
// not fit the render's value budget.
absl::StatusOr<std::string> ReplaceAllPy(const std::string& s, const std::string& from, const std::string& to,
                                         const BuiltinCall& call) {
  if (from.empty()) return s;
  size_t count = 0;
  for (size_t j = s.find(from); j != std::string::npos; j = s.find(from, j + from.size())) ++count;
  if (to.size() > from.size() &&
      (count > (SIZE_MAX - s.size()) / (to.size() - from.size()) ||
       !AllocationBudget::Fits(s.size() + count * (to.size() - from.size())))) {
    return call.host->MemoryError(call.line);
  }
  std::string out;
  out.reserve(s.size() - count * from.size() + count * to.size());
  size_t i = 0;
  while (true) {
    size_t j = s.find(from, i);
    if (j == std::string::npos) break;
    out.append(s, i, j - i);
    out.append(to);
    i = j + from.size();
  }
  out.append(s, i);
  return out;
}

const std::string* StrArg(const CallArgs& a, size_t i) {
  return i < a.positional.size() && a.positional[i].is_string() ? &a.positional[i].as_string() : nullptr;
}

// A keyword argument by name, else the positional one at `pos`.
const Value* Kw(const CallArgs& args, std::string_view k, size_t pos) {
  for (auto& [name, val] : args.keyword) if (name == k) return &val;
  return pos < args.positional.size() ? &args.positional[pos] : nullptr;
}

// ---- filters ----------------------------------------------------------------
// Filters that keep provenance exactly build their strings with
// TextBuilder/Part; for the rest, the interpreter marks new strings from
// their inputs (Inherit).

absl::StatusOr<Value> FTrim(const Value& v, const CallArgs&, const BuiltinCall&) {
  return Strip(v, nullptr, true, true);
}
absl::StatusOr<Value> FUpper(const Value& v, const CallArgs&, const BuiltinCall&) {
  return Value(absl::AsciiStrToUpper(v.Str()));
}
absl::StatusOr<Value> FLower(const Value& v, const CallArgs&, const BuiltinCall&) {
  return Value(absl::AsciiStrToLower(v.Str()));
}
absl::StatusOr<Value> FTitle(const Value& v, const CallArgs&, const BuiltinCall&) { return Value(Title(v.Str(), false)); }
absl::StatusOr<Value> FCapitalize(const Value& v, const CallArgs&, const BuiltinCall&) {
  return Value(Title(v.Str(), true));
}

absl::StatusOr<Value> FString(const Value& v, const CallArgs&, const BuiltinCall&) {
  TextBuilder out;
  out.AppendValue(v);
  return std::move(out).Build();
}

absl::StatusOr<Value> FSafe(const Value& v, const CallArgs&, const BuiltinCall&) { return v; }

absl::StatusOr<Value> FEscape(const Value& v, const CallArgs&, const BuiltinCall& call) {
  const std::string in = v.Str();
  std::string out;
  for (char c : in) {
    if ((out.size() & 4095) == 0 && !AllocationBudget::Fits(out.size())) return call.host->MemoryError(call.line);
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return Value(out);
}

absl::StatusOr<Value> FLength(const Value& v, const CallArgs&, const BuiltinCall& call) {
  if (v.is_string()) return Value(static_cast<int64_t>(v.as_string().size()));
  if (v.is_list()) return Value(static_cast<int64_t>(v.list().size()));
  if (v.is_dict()) return Value(static_cast<int64_t>(v.dict().size()));
  if (v.is_undefined()) return Value(int64_t{0});
  return RenderError(call.line, absl::StrCat("object of type ", v.TypeName(), " has no length"));
}

absl::StatusOr<Value> FToJson(const Value& v, const CallArgs& args, const BuiltinCall&) {
  int indent = -1;
  if (const Value* i = Kw(args, "indent", 0); i && i->is_int()) {
    indent = static_cast<int>(std::clamp<int64_t>(i->as_int(), 0, 16));
  }
  TESSERA_ASSIGN_OR_RETURN(std::string j, v.ToJson(indent));
  return Value(j);
}

// first, last.
absl::StatusOr<Value> FFirstLast(const Value& v, const CallArgs&, const BuiltinCall& call) {
  const bool first = call.name == "first";
  if (v.is_list()) {
    if (v.list().empty()) return Value();
    return first ? v.list().front() : v.list().back();
  }
  if (v.is_string()) {
    if (v.as_string().empty()) return Value();
    return Part(v, first ? 0 : v.as_string().size() - 1, 1);
  }
  return RenderError(call.line, absl::StrCat("cannot take ", std::string(call.name), " of ", v.TypeName()));
}

absl::StatusOr<Value> FJoin(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  const Value* sep = Kw(args, "d", 0);
  const Value s = sep && sep->is_string() ? *sep : Value(std::string());
  const Value* attr = Kw(args, "attribute", 1);
  if (!v.is_list()) return RenderError(call.line, "join needs a list");
  TextBuilder out;
  for (size_t i = 0; i < v.list().size(); ++i) {
    if (!AllocationBudget::Fits(out.size())) return call.host->MemoryError(call.line);
    if (i) out.AppendValue(s);
    const Value& item = v.list()[i];
    if (attr && attr->is_string() && item.is_dict()) {
      if (const Value* a = item.Find(attr->as_string())) out.AppendValue(*a);
    } else {
      out.AppendValue(item);
    }
  }
  return std::move(out).Build();
}

absl::StatusOr<Value> FDefault(const Value& v, const CallArgs& args, const BuiltinCall&) {
  const Value* def = Kw(args, "default_value", 0);
  const Value* boolean = Kw(args, "boolean", 1);
  const bool use = v.is_undefined() || (boolean && boolean->Truthy() && !v.Truthy());
  return use ? (def ? *def : Value(std::string())) : v;
}

absl::StatusOr<Value> FInt(const Value& v, const CallArgs&, const BuiltinCall&) {
  if (v.is_number()) return Value(static_cast<int64_t>(v.as_double()));
  if (v.is_string()) {
    try { return Value(static_cast<int64_t>(std::stoll(v.as_string()))); } catch (...) { return Value(int64_t{0}); }
  }
  return Value(int64_t{0});
}

absl::StatusOr<Value> FFloat(const Value& v, const CallArgs&, const BuiltinCall&) {
  if (v.is_number()) return Value(v.as_double());
  if (v.is_string()) {
    try { return Value(std::stod(v.as_string())); } catch (...) { return Value(0.0); }
  }
  return Value(0.0);
}

absl::StatusOr<Value> FAbs(const Value& v, const CallArgs&, const BuiltinCall& call) {
  if (!v.is_number()) return RenderError(call.line, "abs needs a number");
  return v.kind() == Value::Kind::kFloat ? Value(std::fabs(v.as_double()))
                                         : Value(static_cast<int64_t>(std::llabs(v.as_int())));
}

absl::StatusOr<Value> FRound(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  if (!v.is_number()) return RenderError(call.line, "round needs a number");
  const Value* prec = Kw(args, "precision", 0);
  const double p = std::pow(10.0, prec && prec->is_int() ? std::clamp<int64_t>(prec->as_int(), 0, 15) : 0);
  return Value(std::nearbyint(v.as_double() * p) / p);
}

absl::StatusOr<Value> FList(const Value& v, const CallArgs&, const BuiltinCall& call) {
  if (v.is_list()) return v;
  ValueList l;
  if (v.is_string() && !AllocationBudget::Fits(v.as_string().size() * sizeof(Value))) {
    return call.host->MemoryError(call.line);
  }
  if (v.is_string()) {
    for (size_t i = 0; i < v.as_string().size(); ++i) l.push_back(Part(v, i, 1));
  } else if (v.is_dict()) {
    for (auto& [k, x] : v.dict()) l.push_back(v.Key(k));
  }
  return Value::List(std::move(l));
}

absl::StatusOr<Value> FItems(const Value& v, const CallArgs&, const BuiltinCall& call) {
  if (!v.is_dict()) return RenderError(call.line, "items needs a mapping");
  ValueList l;
  for (const auto& [k, x] : v.dict()) l.push_back(Value::List({v.Key(k), x}));
  return Value::List(std::move(l));
}

absl::StatusOr<Value> FReverse(const Value& v, const CallArgs&, const BuiltinCall& call) {
  if (v.is_string()) {
    TextBuilder out;
    for (size_t i = v.as_string().size(); i-- > 0;) out.AppendPart(v, i, 1);
    return std::move(out).Build();
  }
  if (v.is_list()) return Value::List(ValueList(v.list().rbegin(), v.list().rend()));
  return RenderError(call.line, "reverse needs a list or string");
}

absl::StatusOr<Value> FReplace(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  const Value* from = Kw(args, "old", 0);
  const Value* to = Kw(args, "new", 1);
  if (!from || !to || !from->is_string() || !to->is_string()) return RenderError(call.line, "replace needs two strings");
  TESSERA_ASSIGN_OR_RETURN(std::string out, ReplaceAllPy(v.Str(), from->as_string(), to->as_string(), call));
  return Value(std::move(out));
}

// The tests selectattr and rejectattr take by name: `a` is the item's
// attribute, `args` the filter's (the test's operand is args[2]).
using AttrTestFn = bool (*)(const Value& a, const CallArgs& args);
struct AttrTest {
  std::string_view name;
  AttrTestFn fn;
};
bool AttrEq(const Value& a, const CallArgs& args) { return args.positional.size() > 2 && Equal(a, args.positional[2]); }
bool AttrNe(const Value& a, const CallArgs& args) { return args.positional.size() > 2 && !Equal(a, args.positional[2]); }
constexpr AttrTest kAttrTests[] = {
    {"defined", [](const Value& a, const CallArgs&) { return !a.is_undefined(); }},
    {"undefined", [](const Value& a, const CallArgs&) { return a.is_undefined(); }},
    {"none", [](const Value& a, const CallArgs&) { return a.is_none(); }},
    {"equalto", AttrEq},
    {"eq", AttrEq},
    {"==", AttrEq},
    {"ne", AttrNe},
    {"!=", AttrNe},
    {"string", [](const Value& a, const CallArgs&) { return a.is_string(); }},
    {"true", [](const Value& a, const CallArgs&) { return a.is_bool() && a.as_bool(); }},
    {"false", [](const Value& a, const CallArgs&) { return a.is_bool() && !a.as_bool(); }},
};
const AttrTest* FindAttrTest(std::string_view name) {
  for (const AttrTest& t : kAttrTests) if (t.name == name) return &t;
  return nullptr;
}

// selectattr, rejectattr.
absl::StatusOr<Value> FSelectAttr(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  const std::string f(call.name);
  if (!v.is_list()) return RenderError(call.line, absl::StrCat(f, " needs a list"));
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return RenderError(call.line, absl::StrCat(f, " needs an attribute name"));
  }
  const std::string attr = args.positional[0].as_string();
  const bool select = f == "selectattr";
  const bool has_test = args.positional.size() >= 2;
  const std::string test_name = has_test ? args.positional[1].Str() : "";
  const AttrTest* test = has_test ? FindAttrTest(test_name) : nullptr;
  ValueList l;
  for (const Value& item : v.list()) {
    // An unknown test fails on the first item (an empty list passes).
    if (has_test && test == nullptr) {
      return RenderError(call.line, absl::StrCat("unsupported construct: test '", test_name, "' in ", f));
    }
    Value a = item.is_dict() && item.Find(attr) ? *item.Find(attr) : Value();
    const bool pass = has_test ? test->fn(a, args) : a.Truthy();
    if (pass == select) l.push_back(item);
  }
  return Value::List(std::move(l));
}

// A string literal argument at `pos`, or nullptr.
const std::string* LiteralStringArg(const Expr& e, size_t pos) {
  if (pos >= e.items.size() || e.items[pos]->kind != Expr::Kind::kLiteral || !e.items[pos]->literal.is_string()) {
    return nullptr;
  }
  return &e.items[pos]->literal.as_string();
}

absl::Status CheckSelectAttr(const Expr& e) {
  const std::string* name = LiteralStringArg(e, 1);
  if (name == nullptr || FindAttrTest(*name) != nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("unsupported construct: test '", *name, "' in ", e.name));
}

// The filters map applies by name: one item at a time.
using MapFilterFn = absl::StatusOr<Value> (*)(const Value& item);
struct MapFilter {
  std::string_view name;
  MapFilterFn fn;
};
constexpr MapFilter kMapFilters[] = {
    {"string", [](const Value& x) -> absl::StatusOr<Value> { return Inherit(Value(x.Str()), x.AnyUntrusted()); }},
    {"lower",
     [](const Value& x) -> absl::StatusOr<Value> {
       return Inherit(Value(absl::AsciiStrToLower(x.Str())), x.AnyUntrusted());
     }},
    {"upper",
     [](const Value& x) -> absl::StatusOr<Value> {
       return Inherit(Value(absl::AsciiStrToUpper(x.Str())), x.AnyUntrusted());
     }},
    {"trim", [](const Value& x) -> absl::StatusOr<Value> { return Strip(x, nullptr, true, true); }},
    {"tojson",
     [](const Value& x) -> absl::StatusOr<Value> {
       TESSERA_ASSIGN_OR_RETURN(std::string j, x.ToJson(-1));
       return Inherit(Value(j), x.AnyUntrusted());
     }},
};
const MapFilter* FindMapFilter(std::string_view name) {
  for (const MapFilter& f : kMapFilters) if (f.name == name) return &f;
  return nullptr;
}

absl::StatusOr<Value> FMap(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  if (!v.is_list()) return RenderError(call.line, "map needs a list");
  const Value* attr = Kw(args, "attribute", 99);
  ValueList l;
  if (attr && attr->is_string()) {
    const Value* def = Kw(args, "default", 99);
    for (const Value& item : v.list()) {
      const Value* a = item.is_dict() ? item.Find(attr->as_string()) : nullptr;
      l.push_back(a ? *a : (def ? *def : Value()));
    }
    return Value::List(std::move(l));
  }
  if (!args.positional.empty() && args.positional[0].is_string()) {
    const std::string& fn = args.positional[0].as_string();
    const MapFilter* filter = FindMapFilter(fn);
    for (const Value& item : v.list()) {
      if (AllocationBudget::Exhausted()) return call.host->MemoryError(call.line);
      if (filter == nullptr) return RenderError(call.line, absl::StrCat("unsupported construct: map filter '", fn, "'"));
      TESSERA_ASSIGN_OR_RETURN(Value r, filter->fn(item));
      l.push_back(std::move(r));
    }
    return Value::List(std::move(l));
  }
  return RenderError(call.line, "map needs attribute= or a filter name");
}

// Sound only without an attribute= (which would take precedence at render).
absl::Status CheckMap(const Expr& e) {
  for (const auto& [k, x] : e.kwargs) if (k == "attribute") return absl::OkStatus();
  const std::string* name = LiteralStringArg(e, 0);
  if (name == nullptr || FindMapFilter(*name) != nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("unsupported construct: map filter '", *name, "'"));
}

absl::StatusOr<Value> FUnique(const Value& v, const CallArgs&, const BuiltinCall& call) {
  if (!v.is_list()) return RenderError(call.line, "unique needs a list");
  ValueList l;
  for (const Value& x : v.list()) {
    // Quadratic: each comparison is a step.
    TESSERA_RETURN_IF_ERROR(call.host->Step(call.line, static_cast<int64_t>(l.size()) + 1));
    if (std::none_of(l.begin(), l.end(), [&](const Value& y) { return Equal(x, y); })) l.push_back(x);
  }
  return Value::List(std::move(l));
}

absl::StatusOr<Value> FIndent(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  const Value* width = Kw(args, "width", 0);
  const int64_t w = width && width->is_int() ? std::clamp<int64_t>(width->as_int(), 0, 64) : 4;
  const Value* first = Kw(args, "first", 1);
  const std::string pad(static_cast<size_t>(w), ' ');
  std::string s = v.Str(), out;
  if (first && first->Truthy()) out += pad;
  for (size_t i = 0; i < s.size(); ++i) {
    out.push_back(s[i]);
    if (s[i] == '\n' && i + 1 < s.size() && s[i + 1] != '\n') {
      out += pad;
      if (!AllocationBudget::Fits(out.size())) return call.host->MemoryError(call.line);
    }
  }
  return Value(out);
}

constexpr FilterDef kFilters[] = {
    {"trim", FTrim},         {"strip", FTrim},
    {"upper", FUpper},       {"lower", FLower},
    {"title", FTitle},       {"capitalize", FCapitalize},
    {"string", FString},     {"safe", FSafe},
    {"e", FEscape},          {"escape", FEscape},
    {"forceescape", FEscape}, {"length", FLength},
    {"count", FLength},      {"tojson", FToJson},
    {"first", FFirstLast},   {"last", FFirstLast},
    {"join", FJoin},         {"default", FDefault},
    {"d", FDefault},         {"int", FInt},
    {"float", FFloat},       {"abs", FAbs},
    {"round", FRound},       {"list", FList},
    {"items", FItems},       {"reverse", FReverse},
    {"replace", FReplace},   {"selectattr", FSelectAttr, CheckSelectAttr},
    {"rejectattr", FSelectAttr, CheckSelectAttr},
    {"map", FMap, CheckMap}, {"unique", FUnique},
    {"indent", FIndent},
};

// ---- tests ------------------------------------------------------------------

template <bool (*kPredicate)(const Value&)>
absl::StatusOr<bool> Is(const Value& v, const CallArgs&, const BuiltinCall&) {
  return kPredicate(v);
}

// odd, even.
absl::StatusOr<bool> TParity(const Value& v, const CallArgs&, const BuiltinCall& call) {
  if (!v.is_int()) return RenderError(call.line, "odd/even needs an integer");
  return (v.as_int() % 2 != 0) == (call.name == "odd");
}

absl::StatusOr<bool> TDivisibleBy(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  if (!v.is_int() || args.positional.empty() || !args.positional[0].is_int() || args.positional[0].as_int() == 0) {
    return RenderError(call.line, "divisibleby needs integers");
  }
  return v.as_int() % args.positional[0].as_int() == 0;
}

// eq, equalto, sameas.
absl::StatusOr<bool> TEq(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  if (args.positional.empty()) {
    return RenderError(call.line, absl::StrCat("test '", std::string(call.name), "' needs an argument"));
  }
  return Equal(v, args.positional[0]);
}

absl::StatusOr<bool> TNe(const Value& v, const CallArgs& args, const BuiltinCall&) {
  return args.positional.empty() ? false : !Equal(v, args.positional[0]);
}

absl::StatusOr<bool> TIn(const Value& v, const CallArgs& args, const BuiltinCall& call) {
  if (args.positional.empty()) return RenderError(call.line, "test 'in' needs an argument");
  const Value& c = args.positional[0];
  if (c.is_list()) return std::any_of(c.list().begin(), c.list().end(), [&](const Value& x) { return Equal(v, x); });
  if (c.is_string() && v.is_string()) return c.as_string().find(v.as_string()) != std::string::npos;
  if (c.is_dict() && v.is_string()) return c.Find(v.as_string()) != nullptr;
  return false;
}

bool IsDefined(const Value& v) { return !v.is_undefined(); }
bool IsUndefined(const Value& v) { return v.is_undefined(); }
bool IsNone(const Value& v) { return v.is_none(); }
bool IsString(const Value& v) { return v.is_string(); }
bool IsNumber(const Value& v) { return v.is_number() && !v.is_bool(); }
bool IsInteger(const Value& v) { return v.kind() == Value::Kind::kInt; }
bool IsFloat(const Value& v) { return v.kind() == Value::Kind::kFloat; }
bool IsBoolean(const Value& v) { return v.is_bool(); }
bool IsTrue(const Value& v) { return v.is_bool() && v.as_bool(); }
bool IsFalse(const Value& v) { return v.is_bool() && !v.as_bool(); }
bool IsMapping(const Value& v) { return v.is_dict(); }
bool IsIterable(const Value& v) { return v.is_list() || v.is_dict() || v.is_string(); }
bool IsCallable(const Value& v) { return v.is_function(); }
bool IsLower(const Value& v) { return v.is_string() && absl::AsciiStrToLower(v.as_string()) == v.as_string(); }
bool IsUpper(const Value& v) { return v.is_string() && absl::AsciiStrToUpper(v.as_string()) == v.as_string(); }

constexpr TestDef kTests[] = {
    {"defined", Is<IsDefined>},   {"undefined", Is<IsUndefined>},
    {"none", Is<IsNone>},         {"string", Is<IsString>},
    {"number", Is<IsNumber>},     {"integer", Is<IsInteger>},
    {"float", Is<IsFloat>},       {"boolean", Is<IsBoolean>},
    {"true", Is<IsTrue>},         {"false", Is<IsFalse>},
    {"mapping", Is<IsMapping>},   {"iterable", Is<IsIterable>},
    {"sequence", Is<IsIterable>}, {"callable", Is<IsCallable>},
    {"odd", TParity},             {"even", TParity},
    {"divisibleby", TDivisibleBy}, {"eq", TEq},
    {"equalto", TEq},             {"sameas", TEq},
    {"ne", TNe},                  {"in", TIn},
    {"lower", Is<IsLower>},       {"upper", Is<IsUpper>},
};

// ---- methods ----------------------------------------------------------------

absl::StatusOr<Value> MDictItems(const Value& d, CallArgs&, const BuiltinCall&) {
  ValueList l;
  for (const auto& [k, v] : d.dict()) l.push_back(Value::List({d.Key(k), v}));
  return Value::List(std::move(l));
}

// keys, values.
absl::StatusOr<Value> MDictKeysValues(const Value& d, CallArgs&, const BuiltinCall& call) {
  const bool keys = call.name == "keys";
  ValueList l;
  for (const auto& [k, v] : d.dict()) l.push_back(keys ? d.Key(k) : v);
  return Value::List(std::move(l));
}

absl::StatusOr<Value> MDictGet(const Value& d, CallArgs& a, const BuiltinCall&) {
  if (a.positional.empty() || !a.positional[0].is_string()) return Value::None();
  const Value* v = d.Find(a.positional[0].as_string());
  if (v) return *v;
  return a.positional.size() > 1 ? a.positional[1] : Value::None();
}

absl::StatusOr<Value> MListAppend(const Value& l, CallArgs& a, const BuiltinCall& call) {
  for (auto& v : a.positional) {
    TESSERA_RETURN_IF_ERROR(call.host->RefuseCycle(l, v, call.line));
    l.Append(v);
  }
  return Value::None();
}

// strip, lstrip, rstrip.
absl::StatusOr<Value> MStrip(const Value& sv, CallArgs& a, const BuiltinCall& call) {
  return Strip(sv, StrArg(a, 0), call.name != "rstrip", call.name != "lstrip");
}

// upper, lower, title, capitalize: as the filters.
absl::StatusOr<Value> MCase(const Value& sv, CallArgs&, const BuiltinCall& call) {
  const std::string& s = sv.as_string();
  if (call.name == "upper") return Value(absl::AsciiStrToUpper(s));
  if (call.name == "lower") return Value(absl::AsciiStrToLower(s));
  return Value(Title(s, call.name == "capitalize"));
}

// startswith, endswith.
absl::StatusOr<Value> MStartsEnds(const Value& sv, CallArgs& a, const BuiltinCall& call) {
  const std::string& s = sv.as_string();
  const bool start = call.name == "startswith";
  if (a.positional.empty()) return RenderError(call.line, "startswith/endswith needs an argument");
  ValueList options = a.positional[0].is_list() ? a.positional[0].list() : ValueList{a.positional[0]};
  for (const Value& o : options) {
    if (!o.is_string()) continue;
    const std::string& p = o.as_string();
    if (start ? s.rfind(p, 0) == 0 : (s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0)) {
      return Value(true);
    }
  }
  return Value(false);
}

absl::StatusOr<Value> MSplit(const Value& sv, CallArgs& a, const BuiltinCall& call) {
  const std::string& s = sv.as_string();
  ValueList parts;
  // Many tiny parts cost a Value slot each: check while splitting.
  auto fits = [&] { return (parts.size() & 1023) != 0 || AllocationBudget::Fits(parts.size() * sizeof(Value)); };
  const std::string* sep = StrArg(a, 0);
  int64_t max_split = a.positional.size() > 1 && a.positional[1].is_int() ? a.positional[1].as_int() : -1;
  if (sep == nullptr) {
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
      if (i >= s.size()) break;
      size_t j = i;
      if (max_split == 0) { parts.push_back(Part(sv, i, s.size() - i)); break; }
      while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      parts.push_back(Part(sv, i, j - i));
      if (!fits()) return call.host->MemoryError(call.line);
      if (max_split > 0) --max_split;
      i = j;
    }
  } else if (!sep->empty()) {
    size_t i = 0;
    while (true) {
      size_t j = max_split == 0 ? std::string::npos : s.find(*sep, i);
      if (j == std::string::npos) { parts.push_back(Part(sv, i, s.size() - i)); break; }
      parts.push_back(Part(sv, i, j - i));
      if (!fits()) return call.host->MemoryError(call.line);
      if (max_split > 0) --max_split;
      i = j + sep->size();
    }
  }
  return Value::List(std::move(parts));
}

absl::StatusOr<Value> MReplace(const Value& sv, CallArgs& a, const BuiltinCall& call) {
  const std::string* from = StrArg(a, 0);
  const std::string* to = StrArg(a, 1);
  if (!from || !to) return Value(sv.as_string());
  TESSERA_ASSIGN_OR_RETURN(std::string out, ReplaceAllPy(sv.as_string(), *from, *to, call));
  return Value(std::move(out));
}

absl::StatusOr<Value> MFind(const Value& sv, CallArgs& a, const BuiltinCall&) {
  const std::string* sub = StrArg(a, 0);
  if (!sub) return Value(-1);
  size_t p = sv.as_string().find(*sub);
  return Value(p == std::string::npos ? int64_t{-1} : static_cast<int64_t>(p));
}

constexpr Value::Kind kDict = Value::Kind::kDict;
constexpr Value::Kind kList = Value::Kind::kList;
constexpr Value::Kind kStr = Value::Kind::kString;
constexpr MethodDef kMethods[] = {
    {kDict, "items", MDictItems},      {kDict, "keys", MDictKeysValues},  {kDict, "values", MDictKeysValues},
    {kDict, "get", MDictGet},          {kList, "append", MListAppend},    {kStr, "strip", MStrip},
    {kStr, "lstrip", MStrip},          {kStr, "rstrip", MStrip},          {kStr, "upper", MCase},
    {kStr, "lower", MCase},            {kStr, "title", MCase},            {kStr, "capitalize", MCase},
    {kStr, "startswith", MStartsEnds}, {kStr, "endswith", MStartsEnds},   {kStr, "split", MSplit},
    {kStr, "replace", MReplace},       {kStr, "find", MFind},
};

}  // namespace

const FilterDef* FindFilter(std::string_view name) {
  for (const FilterDef& f : kFilters) if (f.name == name) return &f;
  return nullptr;
}

const TestDef* FindTest(std::string_view name) {
  for (const TestDef& t : kTests) if (t.name == name) return &t;
  return nullptr;
}

const MethodDef* FindMethod(Value::Kind receiver, std::string_view name) {
  for (const MethodDef& m : kMethods) if (m.receiver == receiver && m.name == name) return &m;
  return nullptr;
}

std::vector<std::string_view> FilterNames() {
  std::vector<std::string_view> names;
  for (const FilterDef& f : kFilters) names.push_back(f.name);
  return names;
}

std::vector<std::string_view> TestNames() {
  std::vector<std::string_view> names;
  for (const TestDef& t : kTests) names.push_back(t.name);
  return names;
}

std::vector<std::string_view> MethodNames(Value::Kind receiver) {
  std::vector<std::string_view> names;
  for (const MethodDef& m : kMethods) if (m.receiver == receiver) names.push_back(m.name);
  return names;
}

Value BuiltinGlobals() {
  Value g = Value::Dict({});
  g.Set("raise_exception", Value::Func([](CallArgs& a) -> absl::StatusOr<Value> {
    return absl::InvalidArgumentError(absl::StrCat("chat template error: ", a.positional.empty() ? "" : a.positional[0].Str()));
  }));
  g.Set("namespace", Value::Func([](CallArgs& a) -> absl::StatusOr<Value> {
    Value ns = Value::Dict({});
    if (!a.positional.empty() && a.positional[0].is_dict()) {
      if (a.positional[0].keys_untrusted()) ns.MarkKeysUntrusted();
      for (auto& [k, v] : a.positional[0].dict()) ns.Set(k, v);
    }
    for (auto& [k, v] : a.keyword) ns.Set(k, v);
    return ns;
  }));
  g.Set("range", Value::Func([](CallArgs& a) -> absl::StatusOr<Value> {
    int64_t start = 0, stop = 0, step = 1;
    for (const Value& v : a.positional) if (!v.is_int()) return absl::InvalidArgumentError("chat template: range needs integers");
    if (a.positional.size() == 1) stop = a.positional[0].as_int();
    else if (a.positional.size() >= 2) { start = a.positional[0].as_int(); stop = a.positional[1].as_int(); }
    if (a.positional.size() >= 3) step = a.positional[2].as_int();
    if (step == 0) return absl::InvalidArgumentError("chat template: range step must not be zero");
    ValueList l;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (l.size() >= 1'000'000) return absl::InvalidArgumentError("chat template: range too long");
      l.push_back(Value(i));
    }
    return Value::List(std::move(l));
  }));
  g.Set("strftime_now", Value::Func([](CallArgs& a) -> absl::StatusOr<Value> {
    const std::string fmt = a.positional.empty() ? "%Y-%m-%d" : a.positional[0].Str();
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof(buf), fmt.c_str(), &tm);
    return Value(std::string(buf, n));
  }));
  return g;
}

}  // namespace tessera::jinja
