// Value: the dynamic value type of the Jinja2-subset interpreter, with
// Python's semantics for truthiness, equality and str().
#ifndef TESSERA_WORKER_CHAT_JINJA_VALUE_H_
#define TESSERA_WORKER_CHAT_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera::jinja {

class Value;

// The bytes of values (strings, list and dict slots, dict keys) that one
// render holds at a time. Values created while a budget is installed on the
// thread charge it and give their bytes back when the last reference goes,
// so the count is what is live, not what was ever made: a long loop costs
// nothing, a template that doubles a string in a loop stops with an error
// long before it takes the machine's memory. With no budget installed
// (compiling, building a context) nothing is counted. Operations that
// multiply sizes (repeat, replace, join, str() of a container) ask Fits()
// before or while they build their result.
class AllocationBudget {
 public:
  struct State;
  explicit AllocationBudget(int64_t bytes);
  ~AllocationBudget();
  AllocationBudget(const AllocationBudget&) = delete;
  AllocationBudget& operator=(const AllocationBudget&) = delete;

  // Whether `bytes` more fit in the current thread's budget (true if none).
  static bool Fits(size_t bytes);
  // Whether the current thread's budget is overdrawn (false if none).
  static bool Exhausted();
  // Marks the current thread's budget overdrawn: for builders that cannot
  // return an error and stop early instead.
  static void Overdraw();
  bool exhausted() const;
  int64_t limit() const { return limit_; }

 private:
  int64_t limit_;
  std::shared_ptr<State> state_;  // shared with the values that charged it
  std::shared_ptr<State> previous_;
};

// Byte ranges [begin, end) of a string that came from outside the template
// (a request's messages and tools), sorted, disjoint and not adjacent. A
// chat prompt's tokenizer matches control tokens only outside them, so text
// a user wrote can never become <|im_end|> or <|im_start|>.
using Provenance = std::vector<std::pair<size_t, size_t>>;

using ValueList = std::vector<Value>;
// Insertion-ordered, as Python dicts are.
using ValueDict = std::vector<std::pair<std::string, Value>>;

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using Function = std::function<absl::StatusOr<Value>(CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // undefined
  static Value None() { Value v; v.kind_ = Kind::kNone; return v; }
  Value(bool b) : kind_(Kind::kBool), b_(b) {}
  Value(int64_t i) : kind_(Kind::kInt), i_(i) {}
  Value(int i) : kind_(Kind::kInt), i_(i) {}
  Value(double d) : kind_(Kind::kFloat), d_(d) {}
  Value(std::string s) : kind_(Kind::kString), s_(MakeString(std::move(s))) {}
  Value(const char* s) : Value(std::string(s)) {}
  static Value List(ValueList l) { Value v; v.kind_ = Kind::kList; v.list_ = MakeList(std::move(l)); return v; }
  static Value Dict(ValueDict d) { Value v; v.kind_ = Kind::kDict; v.dict_ = MakeDict(std::move(d)); return v; }
  static Value Func(Function f) { Value v; v.kind_ = Kind::kFunction; v.fn_ = std::make_shared<Function>(std::move(f)); return v; }
  // A method bound to `receiver` (which `f` holds a reference to): kept so
  // that a check for reference cycles can see through it.
  static Value BoundMethod(const Value& receiver, Function f) {
    Value v = Func(std::move(f));
    v.receiver_ = std::make_shared<Value>(receiver);
    return v;
  }
  // `untrusted`: every string and dict key in `j` is marked as outside text.
  static Value FromJson(const nlohmann::ordered_json& j, bool untrusted = false);
  // A string whose every byte is outside text.
  static Value Untrusted(std::string s);
  // A string with the given provenance (which the caller has computed).
  static Value WithProvenance(std::string s, Provenance untrusted);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }
  double as_double() const { return kind_ == Kind::kFloat ? d_ : static_cast<double>(as_int()); }
  const std::string& as_string() const { return *s_; }
  // Mutable for reading and sorting in place; growth goes through Append
  // so that the budget sees it.
  ValueList& list() const { return *list_; }
  ValueDict& dict() const { return *dict_; }
  const Function& function() const { return *fn_; }
  const Value* receiver() const { return receiver_.get(); }

  // nullptr when absent. REQUIRES: is_dict().
  const Value* Find(std::string_view key) const;
  void Set(const std::string& key, Value v) const;
  // REQUIRES: is_list().
  void Append(Value v) const;

  // Provenance of a string: nullptr when no operation recorded one (a
  // template literal, or a value made by an operation that does not track
  // it; the interpreter then marks it from its inputs), else the untrusted
  // ranges (possibly none).
  const Provenance* provenance() const { return untrusted_.get(); }
  // Whether any string (or dict key) in this value is outside text; true
  // past a nesting depth it does not look into.
  bool AnyUntrusted(int depth = 0) const;
  // REQUIRES: is_dict(). Whether the dict's keys are outside text, and
  // a key as a string value with that provenance.
  bool keys_untrusted() const { return untrusted_ != nullptr; }
  void MarkKeysUntrusted();
  Value Key(const std::string& key) const;

  bool Truthy() const;
  std::string Str() const;   // Python str()
  std::string Repr() const;  // Python repr()
  std::string TypeName() const;
  // Python json.dumps(ensure_ascii=False); indent < 0 means none.
  absl::StatusOr<std::string> ToJson(int indent, int depth = 0) const;

 private:
  void ReprInto(std::string& out, int depth) const;
  static std::shared_ptr<std::string> MakeString(std::string s);
  static std::shared_ptr<ValueList> MakeList(ValueList l);
  static std::shared_ptr<ValueDict> MakeDict(ValueDict d);

  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::shared_ptr<std::string> s_;
  std::shared_ptr<ValueList> list_;
  std::shared_ptr<ValueDict> dict_;
  std::shared_ptr<Function> fn_;
  std::shared_ptr<const Value> receiver_;  // functions: see BoundMethod
  // Strings: their provenance (see provenance()); dicts: set when the keys
  // are outside text.
  std::shared_ptr<const Provenance> untrusted_;
};

// A string under construction that keeps each byte's provenance.
class TextBuilder {
 public:
  void Append(std::string_view text, bool untrusted);
  // Bytes [from, from + len) of string `v`, with their provenance.
  void AppendPart(const Value& v, size_t from, size_t len);
  // A string with its provenance; anything else as str() would print it,
  // untrusted throughout if any string inside it is.
  void AppendValue(const Value& v);
  size_t size() const { return text_.size(); }
  const std::string& text() const { return text_; }
  const Provenance& untrusted() const { return untrusted_; }
  std::string TakeText() { return std::move(text_); }
  Provenance TakeProvenance() { return std::move(untrusted_); }
  Value Build() &&;

 private:
  void MarkUntrusted(size_t begin, size_t end);
  std::string text_;
  Provenance untrusted_;
};

bool Equal(const Value& a, const Value& b);
// Python's repr() of a float.
std::string FloatRepr(double d);

}  // namespace tessera::jinja

#endif  // TESSERA_WORKER_CHAT_JINJA_VALUE_H_
