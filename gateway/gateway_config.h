// GatewayConfig: every setting of tessera-gateway, from YAML and flags.
#ifndef TESSERA_GATEWAY_GATEWAY_CONFIG_H_
#define TESSERA_GATEWAY_GATEWAY_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gateway/http/http_server.h"
#include "gateway/openai/request.h"

namespace tessera::gateway {

struct GatewayConfig {
  std::string listen = "127.0.0.1:8080";
  std::string grpc_listen;               // empty: no public gRPC API
  std::vector<std::string> workers;
  std::vector<std::string> api_keys;     // empty: no authentication
  std::vector<std::string> admin_api_keys;  // adapter load/unload routes; empty: those routes are disabled
  int io_threads = 2;
  std::string routing_policy = "adapter-affinity";  // see gateway/routing/
  bool log_routing = false;                          // log every routing decision with its reason
  int request_timeout_s = 600;
  HttpLimits http;
  RequestLimits request;

  // Merges a YAML file (unknown keys are errors that name them).
  absl::Status LoadYaml(const std::string& path);
  absl::Status Validate() const;
  std::string ToYaml() const;  // for printing the effective configuration (keys redacted)
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_GATEWAY_CONFIG_H_
