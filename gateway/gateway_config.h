// GatewayConfig: every setting of tessera-gateway, from YAML and flags.
#ifndef TESSERA_GATEWAY_GATEWAY_CONFIG_H_
#define TESSERA_GATEWAY_GATEWAY_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gateway/completion_call.h"
#include "gateway/http/http_server.h"
#include "gateway/worker_pool.h"
#include "gateway/openai/request.h"

namespace tessera::gateway {

struct GatewayConfig {
  std::string listen = "127.0.0.1:8080";
  std::string grpc_listen;               // empty: no public gRPC API
  std::vector<std::string> workers;       // static HOST:PORT list
  std::vector<std::string> worker_dns;    // NAME:PORT, e.g. a headless Service; re-resolved
  std::string dns_server;                 // IPV4:PORT to ask instead of /etc/resolv.conf
  int dns_refresh_ms = 5000;
  int health_check_interval_ms = 1000;
  int health_check_timeout_ms = 1000;
  int connect_timeout_ms = 2000;
  int first_response_timeout_ms = 10000;  // a worker silent this long is hung: eject, retry elsewhere
  int max_attempts = 3;                   // per request, each on another worker
  double retry_budget_ratio = 0.2;        // retries in flight <= max(3, ratio x requests in flight)
  int outlier_consecutive_failures = 3;
  int base_ejection_ms = 5000;
  int max_in_flight_per_worker = 256;     // circuit breaker
  std::string metrics_listen;             // HOST:PORT for /metrics; empty: off
  int drain_timeout_s = 30;               // on SIGTERM: time for in-flight requests to finish
  std::vector<std::string> api_keys;     // empty: no authentication
  std::vector<std::string> admin_api_keys;  // adapter load/unload routes; empty: those routes are disabled
  int io_threads = 2;
  std::string routing_policy = "adapter-affinity";  // see gateway/routing/
  bool log_routing = false;                          // log every routing decision with its reason
  int request_timeout_s = 600;
  HttpLimits http;
  RequestLimits request;

  CompletionOptions CallOptions() const;
  WorkerPoolOptions PoolOptions() const;

  // Merges a YAML file (unknown keys are errors that name them).
  absl::Status LoadYaml(const std::string& path);
  absl::Status Validate() const;
  std::string ToYaml() const;  // for printing the effective configuration (keys redacted)
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_GATEWAY_CONFIG_H_
