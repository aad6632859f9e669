#include "gateway/openai/errors.h"

#include "absl/strings/cord.h"
#include "nlohmann/json.hpp"

namespace tessera::gateway {
HttpError MapStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return {400, "invalid_request_error"};
    case absl::StatusCode::kUnauthenticated: return {401, "authentication_error"};
    case absl::StatusCode::kPermissionDenied: return {403, "permission_error"};
    case absl::StatusCode::kNotFound: return {404, "invalid_request_error"};
    case absl::StatusCode::kAlreadyExists: return {409, "invalid_request_error"};
    case absl::StatusCode::kResourceExhausted: return {429, "rate_limit_error"};
    case absl::StatusCode::kCancelled: return {499, "client_closed_request"};
    case absl::StatusCode::kUnimplemented: return {501, "not_implemented_error"};
    case absl::StatusCode::kUnavailable: return {503, "service_unavailable_error"};
    case absl::StatusCode::kDeadlineExceeded: return {504, "timeout_error"};
    default: return {500, "server_error"};
  }
}

absl::Status ParamError(std::string_view param, std::string_view message) {
  return WithParam(absl::InvalidArgumentError(std::string(message)), param);
}

std::string ErrorBody(const absl::Status& s) {
  nlohmann::json e;
  e["message"] = std::string(s.message());
  e["type"] = MapStatus(s.code()).type;
  const std::string param = ParamOf(s);
  e["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param);
  const std::string code = CodeOf(s);
  e["code"] = code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code);
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace tessera::gateway
