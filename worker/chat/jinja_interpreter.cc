#include "worker/chat/jinja_interpreter.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/chat/jinja_builtins.h"
#include "worker/chat/jinja_operators.h"

namespace tessera::jinja {
namespace {

enum class Flow { kNormal, kBreak, kContinue };

class Renderer : public RenderHost {
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
  // RenderHost:
  absl::Status Step(int line, int64_t n) override {
    steps_ += n;
    if (steps_ > limits_.max_steps) return RenderError(line, "template exceeded its step limit");
    if (budget_.exhausted()) return MemoryError(line);
    return absl::OkStatus();
  }
  absl::Status MemoryError(int line) const override {
    return absl::ResourceExhaustedError(absl::StrCat("chat template line ", line, ": template exceeded its memory limit (",
                                                     budget_.limit(), " bytes of values)"));
  }

  // Values are reference counted: a list or dict that reaches itself would
  // never be freed, a leak on every request that renders the template.
  // Python allows it, no chat template needs it: storing `v` in `container`
  // is refused if `v` reaches `container` (through elements, values or the
  // receiver of a bound method). Each container visited is a step.
  absl::Status RefuseCycle(const Value& container, const Value& v, int line) override {
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
      TESSERA_RETURN_IF_ERROR(Step(line, 1));
      if (x->is_list()) {
        for (const Value& e : x->list()) stack.push_back(&e);
      } else {
        for (const auto& [k, e] : x->dict()) stack.push_back(&e);
      }
    }
    return absl::OkStatus();
  }

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      if (const Value* v = it->Find(name)) return *v;
    }
    return Value();
  }

  absl::Status RenderNode(const Node& n, TextBuilder& out, Flow* flow) {
    TESSERA_RETURN_IF_ERROR(Step(n.line, 1));
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
      TESSERA_RETURN_IF_ERROR(Step(n.line, 1));
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
    TESSERA_RETURN_IF_ERROR(Step(e.line, 1));
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

  // Methods are looked up by the receiver's type here, at render time (see
  // jinja_builtins.h); a dict's own keys come first.
  absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name, int line) {
    if (obj.is_undefined()) return RenderError(line, absl::StrCat("'", name, "' of an undefined value"));
    if (obj.is_dict()) {
      if (const Value* v = obj.Find(name)) return *v;
    } else if (!obj.is_string() && !obj.is_list()) {
      return Value();
    }
    const MethodDef* m = FindMethod(obj.kind(), name);
    if (m == nullptr) return Value();
    const BuiltinCall call{m->name, line, this};
    const MethodFn fn = m->fn;
    // A string's method: what it makes inherits the string's outside text
    // unless the method keeps provenance exactly (strip, split).
    const bool inherit = obj.is_string() && obj.AnyUntrusted();
    return Value::BoundMethod(obj, [obj, fn, call, inherit](CallArgs& a) -> absl::StatusOr<Value> {
      TESSERA_ASSIGN_OR_RETURN(Value r, fn(obj, a, call));
      return inherit ? Inherit(std::move(r), /*inputs_untrusted=*/true) : r;
    });
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
    return BinaryOp(e.name, a, b, e.negated, BuiltinCall{e.name, e.line, this});
  }

  absl::StatusOr<bool> EvalTest(const Expr& e) {
    TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
    TESSERA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e));
    return e.test->fn(v, args, BuiltinCall{e.name, e.line, this});
  }

  // Filters that keep provenance exactly build their strings with
  // TextBuilder/Part; for the rest, new strings inherit their inputs'.
  absl::StatusOr<Value> EvalFilter(const Expr& e) {
    TESSERA_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
    TESSERA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e));
    TESSERA_ASSIGN_OR_RETURN(Value r, e.filter->fn(v, args, BuiltinCall{e.name, e.line, this}));
    return Inherit(std::move(r), [&] { return v.AnyUntrusted() || AnyUntrusted(args); });
  }

  const RenderLimits& limits_;
  // Installed for the renderer's lifetime; declared before scopes_ so the
  // scopes' values are released while it is still installed.
  AllocationBudget budget_;
  std::vector<Value> scopes_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
};

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
  r.PushScope(BuiltinGlobals().dict());
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
