// The one place where errors reach the wire: absl::StatusCode -> HTTP status
// and OpenAI error type, and the OpenAI error body
// {"error": {"message", "type", "param", "code"}}.
#ifndef TESSERA_GATEWAY_OPENAI_ERRORS_H_
#define TESSERA_GATEWAY_OPENAI_ERRORS_H_

#include <string>

#include "absl/status/status.h"
#include "common/status_fields.h"

namespace tessera::gateway {

struct HttpError {
  int http_status;
  std::string type;
};
HttpError MapStatus(absl::StatusCode code);

// A Status that names the offending request parameter. The parameter travels
// as a payload (common/status_fields.h) so that the error body can fill
// "param"; WithCode adds an OpenAI error "code" (e.g. model_not_found).
absl::Status ParamError(std::string_view param, std::string_view message);
using ::tessera::ParamOf;
using ::tessera::WithCode;

// The JSON body for an error.
std::string ErrorBody(const absl::Status& s);

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_OPENAI_ERRORS_H_
