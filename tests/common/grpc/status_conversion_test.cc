#include "common/grpc/status_conversion.h"

#include <vector>

#include "common/status_fields.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

struct CodePair {
  absl::StatusCode absl_code;
  grpc::StatusCode grpc_code;
};

const std::vector<CodePair>& AllCodes() {
  static const std::vector<CodePair> codes = {
      {absl::StatusCode::kOk, grpc::StatusCode::OK},
      {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
      {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
  };
  return codes;
}

TEST(StatusConversionTest, EveryCanonicalCodeMapsBothWays) {
  for (const CodePair& c : AllCodes()) {
    EXPECT_EQ(ToGrpcCode(c.absl_code), c.grpc_code) << static_cast<int>(c.absl_code);
    EXPECT_EQ(FromGrpcCode(c.grpc_code), c.absl_code) << static_cast<int>(c.grpc_code);
  }
}

TEST(StatusConversionTest, CodesOutsideTheCanonicalSetAreUnknown) {
  EXPECT_EQ(ToGrpcCode(static_cast<absl::StatusCode>(42)), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(ToGrpcCode(static_cast<absl::StatusCode>(-1)), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(FromGrpcCode(static_cast<grpc::StatusCode>(42)), absl::StatusCode::kUnknown);
}

TEST(StatusConversionTest, StatusesKeepCodeAndMessageBothWays) {
  for (const CodePair& c : AllCodes()) {
    if (c.absl_code == absl::StatusCode::kOk) continue;
    const grpc::Status g = ToGrpcStatus(absl::Status(c.absl_code, "why"));
    EXPECT_EQ(g.error_code(), c.grpc_code);
    EXPECT_EQ(g.error_message(), "why");
    const absl::Status a = FromGrpcStatus(grpc::Status(c.grpc_code, "why"));
    EXPECT_EQ(a.code(), c.absl_code);
    EXPECT_EQ(a.message(), "why");
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

// The worker: UNKNOWN on the wire means a dropped transport to the gateway
// (retried), so the worker's own unknown errors go out as INTERNAL.
TEST(StatusConversionTest, UnknownAsInternalChangesOnlyUnknown) {
  const ToGrpcOptions worker{.fields = ToGrpcOptions::Fields::kDetails, .unknown_as_internal = true};
  EXPECT_EQ(ToGrpcStatus(absl::UnknownError("x"), worker).error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(ToGrpcStatus(absl::UnknownError("x")).error_code(), grpc::StatusCode::UNKNOWN);
  for (const CodePair& c : AllCodes()) {
    if (c.absl_code == absl::StatusCode::kOk || c.absl_code == absl::StatusCode::kUnknown) continue;
    EXPECT_EQ(ToGrpcStatus(absl::Status(c.absl_code, "x"), worker).error_code(), c.grpc_code);
  }
}

TEST(StatusConversionTest, FieldsTravelInDetailsAndComeBack) {
  const absl::Status s = WithCode(WithParam(absl::InvalidArgumentError("too long"), "max_tokens"),
                                  "context_length_exceeded");
  const grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_message(), "too long");
  EXPECT_FALSE(g.error_details().empty());
  const absl::Status back = FromGrpcStatus(g);
  EXPECT_EQ(back.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(back.message(), "too long");
  EXPECT_EQ(ParamOf(back), "max_tokens");
  EXPECT_EQ(CodeOf(back), "context_length_exceeded");
}

// The public gRPC API: the param is in the message, no details.
TEST(StatusConversionTest, ParamInMessageForThePublicApi) {
  const ToGrpcOptions api{.fields = ToGrpcOptions::Fields::kParamInMessage};
  const grpc::Status g = ToGrpcStatus(WithParam(absl::InvalidArgumentError("bad"), "top_p"), api);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.error_message(), "bad (param: top_p)");
  EXPECT_TRUE(g.error_details().empty());
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("bad"), api).error_message(), "bad");
}

TEST(StatusConversionTest, MalformedDetailsAreIgnored) {
  const absl::Status a = FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "gone", "{not json"));
  EXPECT_EQ(a.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a.message(), "gone");
  EXPECT_EQ(ParamOf(a), "");
}

}  // namespace
}  // namespace tessera
