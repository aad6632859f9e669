#include "worker/chat/jinja_operators.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace tessera::jinja {

absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b, bool negated,
                               const BuiltinCall& call) {
  if (op == "==") return Value(Equal(a, b));
  if (op == "!=") return Value(!Equal(a, b));
  if (op == "in") {
    bool r = false;
    if (b.is_string() && a.is_string()) r = b.as_string().find(a.as_string()) != std::string::npos;
    else if (b.is_list()) r = std::any_of(b.list().begin(), b.list().end(), [&](const Value& x) { return Equal(a, x); });
    else if (b.is_dict()) r = a.is_string() && b.Find(a.as_string()) != nullptr;
    else if (!b.is_undefined() && !b.is_none()) return RenderError(call.line, absl::StrCat("'in' needs a container, got ", b.TypeName()));
    else return RenderError(call.line, "'in' on an undefined or None value");
    return Value(r != negated);
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int cmp;
    if (a.is_number() && b.is_number()) {
      cmp = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double() ? 1 : 0;
    } else if (a.is_string() && b.is_string()) {
      cmp = a.as_string().compare(b.as_string());
    } else {
      return RenderError(call.line, absl::StrCat("cannot compare ", a.TypeName(), " and ", b.TypeName()));
    }
    if (op == "<") return Value(cmp < 0);
    if (op == ">") return Value(cmp > 0);
    if (op == "<=") return Value(cmp <= 0);
    return Value(cmp >= 0);
  }
  if (op == "~") {
    const size_t la = a.is_string() ? a.as_string().size() : a.Str().size();
    const size_t lb = b.is_string() ? b.as_string().size() : b.Str().size();
    if (!AllocationBudget::Fits(la + lb)) return call.host->MemoryError(call.line);
    TextBuilder out;
    out.AppendValue(a);
    out.AppendValue(b);
    return std::move(out).Build();
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (!AllocationBudget::Fits(a.as_string().size() + b.as_string().size())) return call.host->MemoryError(call.line);
      TextBuilder out;
      out.AppendValue(a);
      out.AppendValue(b);
      return std::move(out).Build();
    }
    if (a.is_list() && b.is_list()) {
      if (!AllocationBudget::Fits((a.list().size() + b.list().size()) * sizeof(Value))) return call.host->MemoryError(call.line);
      ValueList l = a.list();
      l.insert(l.end(), b.list().begin(), b.list().end());
      return Value::List(std::move(l));
    }
  }
  if (op == "*" && a.is_string() && b.is_int()) {
    const size_t n = static_cast<size_t>(std::max<int64_t>(0, b.as_int()));
    const size_t len = a.as_string().size();
    if (len != 0 && (n > SIZE_MAX / len || !AllocationBudget::Fits(len * n))) return call.host->MemoryError(call.line);
    TextBuilder out;
    for (size_t i = 0; i < n; ++i) out.AppendValue(a);
    return std::move(out).Build();
  }
  if (!a.is_number() || !b.is_number()) {
    return RenderError(call.line, absl::StrCat("unsupported operand types for ", std::string(op), ": ", a.TypeName(), " and ", b.TypeName()));
  }
  const bool fl = a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat;
  if (op == "/") {
    if (b.as_double() == 0) return RenderError(call.line, "division by zero");
    return Value(a.as_double() / b.as_double());
  }
  if (op == "+") return fl ? Value(a.as_double() + b.as_double()) : Value(a.as_int() + b.as_int());
  if (op == "-") return fl ? Value(a.as_double() - b.as_double()) : Value(a.as_int() - b.as_int());
  if (op == "*") return fl ? Value(a.as_double() * b.as_double()) : Value(a.as_int() * b.as_int());
  if (op == "**") return fl ? Value(std::pow(a.as_double(), b.as_double())) : Value(static_cast<int64_t>(std::pow(a.as_double(), b.as_double())));
  if (op == "//" || op == "%") {
    if (b.as_double() == 0) return RenderError(call.line, "division by zero");
    if (fl) {
      const double q = std::floor(a.as_double() / b.as_double());
      return op == "//" ? Value(q) : Value(a.as_double() - q * b.as_double());
    }
    int64_t q = a.as_int() / b.as_int();
    if ((a.as_int() % b.as_int() != 0) && ((a.as_int() < 0) != (b.as_int() < 0))) --q;
    return op == "//" ? Value(q) : Value(a.as_int() - q * b.as_int());
  }
  return RenderError(call.line, absl::StrCat("unsupported operator ", std::string(op)));
}

}  // namespace tessera::jinja
