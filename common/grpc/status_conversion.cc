#include "common/grpc/status_conversion.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_fields.h"

namespace tessera {
namespace {

// The numbers are the canonical codes of both libraries; the casts below
// rely on it.
#define TESSERA_SAME_CODE(absl_name, grpc_name) \
  static_assert(static_cast<int>(absl::StatusCode::absl_name) == static_cast<int>(grpc::StatusCode::grpc_name))
TESSERA_SAME_CODE(kOk, OK);
TESSERA_SAME_CODE(kCancelled, CANCELLED);
TESSERA_SAME_CODE(kUnknown, UNKNOWN);
TESSERA_SAME_CODE(kInvalidArgument, INVALID_ARGUMENT);
TESSERA_SAME_CODE(kDeadlineExceeded, DEADLINE_EXCEEDED);
TESSERA_SAME_CODE(kNotFound, NOT_FOUND);
TESSERA_SAME_CODE(kAlreadyExists, ALREADY_EXISTS);
TESSERA_SAME_CODE(kPermissionDenied, PERMISSION_DENIED);
TESSERA_SAME_CODE(kResourceExhausted, RESOURCE_EXHAUSTED);
TESSERA_SAME_CODE(kFailedPrecondition, FAILED_PRECONDITION);
TESSERA_SAME_CODE(kAborted, ABORTED);
TESSERA_SAME_CODE(kOutOfRange, OUT_OF_RANGE);
TESSERA_SAME_CODE(kUnimplemented, UNIMPLEMENTED);
TESSERA_SAME_CODE(kInternal, INTERNAL);
TESSERA_SAME_CODE(kUnavailable, UNAVAILABLE);
TESSERA_SAME_CODE(kDataLoss, DATA_LOSS);
TESSERA_SAME_CODE(kUnauthenticated, UNAUTHENTICATED);
#undef TESSERA_SAME_CODE

constexpr int kLastCanonicalCode = static_cast<int>(grpc::StatusCode::UNAUTHENTICATED);

}  // namespace

grpc::StatusCode ToGrpcCode(absl::StatusCode code) {
  const int n = static_cast<int>(code);
  return n >= 0 && n <= kLastCanonicalCode ? static_cast<grpc::StatusCode>(n) : grpc::StatusCode::UNKNOWN;
}

absl::StatusCode FromGrpcCode(grpc::StatusCode code) {
  const int n = static_cast<int>(code);
  return n >= 0 && n <= kLastCanonicalCode ? static_cast<absl::StatusCode>(n) : absl::StatusCode::kUnknown;
}

grpc::Status ToGrpcStatus(const absl::Status& s, const ToGrpcOptions& options) {
  if (s.ok()) return grpc::Status::OK;
  grpc::StatusCode code = ToGrpcCode(s.code());
  if (options.unknown_as_internal && code == grpc::StatusCode::UNKNOWN) code = grpc::StatusCode::INTERNAL;
  switch (options.fields) {
    case ToGrpcOptions::Fields::kDetails:
      return grpc::Status(code, std::string(s.message()), FieldsToDetails(s));
    case ToGrpcOptions::Fields::kParamInMessage: {
      std::string msg(s.message());
      if (const std::string param = ParamOf(s); !param.empty()) msg = absl::StrCat(msg, " (param: ", param, ")");
      return grpc::Status(code, msg);
    }
  }
  return grpc::Status(code, std::string(s.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return WithFieldsFromDetails(absl::Status(FromGrpcCode(s.error_code()), s.error_message()), s.error_details());
}

}  // namespace tessera
