// Fields an error carries beyond its code and message, for the client's
// error body: the request parameter at fault and a machine-readable code
// (OpenAI's "param" and "code", e.g. "context_length_exceeded"). They ride
// on absl::Status payloads inside a process and in gRPC error details
// between the worker and the gateway.
#ifndef TESSERA_COMMON_STATUS_FIELDS_H_
#define TESSERA_COMMON_STATUS_FIELDS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace tessera {

absl::Status WithParam(absl::Status s, std::string_view param);
std::string ParamOf(const absl::Status& s);
absl::Status WithCode(absl::Status s, std::string_view code);
std::string CodeOf(const absl::Status& s);

// The fields as a small JSON object for gRPC error details ("" if none), and
// back: unknown or malformed details are ignored.
std::string FieldsToDetails(const absl::Status& s);
absl::Status WithFieldsFromDetails(absl::Status s, std::string_view details);

}  // namespace tessera

#endif  // TESSERA_COMMON_STATUS_FIELDS_H_
