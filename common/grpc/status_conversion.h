// Conversions between absl::Status (inside a process) and grpc::Status (on
// the wire), in one place for the worker, the gateway's calls to workers and
// the gateway's public gRPC API.
//
// The two code spaces are the same canonical codes with the same numbers
// (static_asserts in the .cc); a number outside them maps to UNKNOWN. What
// differs between the call sites is stated in the options, not re-derived:
//   - the worker never sends UNKNOWN (the gateway reads an UNKNOWN from a
//     worker as a dropped transport, retryable): `unknown_as_internal`;
//   - the worker carries an error's param/code (status_fields.h) in the gRPC
//     error details, which the gateway reads back (`FromGrpcStatus`);
//   - the public gRPC API has no details schema: the param goes into the
//     message instead, as " (param: NAME)".
//
// Thread-safety: pure functions.
#ifndef TESSERA_COMMON_GRPC_STATUS_CONVERSION_H_
#define TESSERA_COMMON_GRPC_STATUS_CONVERSION_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace tessera {

grpc::StatusCode ToGrpcCode(absl::StatusCode code);
absl::StatusCode FromGrpcCode(grpc::StatusCode code);

struct ToGrpcOptions {
  // Where the error's fields (param, code) go.
  enum class Fields {
    kDetails,         // FieldsToDetails JSON in error_details (worker -> gateway)
    kParamInMessage,  // " (param: NAME)" appended to the message (public API)
  };
  Fields fields = Fields::kDetails;
  // kUnknown is sent as INTERNAL (UNKNOWN is left to the transport).
  bool unknown_as_internal = false;
};

// The two policies in use, named so the difference stays visible:
// the worker's replies to the gateway ...
inline constexpr ToGrpcOptions kWorkerReplyOptions{.fields = ToGrpcOptions::Fields::kDetails,
                                                   .unknown_as_internal = true};
// ... and the gateway's public gRPC API.
inline constexpr ToGrpcOptions kPublicApiOptions{.fields = ToGrpcOptions::Fields::kParamInMessage,
                                                 .unknown_as_internal = false};

grpc::Status ToGrpcStatus(const absl::Status& s, const ToGrpcOptions& options = {});

// Same code and message; the param/code fields are read back from the
// error details (unknown or malformed details are ignored).
absl::Status FromGrpcStatus(const grpc::Status& s);

}  // namespace tessera

#endif  // TESSERA_COMMON_GRPC_STATUS_CONVERSION_H_
