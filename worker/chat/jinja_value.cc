#include "worker/chat/jinja_value.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace tessera::jinja {

struct AllocationBudget::State {
  std::atomic<int64_t> used{0};
  int64_t limit = 0;
};

namespace {

// The budget of the render running on this thread, if any.
thread_local std::shared_ptr<AllocationBudget::State> current_budget;

constexpr int64_t kSaturate = INT64_MAX / 4;  // a charge past any limit, without wrapping

int64_t Clamp(size_t bytes) { return static_cast<int64_t>(std::min<size_t>(bytes, kSaturate)); }

void Charge(const std::shared_ptr<AllocationBudget::State>& state, int64_t bytes) {
  if (state) state->used.fetch_add(bytes, std::memory_order_relaxed);
}

int64_t ListBytes(const ValueList& l) { return Clamp(l.capacity() * sizeof(Value)); }

int64_t DictBytes(const ValueDict& d) {
  size_t keys = 0;
  for (const auto& [k, v] : d) keys += k.size();
  return Clamp(d.capacity() * sizeof(ValueDict::value_type) + keys);
}

// A shared_ptr whose control block gives the object's bytes, as measured
// when it goes, back to the budget it was charged to.
template <typename T, typename Measure>
std::shared_ptr<T> MakeCounted(T value, Measure measure) {
  std::shared_ptr<AllocationBudget::State> state = current_budget;
  if (!state) return std::make_shared<T>(std::move(value));
  Charge(state, measure(value));
  return std::shared_ptr<T>(new T(std::move(value)), [state, measure](T* p) {
    state->used.fetch_sub(measure(*p), std::memory_order_relaxed);
    delete p;
  });
}

}  // namespace

AllocationBudget::AllocationBudget(int64_t bytes)
    : limit_(bytes), state_(std::make_shared<State>()), previous_(std::move(current_budget)) {
  state_->limit = bytes;
  current_budget = state_;
}

AllocationBudget::~AllocationBudget() { current_budget = std::move(previous_); }

bool AllocationBudget::exhausted() const { return state_->used.load(std::memory_order_relaxed) > limit_; }

bool AllocationBudget::Fits(size_t bytes) {
  if (!current_budget) return true;
  return current_budget->used.load(std::memory_order_relaxed) + Clamp(bytes) <= current_budget->limit;
}

void AllocationBudget::Overdraw() {
  if (current_budget) current_budget->used.fetch_add(current_budget->limit + 1, std::memory_order_relaxed);
}

bool AllocationBudget::Exhausted() {
  return current_budget && current_budget->used.load(std::memory_order_relaxed) > current_budget->limit;
}

std::shared_ptr<std::string> Value::MakeString(std::string s) {
  return MakeCounted(std::move(s), [](const std::string& x) { return Clamp(x.size()); });
}

std::shared_ptr<ValueList> Value::MakeList(ValueList l) { return MakeCounted(std::move(l), ListBytes); }

std::shared_ptr<ValueDict> Value::MakeDict(ValueDict d) { return MakeCounted(std::move(d), DictBytes); }

namespace {
int64_t ProvenanceBytes(const Provenance& p) { return Clamp(p.capacity() * sizeof(Provenance::value_type)); }

std::shared_ptr<const Provenance> MakeProvenance(Provenance p) {
  return MakeCounted(std::move(p), ProvenanceBytes);
}
}  // namespace

Value Value::Untrusted(std::string s) {
  Provenance p;
  if (!s.empty()) p.emplace_back(0, s.size());
  return WithProvenance(std::move(s), std::move(p));
}

Value Value::WithProvenance(std::string s, Provenance untrusted) {
  Value v(std::move(s));
  v.untrusted_ = MakeProvenance(std::move(untrusted));
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& j, bool untrusted) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return None();
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return Value(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return untrusted ? Untrusted(j.get<std::string>()) : Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList l;
      for (const auto& e : j) l.push_back(FromJson(e, untrusted));
      return List(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), FromJson(it.value(), untrusted));
      Value v = Dict(std::move(d));
      if (untrusted) v.MarkKeysUntrusted();
      return v;
    }
    default: return Value();
  }
}

void Value::MarkKeysUntrusted() { untrusted_ = MakeProvenance({}); }

Value Value::Key(const std::string& key) const { return keys_untrusted() ? Untrusted(key) : Value(key); }

bool Value::AnyUntrusted(int depth) const {
  if (depth > 64) return true;  // not looked into: assume the worst
  switch (kind_) {
    case Kind::kString: return untrusted_ != nullptr && !untrusted_->empty();
    case Kind::kList:
      for (const Value& v : *list_) if (v.AnyUntrusted(depth + 1)) return true;
      return false;
    case Kind::kDict:
      if (keys_untrusted()) return true;
      for (const auto& [k, v] : *dict_) if (v.AnyUntrusted(depth + 1)) return true;
      return false;
    default: return false;
  }
}

void TextBuilder::MarkUntrusted(size_t begin, size_t end) {
  if (begin >= end) return;
  if (!untrusted_.empty() && untrusted_.back().second == begin) {
    untrusted_.back().second = end;
  } else {
    untrusted_.emplace_back(begin, end);
  }
}

void TextBuilder::Append(std::string_view text, bool untrusted) {
  const size_t at = text_.size();
  text_.append(text);
  if (untrusted) MarkUntrusted(at, text_.size());
}

void TextBuilder::AppendPart(const Value& v, size_t from, size_t len) {
  const std::string& s = v.as_string();
  from = std::min(from, s.size());
  len = std::min(len, s.size() - from);
  const size_t at = text_.size();
  text_.append(s, from, len);
  if (const Provenance* p = v.provenance()) {
    for (const auto& [b, e] : *p) {
      const size_t lo = std::max(b, from), hi = std::min(e, from + len);
      if (lo < hi) MarkUntrusted(at + (lo - from), at + (hi - from));
    }
  }
}

void TextBuilder::AppendValue(const Value& v) {
  if (v.is_string()) {
    AppendPart(v, 0, v.as_string().size());
  } else {
    Append(v.Str(), v.AnyUntrusted());
  }
}

Value TextBuilder::Build() && { return Value::WithProvenance(std::move(text_), std::move(untrusted_)); }

const Value* Value::Find(std::string_view key) const {
  for (const auto& [k, v] : *dict_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::Set(const std::string& key, Value v) const {
  for (auto& [k, old] : *dict_) {
    if (k == key) { old = std::move(v); return; }
  }
  // Growth is charged to the running render. For a dict made during it the
  // deleter gives it back; for one made outside (the context) it stays
  // counted until the render ends, which errs on the safe side.
  const size_t capacity = dict_->capacity();
  dict_->emplace_back(key, std::move(v));
  Charge(current_budget, Clamp((dict_->capacity() - capacity) * sizeof(ValueDict::value_type) + key.size()));
}

void Value::Append(Value v) const {
  const size_t capacity = list_->capacity();
  list_->push_back(std::move(v));
  Charge(current_budget, Clamp((list_->capacity() - capacity) * sizeof(Value)));
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined: case Kind::kNone: return false;
    case Kind::kBool: return b_;
    case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return d_ != 0;
    case Kind::kString: return !s_->empty();
    case Kind::kList: return !list_->empty();
    case Kind::kDict: return !dict_->empty();
    case Kind::kFunction: return true;
  }
  return false;
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, laid out as Python's repr does.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant) if (c != '.') digits.push_back(c);
  std::string out;
  if (exp < -4 || exp >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof(eb), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  } else if (exp < 0) {
    out = "0." + std::string(-exp - 1, '0') + digits;
  } else {
    if (static_cast<int>(digits.size()) <= exp + 1) {
      out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
  }
  return neg ? "-" + out : out;
}

namespace {
std::string PyStrRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') { out.push_back('\\'); out.push_back(c); }
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else out.push_back(c);
  }
  out.push_back(q);
  return out;
}

void JsonString(const std::string& s, std::string& out) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof(b), "\\u%04x", c);
          out += b;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}
}  // namespace

std::string Value::Str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kString: return *s_;
    default: return Repr();
  }
}

std::string Value::Repr() const {
  std::string out;
  ReprInto(out, 0);
  return out;
}

// Containers nested deeper than this print as Python prints a container
// that holds itself; a list appended to itself is legal in a template.
constexpr int kMaxReprDepth = 64;

void Value::ReprInto(std::string& out, int depth) const {
  switch (kind_) {
    case Kind::kUndefined: return;
    case Kind::kNone: out += "None"; return;
    case Kind::kBool: out += b_ ? "True" : "False"; return;
    case Kind::kInt: out += std::to_string(i_); return;
    case Kind::kFloat: out += FloatRepr(d_); return;
    case Kind::kString: out += PyStrRepr(*s_); return;
    case Kind::kList:
      if (depth >= kMaxReprDepth) { out += "[...]"; return; }
      out += "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i) out += ", ";
        (*list_)[i].ReprInto(out, depth + 1);
        // Shared references let a small value print as a huge one: stop
        // growing and overdraw the budget, so the render fails at its next
        // step instead of the process running out of memory.
        if (!AllocationBudget::Fits(out.size())) { AllocationBudget::Overdraw(); return; }
      }
      out += "]";
      return;
    case Kind::kDict:
      if (depth >= kMaxReprDepth) { out += "{...}"; return; }
      out += "{";
      for (size_t i = 0; i < dict_->size(); ++i) {
        if (i) out += ", ";
        out += PyStrRepr((*dict_)[i].first);
        out += ": ";
        (*dict_)[i].second.ReprInto(out, depth + 1);
        if (!AllocationBudget::Fits(out.size())) { AllocationBudget::Overdraw(); return; }
      }
      out += "}";
      return;
    case Kind::kFunction: out += "<function>"; return;
  }
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined: return "undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kFunction: return "function";
  }
  return "?";
}

namespace {
absl::Status TooBigForJson() {
  return absl::ResourceExhaustedError("chat template: tojson result exceeds the template's memory limit");
}
}  // namespace

absl::StatusOr<std::string> Value::ToJson(int indent, int depth) const {
  if (depth > 64) return absl::InvalidArgumentError("chat template: tojson value nested too deeply");
  const std::string nl = indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent) * (depth + 1), ' ') : "";
  const std::string nl_end = indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent) * depth, ' ') : "";
  const std::string item_sep = indent >= 0 ? "," : ", ";
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return std::string("null");
    case Kind::kBool: return std::string(b_ ? "true" : "false");
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat:
      if (std::isnan(d_)) return std::string("NaN");
      if (std::isinf(d_)) return std::string(d_ > 0 ? "Infinity" : "-Infinity");
      return FloatRepr(d_);
    case Kind::kString: { std::string out; JsonString(*s_, out); return out; }
    case Kind::kList: {
      if (list_->empty()) return std::string("[]");
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        out += i ? item_sep + nl : nl;
        auto e = (*list_)[i].ToJson(indent, depth + 1);
        if (!e.ok()) return e.status();
        out += *e;
        if (!AllocationBudget::Fits(out.size())) return TooBigForJson();
      }
      return out + nl_end + "]";
    }
    case Kind::kDict: {
      if (dict_->empty()) return std::string("{}");
      std::string out = "{";
      for (size_t i = 0; i < dict_->size(); ++i) {
        out += i ? item_sep + nl : nl;
        JsonString((*dict_)[i].first, out);
        out += ": ";
        auto e = (*dict_)[i].second.ToJson(indent, depth + 1);
        if (!e.ok()) return e.status();
        out += *e;
        if (!AllocationBudget::Fits(out.size())) return TooBigForJson();
      }
      return out + nl_end + "}";
    }
    case Kind::kFunction: return absl::InvalidArgumentError("chat template: a function is not JSON serializable");
  }
  return std::string("null");
}

namespace {
bool EqualAt(const Value& a, const Value& b, int depth);
}  // namespace

bool Equal(const Value& a, const Value& b) { return EqualAt(a, b, 0); }

namespace {
// Containers compare element by element; the same container is equal to
// itself without looking inside (so a list holding itself compares), and
// past kMaxReprDepth levels two distinct containers count as unequal
// rather than recursing without bound.
bool EqualAt(const Value& a, const Value& b, int depth) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined: case Value::Kind::kNone: return true;
    case Value::Kind::kString: return a.as_string() == b.as_string();
    case Value::Kind::kList: {
      if (&a.list() == &b.list()) return true;
      if (a.list().size() != b.list().size() || depth >= kMaxReprDepth) return false;
      for (size_t i = 0; i < a.list().size(); ++i) if (!EqualAt(a.list()[i], b.list()[i], depth + 1)) return false;
      return true;
    }
    case Value::Kind::kDict: {
      if (&a.dict() == &b.dict()) return true;
      if (a.dict().size() != b.dict().size() || depth >= kMaxReprDepth) return false;
      for (const auto& [k, v] : a.dict()) {
        const Value* o = b.Find(k);
        if (!o || !EqualAt(v, *o, depth + 1)) return false;
      }
      return true;
    }
    default: return false;
  }
}
}  // namespace

}  // namespace tessera::jinja
