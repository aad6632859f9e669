// Binary operators of the Jinja2 subset, with Python's semantics: ==, !=,
// in / not in, < > <= >=, ~, + - * / // % **. Sizes a result would take
// are asked of the value budget before it is built (repeat, concatenation).
//
// Thread-safety: a pure function of its operands (and the calling render's
// host, for its memory error).
#ifndef TESSERA_WORKER_CHAT_JINJA_OPERATORS_H_
#define TESSERA_WORKER_CHAT_JINJA_OPERATORS_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "worker/chat/jinja_builtins.h"
#include "worker/chat/jinja_value.h"

namespace tessera::jinja {

// `a op b`; `negated` turns `in` into `not in`. `call.name` is the operator.
absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b, bool negated,
                               const BuiltinCall& call);

}  // namespace tessera::jinja

#endif  // TESSERA_WORKER_CHAT_JINJA_OPERATORS_H_
