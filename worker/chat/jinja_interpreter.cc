#include "worker/chat/jinja_interpreter.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tessera::jinja {
namespace {

enum class Flow { kNormal, kBreak, kContinue };

absl::Status RenderError(int line, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("chat template line ", line, ": ", msg));
}

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

// A part of string `v`, keeping its provenance.
Value Part(const Value& v, size_t from, size_t len) {
  TextBuilder b;
  b.AppendPart(v, from, len);
  return std::move(b).Build();
}

Value Strip(const Value& v, const std::string* chars, bool left, bool right) {
  const Value s = v.is_string() ? v : Value::WithProvenance(v.Str(), {});
  const auto [b, e] = StripBounds(s.as_string(), chars, left, right);
  if (v.is_string()) return Part(s, b, e - b);
  TextBuilder out;
  out.Append(std::string_view(s.as_string()).substr(b, e - b), v.AnyUntrusted());
  return std::move(out).Build();
}

// Provenance for a value an operation made without tracking it: if any of
// the operation's inputs held outside text, so does every new string in the
// result (and every string a new list holds). Conservative by design: an
// operation added later is safe before anyone thinks of provenance.
// `inputs_untrusted` is asked only when the result holds such a string, so
// the common results (numbers, booleans, values passed through) never pay
// for a walk over the inputs (e.g. `messages|length` inside a loop).
template <typename InputsUntrusted>
Value Inherit(Value result, InputsUntrusted inputs_untrusted) {
  auto fresh = [](const Value& x) { return x.is_string() && x.provenance() == nullptr; };
  if (fresh(result)) return inputs_untrusted() ? Value::Untrusted(result.as_string()) : result;
  if (!result.is_list() || std::none_of(result.list().begin(), result.list().end(), fresh) || !inputs_untrusted()) {
    return result;
  }
  ValueList l;
  l.reserve(result.list().size());
  for (const Value& x : result.list()) l.push_back(fresh(x) ? Value::Untrusted(x.as_string()) : x);
  return Value::List(std::move(l));
}

Value Inherit(Value result, bool inputs_untrusted) {
  return Inherit(std::move(result), [inputs_untrusted] { return inputs_untrusted; });
}

bool AnyUntrusted(const CallArgs& args) {
  for (const Value& v : args.positional) if (v.AnyUntrusted()) return true;
  for (const auto& [k, v] : args.keyword) if (v.AnyUntrusted()) return true;
  return false;
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

class Renderer {
 public:
  explicit Renderer(const RenderLimits& limits) : limits_(limits), budget_(limits.max_value_bytes) {}

  absl::Status RenderNodes(const NodeList& nodes, TextBuilder& out, Flow* flow) {
    for (const auto& n : nodes) {
      TESSERA_RETURN_IF_ERROR(RenderNode(*n, out, flow));
      if (*flow != Flow::kNormal) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  void PushScope(ValueDict vars) { scopes_.push_back(Value::Dict(std::move(vars))); }
  void PopScope() { scopes_.pop_back(); }

 private:
  absl::Status Step(int line) {
    if (++steps_ > limits_.max_steps) return RenderError(line, "template exceeded its step limit");
    if (budget_.exhausted()) return MemoryError(line);
    return absl::OkStatus();
  }

  // Values are reference counted: a list or dict that reaches itself would
  // never be freed, a leak on every request that renders the template.
  // Python allows it, no chat template needs it: storing `v` in `container`
  // is refused if `v` reaches `container` (through elements, values or the
  // receiver of a bound method). Each container visited is a step.
  absl::Status RefuseCycle(const Value& container, const Value& v, int line) {
    auto identity = [](const Value& x) -> const void* {
      if (x.is_list()) return &x.list();
      if (x.is_dict()) return &x.dict();
      return nullptr;
    };
    const void* target = identity(container);
    std::vector<const Value*> stack{&v};
    absl::flat_hash_set<const void*> seen;
    while (!stack.empty()) {
      const Value* x = stack.back();
      stack.pop_back();
      if (x->is_function()) {
        if (x->receiver() != nullptr) stack.push_back(x->receiver());
        continue;
      }
      const void* id = identity(*x);
      if (id == nullptr) continue;
      if (id == target) return RenderError(line, "a list or dict cannot contain itself");
      if (!seen.insert(id).second) continue;
      TESSERA_RETURN_IF_ERROR(Step(line));
      if (x->is_list()) {
        for (const Value& e : x->list()) stack.push_back(&e);
      } else {
        for (const auto& [k, e] : x->dict()) stack.push_back(&e);
      }
    }
    return absl::OkStatus();
  }

  absl::Status MemoryError(int line) const {
    return absl::ResourceExhaustedError(absl::StrCat("chat template line ", line, ": template exceeded its memory limit (",
                                                     budget_.limit(), " bytes of values)"));
  }

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      if (const Value* v = it->Find(name)) return *v;
    }
    return Value();
  }

  absl::Status RenderNode(const Node& n, TextBuilder& out, Flow* flow) {
    TESSERA_RETURN_IF_ERROR(Step(n.line));
    switch (n.kind) {
      case Node::Kind::kText:
        out.Append(n.text, /*untrusted=*/false);
        break;
      case Node::Kind::kOutput: {
        TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        out.AppendValue(v);
        break;
      }
      case Node::Kind::kIf:
        for (const auto& [cond, body] : n.branches) {
          bool take = true;
          if (cond) {
            TESSERA_ASSIGN_OR_RETURN(Value c, Eval(*cond));
            take = c.Truthy();
          }
          if (take) return RenderNodes(body, out, flow);
        }
        break;
      case Node::Kind::kFor:
        TESSERA_RETURN_IF_ERROR(RenderFor(n, out));
        break;
      case Node::Kind::kSet: {
        TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        TESSERA_RETURN_IF_ERROR(Assign(n, std::move(v)));
        break;
      }
      case Node::Kind::kSetBlock: {
        TextBuilder captured;
        Flow f = Flow::kNormal;
        TESSERA_RETURN_IF_ERROR(RenderNodes(n.body, captured, &f));
        TESSERA_RETURN_IF_ERROR(Assign(n, std::move(captured).Build()));
        break;
      }
      case Node::Kind::kMacro:
        scopes_.back().Set(n.name, MakeMacro(n));
        break;
      case Node::Kind::kBreak:
        *flow = Flow::kBreak;
        break;
      case Node::Kind::kContinue:
        *flow = Flow::kContinue;
        break;
    }
    if (out.size() > limits_.max_output_bytes) return RenderError(n.line, "rendered output exceeds the size limit");
    return absl::OkStatus();
  }

  absl::Status Assign(const Node& n, Value v) {
    if (!n.attr.empty()) {
      Value target = Lookup(n.targets[0]);
      if (!target.is_dict()) return RenderError(n.line, absl::StrCat("cannot set attribute on '", n.targets[0], "'"));
      TESSERA_RETURN_IF_ERROR(RefuseCycle(target, v, n.line));
      target.Set(n.attr, std::move(v));
      return absl::OkStatus();
    }
    if (n.targets.size() == 1) {
      scopes_.back().Set(n.targets[0], std::move(v));
      return absl::OkStatus();
    }
    if (!v.is_list() || v.list().size() != n.targets.size()) {
      return RenderError(n.line, "cannot unpack value into the set targets");
    }
    for (size_t i = 0; i < n.targets.size(); ++i) scopes_.back().Set(n.targets[i], v.list()[i]);
    return absl::OkStatus();
  }

  Value MakeMacro(const Node& n) {
    const Node* node = &n;
    return Value::Func([this, node](CallArgs& args) -> absl::StatusOr<Value> {
      if (++call_depth_ > limits_.max_call_depth) {
        --call_depth_;
        return RenderError(node->line, "macro calls nested too deeply");
      }
      ValueDict vars;
      for (size_t i = 0; i < node->params.size(); ++i) {
        const auto& [pname, def] = node->params[i];
        Value v;
        if (i < args.positional.size()) {
          v = args.positional[i];
        } else {
          bool found = false;
          for (auto& [k, kv] : args.keyword) if (k == pname) { v = kv; found = true; }
          if (!found && def) {
            auto d = Eval(*def);
            if (!d.ok()) { --call_depth_; return d.status(); }
            v = *d;
          }
        }
        vars.emplace_back(pname, v);
      }
      PushScope(std::move(vars));
      TextBuilder out;
      Flow f = Flow::kNormal;
      absl::Status s = RenderNodes(node->body, out, &f);
      PopScope();
      --call_depth_;
      if (!s.ok()) return s;
      return std::move(out).Build();
    });
  }

  absl::Status RenderFor(const Node& n, TextBuilder& out) {
    TESSERA_ASSIGN_OR_RETURN(Value seq, Eval(*n.expr));
    ValueList items;
    if (seq.is_list()) items = seq.list();
    else if (seq.is_dict()) for (const auto& [k, v] : seq.dict()) items.push_back(seq.Key(k));
    else if (seq.is_string()) {
      if (!AllocationBudget::Fits(seq.as_string().size() * sizeof(Value))) return MemoryError(n.line);
      for (size_t i = 0; i < seq.as_string().size(); ++i) items.push_back(Part(seq, i, 1));
    }
    else if (!seq.is_undefined() && !seq.is_none()) {
      return RenderError(n.line, absl::StrCat("cannot iterate over a value of type ", seq.TypeName()));
    }
    const Expr* filter = n.params.empty() ? nullptr : n.params[0].second.get();
    if (filter) {
      ValueList kept;
      for (const Value& item : items) {
        PushScope({});
        TESSERA_RETURN_IF_ERROR(BindTargets(n, item));
        auto keep = Eval(*filter);
        PopScope();
        if (!keep.ok()) return keep.status();
        if (keep->Truthy()) kept.push_back(item);
      }
      items.swap(kept);
    }
    if (items.empty()) {
      Flow f = Flow::kNormal;
      return RenderNodes(n.else_body, out, &f);
    }
    const int64_t len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      TESSERA_RETURN_IF_ERROR(Step(n.line));
      ValueDict loop{{"index", Value(i + 1)}, {"index0", Value(i)}, {"first", Value(i == 0)},
                     {"last", Value(i == len - 1)}, {"length", Value(len)},
                     {"revindex", Value(len - i)}, {"revindex0", Value(len - i - 1)},
                     {"previtem", i > 0 ? items[i - 1] : Value()},
                     {"nextitem", i + 1 < len ? items[i + 1] : Value()}};
      PushScope({{"loop", Value::Dict(std::move(loop))}});
      absl::Status s = BindTargets(n, items[i]);
      Flow f = Flow::kNormal;
      if (s.ok()) s = RenderNodes(n.body, out, &f);
      PopScope();
      TESSERA_RETURN_IF_ERROR(s);
      if (f == Flow::kBreak) break;
    }
    return absl::OkStatus();
  }

  absl::Status BindTargets(const Node& n, const Value& item) {
    if (n.targets.size() == 1) {
      scopes_.back().Set(n.targets[0], item);
      return absl::OkStatus();
    }
    if (!item.is_list() || item.list().size() != n.targets.size()) {
      return RenderError(n.line, "cannot unpack loop item into the loop variables");
    }
    for (size_t k = 0; k < n.targets.size(); ++k) scopes_.back().Set(n.targets[k], item.list()[k]);
    return absl::OkStatus();
  }

  // ---- expressions --------------------------------------------------------

  absl::StatusOr<Value> Eval(const Expr& e) {
    TESSERA_RETURN_IF_ERROR(Step(e.line));
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.literal;
      case Expr::Kind::kName: return Lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        ValueList l;
        for (const auto& x : e.items) {
          TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*x));
          l.push_back(std::move(v));
        }
        return Value::List(std::move(l));
      }
      case Expr::Kind::kDict: {
        ValueDict d;
        Value dict = Value::Dict({});
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          TESSERA_ASSIGN_OR_RETURN(Value k, Eval(*e.items[i]));
          TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*e.items[i + 1]));
          if (!k.is_string()) return RenderError(e.line, "dict keys must be strings");
          if (k.AnyUntrusted()) dict.MarkKeysUntrusted();
          dict.Set(k.as_string(), std::move(v));
        }
        return dict;
      }
      case Expr::Kind::kAttr: {
        TESSERA_ASSIGN_OR_RETURN(Value obj, Eval(*e.a));
        return GetAttr(obj, e.name, e.line);
      }
      case Expr::Kind::kIndex: {
        TESSERA_ASSIGN_OR_RETURN(Value obj, Eval(*e.a));
        TESSERA_ASSIGN_OR_RETURN(Value key, Eval(*e.b));
        return GetItem(obj, key, e.line);
      }
      case Expr::Kind::kSlice: return EvalSlice(e);
      case Expr::Kind::kCall: {
        TESSERA_ASSIGN_OR_RETURN(Value fn, Eval(*e.a));
        if (!fn.is_function()) {
          return RenderError(e.line, absl::StrCat("'", fn.TypeName(), "' object is not callable"));
        }
        TESSERA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e));
        TESSERA_ASSIGN_OR_RETURN(Value r, fn.function()(args));  // callees read args, never move from them
        return Inherit(std::move(r), [&args] { return AnyUntrusted(args); });
      }
      case Expr::Kind::kFilter: return EvalFilter(e);
      case Expr::Kind::kTest: {
        TESSERA_ASSIGN_OR_RETURN(bool r, EvalTest(e));
        return Value(r != e.negated);
      }
      case Expr::Kind::kUnary: {
        TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
        if (!v.is_number()) return RenderError(e.line, absl::StrCat("bad operand type for unary ", e.name, ": ", v.TypeName()));
        if (e.name == "+") return v;
        if (v.kind() == Value::Kind::kFloat) return Value(-v.as_double());
        return Value(-v.as_int());
      }
      case Expr::Kind::kNot: {
        TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
        return Value(!v.Truthy());
      }
      case Expr::Kind::kAnd: {
        TESSERA_ASSIGN_OR_RETURN(Value a, Eval(*e.a));
        if (!a.Truthy()) return a;
        return Eval(*e.b);
      }
      case Expr::Kind::kOr: {
        TESSERA_ASSIGN_OR_RETURN(Value a, Eval(*e.a));
        if (a.Truthy()) return a;
        return Eval(*e.b);
      }
      case Expr::Kind::kCond: {
        TESSERA_ASSIGN_OR_RETURN(Value c, Eval(*e.b));
        if (c.Truthy()) return Eval(*e.a);
        if (e.c) return Eval(*e.c);
        return Value();
      }
      case Expr::Kind::kBinary: return EvalBinary(e);
    }
    return RenderError(e.line, "unknown expression");
  }

  absl::StatusOr<CallArgs> EvalArgs(const Expr& e) {
    CallArgs args;
    for (const auto& x : e.items) {
      TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*x));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [k, x] : e.kwargs) {
      TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*x));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  absl::StatusOr<Value> GetItem(const Value& obj, const Value& key, int line) {
    if (obj.is_undefined()) return RenderError(line, "cannot index an undefined value");
    if (obj.is_dict()) {
      if (!key.is_string()) return Value();
      const Value* v = obj.Find(key.as_string());
      return v ? *v : Value();
    }
    if (obj.is_list() || obj.is_string()) {
      if (!key.is_int()) return RenderError(line, absl::StrCat("indices must be integers, not ", key.TypeName()));
      const int64_t n = obj.is_list() ? obj.list().size() : obj.as_string().size();
      int64_t i = key.as_int();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();  // undefined, as Jinja2 does
      if (obj.is_list()) return obj.list()[i];
      return Part(obj, static_cast<size_t>(i), 1);
    }
    if (obj.is_none()) return RenderError(line, "cannot index None");
    return Value();
  }

  absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name, int line) {
    if (obj.is_undefined()) return RenderError(line, absl::StrCat("'", name, "' of an undefined value"));
    if (obj.is_dict()) {
      if (const Value* v = obj.Find(name)) return *v;
      if (Value m = DictMethod(obj, name); !m.is_undefined()) return m;
      return Value();
    }
    if (obj.is_string()) return StringMethod(obj, name, line);
    if (obj.is_list()) return ListMethod(obj, name);
    return Value();
  }

  Value DictMethod(const Value& d, const std::string& name) {
    if (name == "items") {
      return Value::BoundMethod(d, [d](CallArgs&) -> absl::StatusOr<Value> {
        ValueList l;
        for (const auto& [k, v] : d.dict()) l.push_back(Value::List({d.Key(k), v}));
        return Value::List(std::move(l));
      });
    }
    if (name == "keys" || name == "values") {
      const bool keys = name == "keys";
      return Value::BoundMethod(d, [d, keys](CallArgs&) -> absl::StatusOr<Value> {
        ValueList l;
        for (const auto& [k, v] : d.dict()) l.push_back(keys ? d.Key(k) : v);
        return Value::List(std::move(l));
      });
    }
    if (name == "get") {
      return Value::BoundMethod(d, [d](CallArgs& a) -> absl::StatusOr<Value> {
        if (a.positional.empty() || !a.positional[0].is_string()) return Value::None();
        const Value* v = d.Find(a.positional[0].as_string());
        if (v) return *v;
        return a.positional.size() > 1 ? a.positional[1] : Value::None();
      });
    }
    return Value();
  }

  Value ListMethod(const Value& l, const std::string& name) {
    if (name == "append") {
      return Value::BoundMethod(l, [this, l](CallArgs& a) -> absl::StatusOr<Value> {
        for (auto& v : a.positional) {
          TESSERA_RETURN_IF_ERROR(RefuseCycle(l, v, 0));
          l.Append(v);
        }
        return Value::None();
      });
    }
    return Value();
  }

  // A string's method; what it makes inherits the string's outside text
  // unless the method keeps provenance exactly (strip, split).
  absl::StatusOr<Value> StringMethod(const Value& sv, const std::string& name, int line) {
    TESSERA_ASSIGN_OR_RETURN(Value m, StringMethodUntracked(sv, name, line));
    if (!m.is_function() || !sv.AnyUntrusted()) return m;
    Function inner = m.function();
    return Value::Func([inner](CallArgs& a) -> absl::StatusOr<Value> {
      TESSERA_ASSIGN_OR_RETURN(Value r, inner(a));
      return Inherit(std::move(r), /*inputs_untrusted=*/true);
    });
  }

  absl::StatusOr<Value> StringMethodUntracked(const Value& sv, const std::string& name, int line) {
    const std::string s = sv.as_string();
    auto str_arg = [](CallArgs& a, size_t i) -> const std::string* {
      return i < a.positional.size() && a.positional[i].is_string() ? &a.positional[i].as_string() : nullptr;
    };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool l = name != "rstrip", r = name != "lstrip";
      return Value::Func([sv, l, r, str_arg](CallArgs& a) -> absl::StatusOr<Value> {
        return Strip(sv, str_arg(a, 0), l, r);
      });
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      return Value::Func([s, name](CallArgs&) -> absl::StatusOr<Value> {
        if (name == "upper") return Value(absl::AsciiStrToUpper(s));
        if (name == "lower") return Value(absl::AsciiStrToLower(s));
        return Value(Title(s, name == "capitalize"));
      });
    }
    if (name == "startswith" || name == "endswith") {
      const bool start = name == "startswith";
      return Value::Func([s, start, line](CallArgs& a) -> absl::StatusOr<Value> {
        if (a.positional.empty()) return RenderError(line, "startswith/endswith needs an argument");
        ValueList options = a.positional[0].is_list() ? a.positional[0].list() : ValueList{a.positional[0]};
        for (const Value& o : options) {
          if (!o.is_string()) continue;
          const std::string& p = o.as_string();
          if (start ? s.rfind(p, 0) == 0 : (s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0)) {
            return Value(true);
          }
        }
        return Value(false);
      });
    }
    if (name == "split") {
      return Value::Func([this, s, sv, str_arg, line](CallArgs& a) -> absl::StatusOr<Value> {
        ValueList parts;
        // Many tiny parts cost a Value slot each: check while splitting.
        auto fits = [&] { return (parts.size() & 1023) != 0 || AllocationBudget::Fits(parts.size() * sizeof(Value)); };
        const std::string* sep = str_arg(a, 0);
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
            if (!fits()) return MemoryError(line);
            if (max_split > 0) --max_split;
            i = j;
          }
        } else if (!sep->empty()) {
          size_t i = 0;
          while (true) {
            size_t j = max_split == 0 ? std::string::npos : s.find(*sep, i);
            if (j == std::string::npos) { parts.push_back(Part(sv, i, s.size() - i)); break; }
            parts.push_back(Part(sv, i, j - i));
            if (!fits()) return MemoryError(line);
            if (max_split > 0) --max_split;
            i = j + sep->size();
          }
        }
        return Value::List(std::move(parts));
      });
    }
    if (name == "replace") {
      return Value::Func([this, s, str_arg, line](CallArgs& a) -> absl::StatusOr<Value> {
        const std::string* from = str_arg(a, 0);
        const std::string* to = str_arg(a, 1);
        if (!from || !to) return Value(s);
        TESSERA_ASSIGN_OR_RETURN(std::string out, ReplaceAllPy(s, *from, *to, line));
        return Value(std::move(out));
      });
    }
    if (name == "find") {
      return Value::Func([s, str_arg](CallArgs& a) -> absl::StatusOr<Value> {
        const std::string* sub = str_arg(a, 0);
        if (!sub) return Value(-1);
        size_t p = s.find(*sub);
        return Value(p == std::string::npos ? int64_t{-1} : static_cast<int64_t>(p));
      });
    }
    return Value();
  }

  // Refuses (before building it) a result that would not fit the budget.
  absl::StatusOr<std::string> ReplaceAllPy(const std::string& s, const std::string& from, const std::string& to,
                                           int line) const {
    if (from.empty()) return s;
    size_t count = 0;
    for (size_t j = s.find(from); j != std::string::npos; j = s.find(from, j + from.size())) ++count;
    if (to.size() > from.size() &&
        (count > (SIZE_MAX - s.size()) / (to.size() - from.size()) ||
         !AllocationBudget::Fits(s.size() + count * (to.size() - from.size())))) {
      return MemoryError(line);
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

  absl::StatusOr<Value> EvalSlice(const Expr& e) {
    TESSERA_ASSIGN_OR_RETURN(Value obj, Eval(*e.a));
    auto bound = [&](const Expr* x) -> absl::StatusOr<std::optional<int64_t>> {
      if (!x) return std::optional<int64_t>();
      TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*x));
      if (v.is_none()) return std::optional<int64_t>();
      if (!v.is_int()) return RenderError(e.line, "slice indices must be integers");
      return std::optional<int64_t>(v.as_int());
    };
    TESSERA_ASSIGN_OR_RETURN(auto start, bound(e.b.get()));
    TESSERA_ASSIGN_OR_RETURN(auto stop, bound(e.c.get()));
    TESSERA_ASSIGN_OR_RETURN(auto step_opt, bound(e.items.empty() ? nullptr : e.items[0].get()));
    const int64_t step = step_opt.value_or(1);
    if (step == 0) return RenderError(e.line, "slice step cannot be zero");
    if (!obj.is_list() && !obj.is_string()) return RenderError(e.line, absl::StrCat("cannot slice a ", obj.TypeName()));
    const int64_t n = obj.is_list() ? obj.list().size() : obj.as_string().size();
    auto clamp = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t b = clamp(start, step > 0 ? 0 : n - 1);
    const int64_t en = clamp(stop, step > 0 ? n : -1);
    ValueList l;
    TextBuilder str;
    for (int64_t i = b; step > 0 ? i < en : i > en; i += step) {
      if (obj.is_list()) l.push_back(obj.list()[i]);
      else str.AppendPart(obj, static_cast<size_t>(i), 1);
    }
    if (obj.is_list()) return Value::List(std::move(l));
    return std::move(str).Build();
  }

  absl::StatusOr<Value> EvalBinary(const Expr& e) {
    TESSERA_ASSIGN_OR_RETURN(Value a, Eval(*e.a));
    TESSERA_ASSIGN_OR_RETURN(Value b, Eval(*e.b));
    const std::string& op = e.name;
    if (op == "==") return Value(Equal(a, b));
    if (op == "!=") return Value(!Equal(a, b));
    if (op == "in") {
      bool r = false;
      if (b.is_string() && a.is_string()) r = b.as_string().find(a.as_string()) != std::string::npos;
      else if (b.is_list()) r = std::any_of(b.list().begin(), b.list().end(), [&](const Value& x) { return Equal(a, x); });
      else if (b.is_dict()) r = a.is_string() && b.Find(a.as_string()) != nullptr;
      else if (!b.is_undefined() && !b.is_none()) return RenderError(e.line, absl::StrCat("'in' needs a container, got ", b.TypeName()));
      else return RenderError(e.line, "'in' on an undefined or None value");
      return Value(r != e.negated);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp;
      if (a.is_number() && b.is_number()) {
        cmp = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double() ? 1 : 0;
      } else if (a.is_string() && b.is_string()) {
        cmp = a.as_string().compare(b.as_string());
      } else {
        return RenderError(e.line, absl::StrCat("cannot compare ", a.TypeName(), " and ", b.TypeName()));
      }
      if (op == "<") return Value(cmp < 0);
      if (op == ">") return Value(cmp > 0);
      if (op == "<=") return Value(cmp <= 0);
      return Value(cmp >= 0);
    }
    if (op == "~") {
      const size_t la = a.is_string() ? a.as_string().size() : a.Str().size();
      const size_t lb = b.is_string() ? b.as_string().size() : b.Str().size();
      if (!AllocationBudget::Fits(la + lb)) return MemoryError(e.line);
      TextBuilder out;
      out.AppendValue(a);
      out.AppendValue(b);
      return std::move(out).Build();
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        if (!AllocationBudget::Fits(a.as_string().size() + b.as_string().size())) return MemoryError(e.line);
        TextBuilder out;
        out.AppendValue(a);
        out.AppendValue(b);
        return std::move(out).Build();
      }
      if (a.is_list() && b.is_list()) {
        if (!AllocationBudget::Fits((a.list().size() + b.list().size()) * sizeof(Value))) return MemoryError(e.line);
        ValueList l = a.list();
        l.insert(l.end(), b.list().begin(), b.list().end());
        return Value::List(std::move(l));
      }
    }
    if (op == "*" && a.is_string() && b.is_int()) {
      const size_t n = static_cast<size_t>(std::max<int64_t>(0, b.as_int()));
      const size_t len = a.as_string().size();
      if (len != 0 && (n > SIZE_MAX / len || !AllocationBudget::Fits(len * n))) return MemoryError(e.line);
      TextBuilder out;
      for (size_t i = 0; i < n; ++i) out.AppendValue(a);
      return std::move(out).Build();
    }
    if (!a.is_number() || !b.is_number()) {
      return RenderError(e.line, absl::StrCat("unsupported operand types for ", op, ": ", a.TypeName(), " and ", b.TypeName()));
    }
    const bool fl = a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat;
    if (op == "/") {
      if (b.as_double() == 0) return RenderError(e.line, "division by zero");
      return Value(a.as_double() / b.as_double());
    }
    if (op == "+") return fl ? Value(a.as_double() + b.as_double()) : Value(a.as_int() + b.as_int());
    if (op == "-") return fl ? Value(a.as_double() - b.as_double()) : Value(a.as_int() - b.as_int());
    if (op == "*") return fl ? Value(a.as_double() * b.as_double()) : Value(a.as_int() * b.as_int());
    if (op == "**") return fl ? Value(std::pow(a.as_double(), b.as_double())) : Value(static_cast<int64_t>(std::pow(a.as_double(), b.as_double())));
    if (op == "//" || op == "%") {
      if (b.as_double() == 0) return RenderError(e.line, "division by zero");
      if (fl) {
        const double q = std::floor(a.as_double() / b.as_double());
        return op == "//" ? Value(q) : Value(a.as_double() - q * b.as_double());
      }
      int64_t q = a.as_int() / b.as_int();
      if ((a.as_int() % b.as_int() != 0) && ((a.as_int() < 0) != (b.as_int() < 0))) --q;
      return op == "//" ? Value(q) : Value(a.as_int() - q * b.as_int());
    }
    return RenderError(e.line, absl::StrCat("unsupported operator ", op));
  }

  absl::StatusOr<bool> EvalTest(const Expr& e) {
    TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
    TESSERA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e));
    const std::string& t = e.name;
    if (t == "defined") return !v.is_undefined();
    if (t == "undefined") return v.is_undefined();
    if (t == "none") return v.is_none();
    if (t == "string") return v.is_string();
    if (t == "number") return v.is_number() && !v.is_bool();
    if (t == "integer") return v.kind() == Value::Kind::kInt;
    if (t == "float") return v.kind() == Value::Kind::kFloat;
    if (t == "boolean") return v.is_bool();
    if (t == "true") return v.is_bool() && v.as_bool();
    if (t == "false") return v.is_bool() && !v.as_bool();
    if (t == "mapping") return v.is_dict();
    if (t == "iterable") return v.is_list() || v.is_dict() || v.is_string();
    if (t == "sequence") return v.is_list() || v.is_string() || v.is_dict();
    if (t == "callable") return v.is_function();
    if (t == "odd" || t == "even") {
      if (!v.is_int()) return RenderError(e.line, "odd/even needs an integer");
      return (v.as_int() % 2 != 0) == (t == "odd");
    }
    if (t == "divisibleby") {
      if (!v.is_int() || args.positional.empty() || !args.positional[0].is_int() || args.positional[0].as_int() == 0) {
        return RenderError(e.line, "divisibleby needs integers");
      }
      return v.as_int() % args.positional[0].as_int() == 0;
    }
    if (t == "eq" || t == "equalto" || t == "sameas") {
      if (args.positional.empty()) return RenderError(e.line, absl::StrCat("test '", t, "' needs an argument"));
      return Equal(v, args.positional[0]);
    }
    if (t == "ne") return args.positional.empty() ? false : !Equal(v, args.positional[0]);
    if (t == "in") {
      if (args.positional.empty()) return RenderError(e.line, "test 'in' needs an argument");
      const Value& c = args.positional[0];
      if (c.is_list()) return std::any_of(c.list().begin(), c.list().end(), [&](const Value& x) { return Equal(v, x); });
      if (c.is_string() && v.is_string()) return c.as_string().find(v.as_string()) != std::string::npos;
      if (c.is_dict() && v.is_string()) return c.Find(v.as_string()) != nullptr;
      return false;
    }
    if (t == "lower") return v.is_string() && absl::AsciiStrToLower(v.as_string()) == v.as_string();
    if (t == "upper") return v.is_string() && absl::AsciiStrToUpper(v.as_string()) == v.as_string();
    return RenderError(e.line, absl::StrCat("unsupported construct: test '", t, "'"));
  }

  // Filters that keep provenance exactly build their strings with
  // TextBuilder/Part; for the rest, new strings inherit their inputs'.
  absl::StatusOr<Value> EvalFilter(const Expr& e) {
    TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
    TESSERA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e));
    TESSERA_ASSIGN_OR_RETURN(Value r, ApplyFilter(e, v, args));
    return Inherit(std::move(r), [&] { return v.AnyUntrusted() || AnyUntrusted(args); });
  }

  absl::StatusOr<Value> ApplyFilter(const Expr& e, const Value& v, CallArgs& args) {
    const std::string& f = e.name;
    auto kw = [&](const std::string& k, size_t pos) -> const Value* {
      for (auto& [name, val] : args.keyword) if (name == k) return &val;
      return pos < args.positional.size() ? &args.positional[pos] : nullptr;
    };
    if (f == "trim" || f == "strip") return Strip(v, nullptr, true, true);
    if (f == "upper") return Value(absl::AsciiStrToUpper(v.Str()));
    if (f == "lower") return Value(absl::AsciiStrToLower(v.Str()));
    if (f == "title") return Value(Title(v.Str(), false));
    if (f == "capitalize") return Value(Title(v.Str(), true));
    if (f == "string") {
      TextBuilder out;
      out.AppendValue(v);
      return std::move(out).Build();
    }
    if (f == "safe" || f == "e" || f == "escape" || f == "forceescape") {
      if (f == "safe") return v;
      const std::string in = v.Str();
      std::string out;
      for (char c : in) {
        if ((out.size() & 4095) == 0 && !AllocationBudget::Fits(out.size())) return MemoryError(e.line);
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
    if (f == "length" || f == "count") {
      if (v.is_string()) return Value(static_cast<int64_t>(v.as_string().size()));
      if (v.is_list()) return Value(static_cast<int64_t>(v.list().size()));
      if (v.is_dict()) return Value(static_cast<int64_t>(v.dict().size()));
      if (v.is_undefined()) return Value(int64_t{0});
      return RenderError(e.line, absl::StrCat("object of type ", v.TypeName(), " has no length"));
    }
    if (f == "tojson") {
      int indent = -1;
      if (const Value* i = kw("indent", 0); i && i->is_int()) indent = static_cast<int>(std::clamp<int64_t>(i->as_int(), 0, 16));
      TESSERA_ASSIGN_OR_RETURN(std::string j, v.ToJson(indent));
      return Value(j);
    }
    if (f == "first" || f == "last") {
      if (v.is_list()) {
        if (v.list().empty()) return Value();
        return f == "first" ? v.list().front() : v.list().back();
      }
      if (v.is_string()) {
        if (v.as_string().empty()) return Value();
        return Part(v, f == "first" ? 0 : v.as_string().size() - 1, 1);
      }
      return RenderError(e.line, absl::StrCat("cannot take ", f, " of ", v.TypeName()));
    }
    if (f == "join") {
      const Value* sep = kw("d", 0);
      const Value s = sep && sep->is_string() ? *sep : Value(std::string());
      const Value* attr = kw("attribute", 1);
      if (!v.is_list()) return RenderError(e.line, "join needs a list");
      TextBuilder out;
      for (size_t i = 0; i < v.list().size(); ++i) {
        if (!AllocationBudget::Fits(out.size())) return MemoryError(e.line);
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
    if (f == "default" || f == "d") {
      const Value* def = kw("default_value", 0);
      const Value* boolean = kw("boolean", 1);
      const bool use = v.is_undefined() || (boolean && boolean->Truthy() && !v.Truthy());
      return use ? (def ? *def : Value(std::string())) : v;
    }
    if (f == "int") {
      if (v.is_number()) return Value(static_cast<int64_t>(v.as_double()));
      if (v.is_string()) {
        try { return Value(static_cast<int64_t>(std::stoll(v.as_string()))); } catch (...) { return Value(int64_t{0}); }
      }
      return Value(int64_t{0});
    }
    if (f == "float") {
      if (v.is_number()) return Value(v.as_double());
      if (v.is_string()) {
        try { return Value(std::stod(v.as_string())); } catch (...) { return Value(0.0); }
      }
      return Value(0.0);
    }
    if (f == "abs") {
      if (!v.is_number()) return RenderError(e.line, "abs needs a number");
      return v.kind() == Value::Kind::kFloat ? Value(std::fabs(v.as_double())) : Value(static_cast<int64_t>(std::llabs(v.as_int())));
    }
    if (f == "round") {
      if (!v.is_number()) return RenderError(e.line, "round needs a number");
      const Value* prec = kw("precision", 0);
      const double p = std::pow(10.0, prec && prec->is_int() ? std::clamp<int64_t>(prec->as_int(), 0, 15) : 0);
      return Value(std::nearbyint(v.as_double() * p) / p);
    }
    if (f == "list") {
      if (v.is_list()) return v;
      ValueList l;
      if (v.is_string() && !AllocationBudget::Fits(v.as_string().size() * sizeof(Value))) return MemoryError(e.line);
      if (v.is_string()) for (size_t i = 0; i < v.as_string().size(); ++i) l.push_back(Part(v, i, 1));
      else if (v.is_dict()) for (auto& [k, x] : v.dict()) l.push_back(v.Key(k));
      return Value::List(std::move(l));
    }
    if (f == "items") {
      if (!v.is_dict()) return RenderError(e.line, "items needs a mapping");
      ValueList l;
      for (const auto& [k, x] : v.dict()) l.push_back(Value::List({v.Key(k), x}));
      return Value::List(std::move(l));
    }
    if (f == "reverse") {
      if (v.is_string()) {
        TextBuilder out;
        for (size_t i = v.as_string().size(); i-- > 0;) out.AppendPart(v, i, 1);
        return std::move(out).Build();
      }
      if (v.is_list()) { ValueList l(v.list().rbegin(), v.list().rend()); return Value::List(std::move(l)); }
      return RenderError(e.line, "reverse needs a list or string");
    }
    if (f == "replace") {
      const Value* from = kw("old", 0);
      const Value* to = kw("new", 1);
      if (!from || !to || !from->is_string() || !to->is_string()) return RenderError(e.line, "replace needs two strings");
      TESSERA_ASSIGN_OR_RETURN(std::string out, ReplaceAllPy(v.Str(), from->as_string(), to->as_string(), e.line));
      return Value(std::move(out));
    }
    if (f == "selectattr" || f == "rejectattr") {
      if (!v.is_list()) return RenderError(e.line, absl::StrCat(f, " needs a list"));
      if (args.positional.empty() || !args.positional[0].is_string()) return RenderError(e.line, absl::StrCat(f, " needs an attribute name"));
      const std::string attr = args.positional[0].as_string();
      const bool select = f == "selectattr";
      ValueList l;
      for (const Value& item : v.list()) {
        Value a = item.is_dict() && item.Find(attr) ? *item.Find(attr) : Value();
        bool pass;
        if (args.positional.size() < 2) {
          pass = a.Truthy();
        } else {
          const std::string test = args.positional[1].Str();
          if (test == "defined") pass = !a.is_undefined();
          else if (test == "undefined") pass = a.is_undefined();
          else if (test == "none") pass = a.is_none();
          else if (test == "equalto" || test == "eq" || test == "==") pass = args.positional.size() > 2 && Equal(a, args.positional[2]);
          else if (test == "ne" || test == "!=") pass = args.positional.size() > 2 && !Equal(a, args.positional[2]);
          else if (test == "string") pass = a.is_string();
          else if (test == "true") pass = a.is_bool() && a.as_bool();
          else if (test == "false") pass = a.is_bool() && !a.as_bool();
          else return RenderError(e.line, absl::StrCat("unsupported construct: test '", test, "' in ", f));
        }
        if (pass == select) l.push_back(item);
      }
      return Value::List(std::move(l));
    }
    if (f == "map") {
      if (!v.is_list()) return RenderError(e.line, "map needs a list");
      const Value* attr = kw("attribute", 99);
      ValueList l;
      if (attr && attr->is_string()) {
        for (const Value& item : v.list()) {
          const Value* a = item.is_dict() ? item.Find(attr->as_string()) : nullptr;
          l.push_back(a ? *a : (kw("default", 99) ? *kw("default", 99) : Value()));
        }
        return Value::List(std::move(l));
      }
      if (!args.positional.empty() && args.positional[0].is_string()) {
        const std::string fn = args.positional[0].as_string();
        for (const Value& item : v.list()) {
          if (AllocationBudget::Exhausted()) return MemoryError(e.line);
          const bool outside = item.AnyUntrusted();
          if (fn == "string") l.push_back(Inherit(Value(item.Str()), outside));
          else if (fn == "lower") l.push_back(Inherit(Value(absl::AsciiStrToLower(item.Str())), outside));
          else if (fn == "upper") l.push_back(Inherit(Value(absl::AsciiStrToUpper(item.Str())), outside));
          else if (fn == "trim") l.push_back(Strip(item, nullptr, true, true));
          else if (fn == "tojson") { TESSERA_ASSIGN_OR_RETURN(std::string j, item.ToJson(-1)); l.push_back(Inherit(Value(j), outside)); }
          else return RenderError(e.line, absl::StrCat("unsupported construct: map filter '", fn, "'"));
        }
        return Value::List(std::move(l));
      }
      return RenderError(e.line, "map needs attribute= or a filter name");
    }
    if (f == "unique") {
      if (!v.is_list()) return RenderError(e.line, "unique needs a list");
      ValueList l;
      for (const Value& x : v.list()) {
        steps_ += static_cast<int64_t>(l.size());  // quadratic: each comparison is a step
        TESSERA_RETURN_IF_ERROR(Step(e.line));
        if (std::none_of(l.begin(), l.end(), [&](const Value& y) { return Equal(x, y); })) l.push_back(x);
      }
      return Value::List(std::move(l));
    }
    if (f == "indent") {
      const Value* width = kw("width", 0);
      const int64_t w = width && width->is_int() ? std::clamp<int64_t>(width->as_int(), 0, 64) : 4;
      const Value* first = kw("first", 1);
      const std::string pad(static_cast<size_t>(w), ' ');
      std::string s = v.Str(), out;
      if (first && first->Truthy()) out += pad;
      for (size_t i = 0; i < s.size(); ++i) {
        out.push_back(s[i]);
        if (s[i] == '\n' && i + 1 < s.size() && s[i + 1] != '\n') {
          out += pad;
          if (!AllocationBudget::Fits(out.size())) return MemoryError(e.line);
        }
      }
      return Value(out);
    }
    return RenderError(e.line, absl::StrCat("unsupported construct: filter '", f, "'"));
  }

  const RenderLimits& limits_;
  // Installed for the renderer's lifetime; declared before scopes_ so the
  // scopes' values are released while it is still installed.
  AllocationBudget budget_;
  std::vector<Value> scopes_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
};

Value Globals() {
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

}  // namespace

absl::StatusOr<std::unique_ptr<Template>> Template::Compile(const std::string& source, const LexOptions& options) {
  TESSERA_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source, options));
  std::unique_ptr<Template> t(new Template());
  TESSERA_ASSIGN_OR_RETURN(t->nodes_, Parse(std::move(tokens)));
  return t;
}

absl::StatusOr<std::string> Template::Render(const Value& context, const RenderLimits& limits) const {
  TESSERA_ASSIGN_OR_RETURN(RenderedText r, RenderWithProvenance(context, limits));
  return std::move(r.text);
}

absl::StatusOr<RenderedText> Template::RenderWithProvenance(const Value& context, const RenderLimits& limits) const {
  if (!context.is_dict()) return absl::InvalidArgumentError("template context must be a mapping");
  Renderer r(limits);
  r.PushScope(Globals().dict());
  ValueDict vars = context.dict();
  r.PushScope(std::move(vars));
  TextBuilder out;
  Flow f = Flow::kNormal;
  TESSERA_RETURN_IF_ERROR(r.RenderNodes(nodes_, out, &f));
  RenderedText result;
  result.untrusted = out.TakeProvenance();
  result.text = out.TakeText();
  return result;
}

}  // namespace tessera::jinja
