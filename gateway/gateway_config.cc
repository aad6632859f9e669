#include "gateway/gateway_config.h"

#include "gateway/routing/routing_policy.h"

#include <yaml-cpp/yaml.h>

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
  if (workers.empty()) return absl::InvalidArgumentError("no workers: give --worker HOST:PORT (repeatable) or 'workers:'");
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

std::string GatewayConfig::ToYaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "listen" << YAML::Value << listen;
  out << YAML::Key << "grpc_listen" << YAML::Value << grpc_listen;
  out << YAML::Key << "workers" << YAML::Value << YAML::Flow << workers;
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
