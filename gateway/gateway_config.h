// GatewayConfig: every setting of tessera-gateway, and the one table of its
// keys (gateway_config.cc) from which the YAML file's reading, the flags and
// the printed effective configuration are derived
// (common/config/config_table.h).
//
// Thread-safety: a GatewayConfig is a plain value. TheGatewayConfigTable() is
// built on first use; call it first from main, before other threads start.
#ifndef TESSERA_GATEWAY_GATEWAY_CONFIG_H_
#define TESSERA_GATEWAY_GATEWAY_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config/config_table.h"
#include "gateway/completion_call.h"
#include "gateway/http/http_server.h"
#include "gateway/worker_pool.h"
#include "gateway/openai/request.h"

namespace tessera::gateway {

// Defaults live in the table (gateway_config.cc), most read from what they
// configure (WorkerPoolOptions, CompletionOptions, HttpLimits,
// RequestLimits); a bare GatewayConfig{} holds zeros: start from
// TheGatewayConfigTable().Defaults() or LoadGatewayConfig.
struct GatewayConfig {
  std::string listen;
  std::string grpc_listen;               // empty: no public gRPC API
  std::vector<std::string> workers;       // static HOST:PORT list
  std::vector<std::string> worker_dns;    // NAME:PORT, e.g. a headless Service; re-resolved
  std::string dns_server;                 // IPV4:PORT to ask instead of /etc/resolv.conf
  int dns_refresh_ms = 0;
  int health_check_interval_ms = 0;
  int health_check_timeout_ms = 0;
  int connect_timeout_ms = 0;
  int first_response_timeout_ms = 0;  // a worker silent this long is hung: eject, retry elsewhere
  int max_attempts = 0;               // per request, each on another worker
  double retry_budget_ratio = 0;      // retries in flight <= max(3, ratio x requests in flight)
  int outlier_consecutive_failures = 0;
  int base_ejection_ms = 0;
  int max_in_flight_per_worker = 0;   // circuit breaker
  std::string metrics_listen;         // HOST:PORT for /metrics; empty: off
  int drain_timeout_s = 0;            // on SIGTERM: time for in-flight requests to finish
  std::vector<std::string> api_keys;        // empty: no authentication
  std::vector<std::string> admin_api_keys;  // adapter load/unload routes; empty: those routes are disabled
  int io_threads = 0;
  std::string routing_policy;  // see gateway/routing/
  bool log_routing = false;    // log every routing decision with its reason
  int request_timeout_s = 0;
  HttpLimits http;
  RequestLimits request;

  CompletionOptions CallOptions() const;
  WorkerPoolOptions PoolOptions() const;
};

using GatewayConfigTable = config::ConfigTable<GatewayConfig>;

// A new table of GatewayConfig's keys (tests build their own).
GatewayConfigTable MakeGatewayConfigTable();

// The process's table, whose flags main registers.
GatewayConfigTable& TheGatewayConfigTable();

// Defaults, then the YAML file at `yaml_path` (none if empty), then `flags`;
// validated.
absl::StatusOr<GatewayConfig> LoadGatewayConfig(const GatewayConfigTable& table, const std::string& yaml_path,
                                                const std::vector<config::FlagText>& flags);

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_GATEWAY_CONFIG_H_
