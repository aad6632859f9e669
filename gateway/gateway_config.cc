#include "gateway/gateway_config.h"

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "gateway/discovery/dns_resolver.h"
#include "gateway/routing/routing_policy.h"

namespace tessera::gateway {
namespace {

using config::AtLeast;
using config::InRange;
using K = config::Key<GatewayConfig>;
using Strings = std::vector<std::string>;

// Defaults owned by the gateway itself; the rest are read from what they
// configure, so that each is spelt once.
constexpr int kDefaultDrainTimeoutS = 30;
constexpr int kDefaultIoThreads = 2;

const WorkerPoolOptions kPool;
const CompletionOptions kCall;
const HttpLimits kHttp;
const RequestLimits kRequest;

template <typename Duration>
int Ms(Duration d) {
  return static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

absl::Status CheckWorkerDns(std::string_view, const Strings& names) {
  for (const auto& name : names) {
    if (auto t = ParseDnsTarget(name); !t.ok()) return t.status();
  }
  return absl::OkStatus();
}

absl::Status CheckRoutingPolicy(std::string_view, const std::string& name) {
  return CreateRoutingPolicy(name).status();
}

absl::Status NoEmptyKeys(std::string_view name, const Strings& keys) {
  for (const auto& k : keys) {
    if (k.empty()) return absl::InvalidArgumentError(absl::StrCat(std::string(name), " must not contain empty keys"));
  }
  return absl::OkStatus();
}

absl::Status CheckSomeWorkers(const GatewayConfig& c) {
  if (!c.workers.empty() || !c.worker_dns.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "no workers: give --worker HOST:PORT (repeatable), --worker-dns NAME:PORT, 'workers:' or 'worker_dns:'");
}

}  // namespace

GatewayConfigTable MakeGatewayConfigTable() {
  using C = GatewayConfig;
  using std::chrono::seconds;
  return GatewayConfigTable(
      "tessera-gateway", "gateway/gateway_config.cc",
      {
          K::Of("listen", &C::listen, std::string("127.0.0.1:8080"), "HTTP address"),
          K::Of("grpc_listen", &C::grpc_listen, std::string(), "public gRPC API address (default: off)"),
          K::Of("workers", &C::workers, Strings(), "worker HOST:PORT; repeatable or comma-separated").Flag("worker"),
          K::Of("worker_dns", &C::worker_dns, Strings(),
                "NAME:PORT resolved to workers (e.g. a Kubernetes headless Service), re-resolved periodically",
                CheckWorkerDns),
          K::Of("dns_server", &C::dns_server, std::string(),
                "IPV4:PORT of the DNS server for --worker-dns (default: /etc/resolv.conf)"),
          K::Of("dns_refresh_ms", &C::dns_refresh_ms, Ms(kPool.dns_refresh_interval),
                "re-resolve --worker-dns names this often", InRange(100, 3600000)),
          K::Of("health_check_interval_ms", &C::health_check_interval_ms, Ms(kPool.refresh_interval),
                "probe workers (grpc.health.v1) this often", InRange(50, 600000)),
          K::Of("health_check_timeout_ms", &C::health_check_timeout_ms, Ms(kPool.probe_timeout),
                "a probe not answered in this time fails", InRange(10, 600000)),
          K::Of("connect_timeout_ms", &C::connect_timeout_ms, Ms(kPool.connect_timeout),
                "bound on one connection attempt to a worker", InRange(100, 600000)),
          K::Of("first_response_timeout_ms", &C::first_response_timeout_ms, Ms(kCall.first_response_timeout),
                "a worker that has not accepted a request in this time is ejected and the request retried",
                InRange(10, 3600000)),
          K::Of("max_attempts", &C::max_attempts, kCall.max_attempts, "attempts per request, each on another worker",
                InRange(1, 10)),
          K::Of("retry_budget_ratio", &C::retry_budget_ratio, kPool.retry_budget_ratio,
                "retries in flight at most max(3, this x requests in flight)", InRange(0.0, 1.0)),
          K::Of("outlier_consecutive_failures", &C::outlier_consecutive_failures, kPool.outlier_consecutive_failures,
                "consecutive failed requests that eject a worker", InRange(1, 1000)),
          K::Of("base_ejection_ms", &C::base_ejection_ms, Ms(kPool.base_ejection),
                "an ejected worker stays out this long times its consecutive ejections", InRange(10, 3600000)),
          K::Of("max_in_flight_per_worker", &C::max_in_flight_per_worker, kPool.max_in_flight_per_worker,
                "circuit breaker: streams in flight per worker", InRange(1, 1000000)),
          K::Of("metrics_listen", &C::metrics_listen, std::string(),
                "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)"),
          K::Of("drain_timeout_s", &C::drain_timeout_s, kDefaultDrainTimeoutS,
                "on SIGTERM, time for in-flight requests to finish", InRange(0, 3600)),
          K::Of("api_keys", &C::api_keys, Strings(), "API key clients must send as 'Authorization: Bearer KEY'",
                NoEmptyKeys)
              .Flag("api_key")
              .Secret(),
          K::Of("admin_api_keys", &C::admin_api_keys, Strings(),
                "key for the adapter load/unload routes (default: those routes are off)", NoEmptyKeys)
              .Flag("admin_api_key")
              .Secret(),
          K::Of("io_threads", &C::io_threads, kDefaultIoThreads, "HTTP I/O threads", InRange(1, 256)),
          K::Of("routing_policy", &C::routing_policy, kPool.routing_policy,
                "adapter-affinity, least-loaded or round-robin", CheckRoutingPolicy),
          K::Of("log_routing", &C::log_routing, kPool.log_routing, "log each routing decision with its reason"),
          K::Of("request_timeout_s", &C::request_timeout_s, static_cast<int>(Ms(kCall.timeout) / 1000),
                "a request's whole time, all attempts included", AtLeast(1)),
          K::Computed<int>(
              "max_n", [](const C& c) { return c.request.max_n; }, [](C& c, int v) { c.request.max_n = v; },
              kRequest.max_n, "largest accepted n", InRange(1, 128)),
          K::Computed<uint64_t>(
              "max_body_bytes", [](const C& c) -> uint64_t { return c.http.max_body_bytes; },
              [](C& c, uint64_t v) { c.http.max_body_bytes = v; }, kHttp.max_body_bytes,
              "largest request body (also the public gRPC API's largest message)", AtLeast(uint64_t{1024})),
          K::Computed<uint64_t>(
              "max_header_bytes", [](const C& c) -> uint64_t { return c.http.max_header_bytes; },
              [](C& c, uint64_t v) { c.http.max_header_bytes = v; }, kHttp.max_header_bytes,
              "largest request head (request line and headers)"),
          K::Computed<uint64_t>(
              "max_header_count", [](const C& c) -> uint64_t { return c.http.max_header_count; },
              [](C& c, uint64_t v) { c.http.max_header_count = v; }, kHttp.max_header_count,
              "most headers in one request"),
          K::Computed<int>(
              "max_json_depth", [](const C& c) { return c.request.max_depth; },
              [](C& c, int v) { c.request.max_depth = v; }, kRequest.max_depth, "deepest nesting of a JSON body"),
          K::Computed<int64_t>(
              "request_read_timeout_s", [](const C& c) -> int64_t { return c.http.request_timeout.count(); },
              [](C& c, int64_t v) { c.http.request_timeout = seconds(v); }, kHttp.request_timeout.count(),
              "time to receive one whole request"),
          K::Computed<int64_t>(
              "idle_timeout_s", [](const C& c) -> int64_t { return c.http.idle_timeout.count(); },
              [](C& c, int64_t v) { c.http.idle_timeout = seconds(v); }, kHttp.idle_timeout.count(),
              "keep-alive connection with no request closed after this"),
      },
      {CheckSomeWorkers});
}

GatewayConfigTable& TheGatewayConfigTable() {
  static GatewayConfigTable* table = new GatewayConfigTable(MakeGatewayConfigTable());
  return *table;
}

absl::StatusOr<GatewayConfig> LoadGatewayConfig(const GatewayConfigTable& table, const std::string& yaml_path,
                                                const std::vector<config::FlagText>& flags) {
  return table.Load(yaml_path, flags);
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

}  // namespace tessera::gateway
