// The built-in filters, tests, methods and globals of the Jinja2 subset, as
// tables from name to function.
//
// Filters and tests are resolved when a template compiles: the parser looks
// every `x | name` and `x is name` up here (FindFilter, FindTest) and keeps
// the entry in the syntax tree, so a template that names one this subset
// lacks fails to load, with the name and the line, instead of failing its
// first request. Names that a filter takes as an argument (selectattr's
// test, map's filter) are checked then too when they are string literals.
//
// Methods (`s.strip()`, `d.items()`, `l.append(x)`) stay dynamic: which
// table applies depends on the receiver's type, known only at render time,
// and `d.name` may as well be a dict key holding a macro. FindMethod looks
// them up by (receiver kind, name) when the attribute is read.
// Globals (raise_exception, namespace, range, strftime_now) are variables:
// a template may shadow them, so they are looked up by scope.
//
// Thread-safety: the tables are immutable; a builtin touches only its
// arguments and the RenderHost of the render that calls it.
#ifndef TESSERA_WORKER_CHAT_JINJA_BUILTINS_H_
#define TESSERA_WORKER_CHAT_JINJA_BUILTINS_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/chat/jinja_ast.h"
#include "worker/chat/jinja_value.h"

namespace tessera::jinja {

// What a builtin may ask of the render that calls it.
class RenderHost {
 public:
  virtual ~RenderHost() = default;
  // Counts `n` steps against the render's step limit (and checks its value
  // budget): an error once either is spent.
  virtual absl::Status Step(int line, int64_t n) = 0;
  // The error of a render past its value budget.
  virtual absl::Status MemoryError(int line) const = 0;
  // An error if storing `v` in `container` would make a reference cycle.
  virtual absl::Status RefuseCycle(const Value& container, const Value& v, int line) = 0;
};

// One call of a builtin: the name it was called by (aliases share a
// function), where, and for whom.
struct BuiltinCall {
  std::string_view name;
  int line = 0;
  RenderHost* host = nullptr;
};

// `v | name(args)`. The result's new strings inherit provenance from `v` and
// `args` in the interpreter unless the filter tracked it itself.
using FilterFn = absl::StatusOr<Value> (*)(const Value& v, const CallArgs& args, const BuiltinCall& call);
// `v is name(args)`, before `is not` negates it.
using TestFn = absl::StatusOr<bool> (*)(const Value& v, const CallArgs& args, const BuiltinCall& call);
// `receiver.name(args)`.
using MethodFn = absl::StatusOr<Value> (*)(const Value& receiver, CallArgs& args, const BuiltinCall& call);

struct FilterDef {
  std::string_view name;
  FilterFn fn;
  // Optional: checks the filter's arguments as written (e.g. a test name
  // given as a string literal); an error message names what is wrong.
  absl::Status (*check)(const Expr& e) = nullptr;
};
struct TestDef {
  std::string_view name;
  TestFn fn;
};
struct MethodDef {
  Value::Kind receiver;
  std::string_view name;
  MethodFn fn;
};

// nullptr when the subset has no such builtin.
const FilterDef* FindFilter(std::string_view name);
const TestDef* FindTest(std::string_view name);
const MethodDef* FindMethod(Value::Kind receiver, std::string_view name);

// Every entry, in table order (for tests and documentation).
std::vector<std::string_view> FilterNames();
std::vector<std::string_view> TestNames();
std::vector<std::string_view> MethodNames(Value::Kind receiver);

// raise_exception, namespace, range, strftime_now: a dict of functions.
Value BuiltinGlobals();

// ---- helpers shared with the interpreter -----------------------------------

// "chat template line N: msg".
absl::Status RenderError(int line, std::string_view msg);

// Bytes [from, from + len) of string `v`, keeping their provenance.
Value Part(const Value& v, size_t from, size_t len);

bool AnyUntrusted(const CallArgs& args);

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

inline Value Inherit(Value result, bool inputs_untrusted) {
  return Inherit(std::move(result), [inputs_untrusted] { return inputs_untrusted; });
}

}  // namespace tessera::jinja

#endif  // TESSERA_WORKER_CHAT_JINJA_BUILTINS_H_
