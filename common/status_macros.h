// Status propagation helpers. Abseil does not export RETURN_IF_ERROR-style
// macros, so Tessera defines its own, prefixed to avoid collisions.
#ifndef TESSERA_COMMON_STATUS_MACROS_H_
#define TESSERA_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TESSERA_CONCAT_INNER_(a, b) a##b
#define TESSERA_CONCAT_(a, b) TESSERA_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define TESSERA_RETURN_IF_ERROR(expr)                 \
  do {                                                \
    ::absl::Status tessera_status_ = (expr);          \
    if (!tessera_status_.ok()) return tessera_status_; \
  } while (0)

// `lhs = value-of(rexpr)` or returns the error of the StatusOr `rexpr`.
#define TESSERA_ASSIGN_OR_RETURN(lhs, rexpr) \
  TESSERA_ASSIGN_OR_RETURN_IMPL_(TESSERA_CONCAT_(tessera_or_, __LINE__), lhs, rexpr)
#define TESSERA_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();        \
  lhs = std::move(tmp).value()

#endif  // TESSERA_COMMON_STATUS_MACROS_H_
