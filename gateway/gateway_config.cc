#include "gateway/gateway_config.h"

#include "gateway/routing/routing_policy.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tessera::gateway {

absl::Status GatewayConfig::LoadYaml(const std::string& path) {
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(path, ": the top level must be a mapping"));
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      if (key == "listen") listen = v.as<std::string>();
      else if (key == "grpc_listen") grpc_listen = v.as<std::string>();
      else if (key == "workers") workers = v.as<std::vector<std::string>>();
      else if (key == "worker_dns") worker_dns = v.as<std::vector<std::string>>();
      else if (key == "dns_server") dns_server = v.as<std::string>();
      else if (key == "dns_refresh_ms") dns_refresh_ms = v.as<int>();
      else if (key == "health_check_interval_ms") health_check_interval_ms = v.as<int>();
      else if (key == "health_check_timeout_ms") health_check_timeout_ms = v.as<int>();
      else if (key == "connect_timeout_ms") connect_timeout_ms = v.as<int>();
      else if (key == "first_response_timeout_ms") first_response_timeout_ms = v.as<int>();
      else if (key == "max_attempts") max_attempts = v.as<int>();
      else if (key == "retry_budget_ratio") retry_budget_ratio = v.as<double>();
      else if (key == "outlier_consecutive_failures") outlier_consecutive_failures = v.as<int>();
      else if (key == "base_ejection_ms") base_ejection_ms = v.as<int>();
      else if (key == "max_in_flight_per_worker") max_in_flight_per_worker = v.as<int>();
      else if (key == "metrics_listen") metrics_listen = v.as<std::string>();
      else if (key == "drain_timeout_s") drain_timeout_s = v.as<int>();
      else if (key == "api_keys") api_keys = v.as<std::vector<std::string>>();
      else if (key == "admin_api_keys") admin_api_keys = v.as<std::vector<std::string>>();
      else if (key == "io_threads") io_threads = v.as<int>();
      else if (key == "routing_policy") routing_policy = v.as<std::string>();
      else if (key == "log_routing") log_routing = v.as<bool>();
      else if (key == "request_timeout_s") request_timeout_s = v.as<int>();
      else if (key == "max_n") request.max_n = v.as<int>();
      else if (key == "max_body_bytes") http.max_body_bytes = v.as<size_t>();
      else if (key == "max_header_bytes") http.max_header_bytes = v.as<size_t>();
      else if (key == "max_header_count") http.max_header_count = v.as<size_t>();
      else if (key == "max_json_depth") request.max_depth = v.as<int>();
      else if (key == "request_read_timeout_s") http.request_timeout = std::chrono::seconds(v.as<int>());
      else if (key == "idle_timeout_s") http.idle_timeout = std::chrono::seconds(v.as<int>());
      else return absl::InvalidArgumentError(absl::StrCat(path, ": unknown key '", key, "'"));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status GatewayConfig::Validate() const {
  if (workers.empty() && worker_dns.empty()) {
    return absl::InvalidArgumentError(
        "no workers: give --worker HOST:PORT (repeatable), --worker-dns NAME:PORT, 'workers:' or 'worker_dns:'");
  }
  for (const auto& name : worker_dns) {
    if (auto t = ParseDnsTarget(name); !t.ok()) return t.status();
  }
  auto in_range = [](const char* key, double v, double lo, double hi) -> absl::Status {
    if (v >= lo && v <= hi) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(key, " must be in [", lo, ", ", hi, "]; got ", v));
  };
  for (absl::Status s : {in_range("dns_refresh_ms", dns_refresh_ms, 100, 3600000),
                         in_range("health_check_interval_ms", health_check_interval_ms, 50, 600000),
                         in_range("health_check_timeout_ms", health_check_timeout_ms, 10, 600000),
                         in_range("connect_timeout_ms", connect_timeout_ms, 100, 600000),
                         in_range("first_response_timeout_ms", first_response_timeout_ms, 10, 3600000),
                         in_range("max_attempts", max_attempts, 1, 10),
                         in_range("retry_budget_ratio", retry_budget_ratio, 0, 1),
                         in_range("outlier_consecutive_failures", outlier_consecutive_failures, 1, 1000),
                         in_range("base_ejection_ms", base_ejection_ms, 10, 3600000),
                         in_range("max_in_flight_per_worker", max_in_flight_per_worker, 1, 1000000),
                         in_range("drain_timeout_s", drain_timeout_s, 0, 3600)}) {
    if (!s.ok()) return s;
  }
  if (io_threads < 1 || io_threads > 256) return absl::InvalidArgumentError("io_threads must be in [1, 256]");
  if (auto p = CreateRoutingPolicy(routing_policy); !p.ok()) return p.status();
  if (request.max_n < 1 || request.max_n > 128) return absl::InvalidArgumentError("max_n must be in [1, 128]");
  if (request_timeout_s < 1) return absl::InvalidArgumentError("request_timeout_s must be >= 1");
  if (http.max_body_bytes < 1024) return absl::InvalidArgumentError("max_body_bytes must be >= 1024");
  for (const auto& k : admin_api_keys) {
    if (k.empty()) return absl::InvalidArgumentError("admin_api_keys must not contain empty keys");
  }
  for (const auto& k : api_keys) {
    if (k.empty()) return absl::InvalidArgumentError("api_keys must not contain empty keys");
  }
  return absl::OkStatus();
}

CompletionOptions GatewayConfig::CallOptions() const {
  CompletionOptions o;
  o.timeout = std::chrono::seconds(request_timeout_s);
  o.first_response_timeout = std::chrono::milliseconds(first_response_timeout_ms);
  o.max_attempts = max_attempts;
  return o;
}

WorkerPoolOptions GatewayConfig::PoolOptions() const {
  WorkerPoolOptions o;
  o.dns_names = worker_dns;
  o.dns.server = dns_server;
  o.dns_refresh_interval = std::chrono::milliseconds(dns_refresh_ms);
  o.refresh_interval = std::chrono::milliseconds(health_check_interval_ms);
  o.probe_timeout = std::chrono::milliseconds(health_check_timeout_ms);
  o.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
  o.routing_policy = routing_policy;
  o.log_routing = log_routing;
  o.outlier_consecutive_failures = outlier_consecutive_failures;
  o.base_ejection = std::chrono::milliseconds(base_ejection_ms);
  o.max_ejection = std::max(o.base_ejection, std::chrono::milliseconds(60000));
  o.max_in_flight_per_worker = max_in_flight_per_worker;
  o.retry_budget_ratio = retry_budget_ratio;
  return o;
}

std::string GatewayConfig::ToYaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "listen" << YAML::Value << listen;
  out << YAML::Key << "grpc_listen" << YAML::Value << grpc_listen;
  out << YAML::Key << "workers" << YAML::Value << YAML::Flow << workers;
  out << YAML::Key << "worker_dns" << YAML::Value << YAML::Flow << worker_dns;
  out << YAML::Key << "dns_server" << YAML::Value << dns_server;
  out << YAML::Key << "dns_refresh_ms" << YAML::Value << dns_refresh_ms;
  out << YAML::Key << "health_check_interval_ms" << YAML::Value << health_check_interval_ms;
  out << YAML::Key << "health_check_timeout_ms" << YAML::Value << health_check_timeout_ms;
  out << YAML::Key << "connect_timeout_ms" << YAML::Value << connect_timeout_ms;
  out << YAML::Key << "first_response_timeout_ms" << YAML::Value << first_response_timeout_ms;
  out << YAML::Key << "max_attempts" << YAML::Value << max_attempts;
  out << YAML::Key << "retry_budget_ratio" << YAML::Value << retry_budget_ratio;
  out << YAML::Key << "outlier_consecutive_failures" << YAML::Value << outlier_consecutive_failures;
  out << YAML::Key << "base_ejection_ms" << YAML::Value << base_ejection_ms;
  out << YAML::Key << "max_in_flight_per_worker" << YAML::Value << max_in_flight_per_worker;
  out << YAML::Key << "metrics_listen" << YAML::Value << metrics_listen;
  out << YAML::Key << "drain_timeout_s" << YAML::Value << drain_timeout_s;
  out << YAML::Key << "api_keys" << YAML::Value << absl::StrCat(api_keys.size(), " configured");
  out << YAML::Key << "admin_api_keys" << YAML::Value << absl::StrCat(admin_api_keys.size(), " configured");
  out << YAML::Key << "io_threads" << YAML::Value << io_threads;
  out << YAML::Key << "routing_policy" << YAML::Value << routing_policy;
  out << YAML::Key << "log_routing" << YAML::Value << log_routing;
  out << YAML::Key << "request_timeout_s" << YAML::Value << request_timeout_s;
  out << YAML::Key << "max_n" << YAML::Value << request.max_n;
  out << YAML::Key << "max_body_bytes" << YAML::Value << http.max_body_bytes;
  out << YAML::Key << "max_header_bytes" << YAML::Value << http.max_header_bytes;
  out << YAML::Key << "max_header_count" << YAML::Value << http.max_header_count;
  out << YAML::Key << "max_json_depth" << YAML::Value << request.max_depth;
  out << YAML::Key << "request_read_timeout_s" << YAML::Value << http.request_timeout.count();
  out << YAML::Key << "idle_timeout_s" << YAML::Value << http.idle_timeout.count();
  out << YAML::EndMap;
  return out.c_str();
}

}  // namespace tessera::gateway
