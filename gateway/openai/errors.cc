#include "gateway/openai/errors.h"

#include "absl/strings/cord.h"
#include "nlohmann/json.hpp"

namespace tessera::gateway {
namespace {
constexpr char kParamUrl[] = "tessera.dev/param";
constexpr char kCodeUrl[] = "tessera.dev/code";
}  // namespace

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
  absl::Status s = absl::InvalidArgumentError(std::string(message));
  s.SetPayload(kParamUrl, absl::Cord(std::string(param)));
  return s;
}

std::string ParamOf(const absl::Status& s) {
  auto p = s.GetPayload(kParamUrl);
  return p ? std::string(*p) : std::string();
}

absl::Status WithCode(absl::Status s, std::string_view code) {
  s.SetPayload(kCodeUrl, absl::Cord(std::string(code)));
  return s;
}

std::string ErrorBody(const absl::Status& s) {
  nlohmann::json e;
  e["message"] = std::string(s.message());
  e["type"] = MapStatus(s.code()).type;
  const std::string param = ParamOf(s);
  e["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param);
  auto code = s.GetPayload(kCodeUrl);
  e["code"] = code ? nlohmann::json(std::string(*code)) : nlohmann::json(nullptr);
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace tessera::gateway
