// tessera-gateway: the OpenAI-compatible front door.
//
//   tessera-gateway [--listen HOST:PORT] [--grpc-listen HOST:PORT]
//                   [--worker HOST:PORT]... [--config FILE] [--api-key KEY]...
//
// Every key of the YAML config can be given as a flag; flags win. The
// effective configuration is printed at start.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/command_line.h"
#include "common/flag_names.h"
#include "gateway/gateway_config.h"
#include <grpcpp/grpcpp.h>

#include "common/metrics/metrics_server.h"
#include "gateway/gateway_metrics.h"
#include "gateway/grpc_frontend.h"
#include "gateway/http_frontend.h"

ABSL_FLAG(std::string, listen, "", "HTTP address (default 127.0.0.1:8080)");
ABSL_FLAG(std::string, grpc_listen, "", "public gRPC API address (default: off)");
ABSL_FLAG(std::vector<std::string>, worker, {}, "worker HOST:PORT; repeatable or comma-separated");
ABSL_FLAG(std::vector<std::string>, worker_dns, {},
          "NAME:PORT resolved to workers (e.g. a Kubernetes headless Service), re-resolved periodically");
ABSL_FLAG(std::string, dns_server, "", "IPV4:PORT of the DNS server for --worker-dns (default: /etc/resolv.conf)");
ABSL_FLAG(int, dns_refresh_ms, 0, "re-resolve --worker-dns names this often (default 5000)");
ABSL_FLAG(int, health_check_interval_ms, 0, "probe workers (grpc.health.v1) this often (default 1000)");
ABSL_FLAG(int, health_check_timeout_ms, 0, "a probe not answered in this time fails (default 1000)");
ABSL_FLAG(int, connect_timeout_ms, 0, "bound on one connection attempt to a worker (default 2000)");
ABSL_FLAG(int, first_response_timeout_ms, 0,
          "a worker that has not accepted a request in this time is ejected and the request retried (default 10000)");
ABSL_FLAG(int, max_attempts, 0, "attempts per request, each on another worker (default 3)");
ABSL_FLAG(int, base_ejection_ms, 0, "an ejected worker stays out this long times its consecutive ejections (default 5000)");
ABSL_FLAG(int, max_in_flight_per_worker, 0, "circuit breaker: streams in flight per worker (default 256)");
ABSL_FLAG(std::string, metrics_listen, "", "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)");
ABSL_FLAG(int, drain_timeout_s, -1, "on SIGTERM, time for in-flight requests to finish (default 30)");
ABSL_FLAG(std::string, config, "", "YAML configuration file");
ABSL_FLAG(std::vector<std::string>, api_key, {}, "API key clients must send as 'Authorization: Bearer KEY'");
ABSL_FLAG(std::vector<std::string>, admin_api_key, {}, "key for the adapter load/unload routes (default: those routes are off)");
ABSL_FLAG(std::string, routing_policy, "", "adapter-affinity (default), least-loaded or round-robin");
ABSL_FLAG(std::optional<bool>, log_routing, std::nullopt, "log each routing decision with its reason");
ABSL_FLAG(int, io_threads, 0, "HTTP I/O threads (default 2)");
ABSL_FLAG(int, max_n, 0, "largest accepted n (default 16)");

namespace {
std::atomic<bool> g_stop{false};
}

int main(int argc, char** argv) {
  tessera::NormalizedArgs args = tessera::NormalizeFlagNames(argc, argv);
  // Repeated --worker flags accumulate (Abseil keeps only the last one).
  std::vector<std::string> workers;
  std::vector<char*> filtered;
  for (size_t i = 0; i + 1 < args.argv.size(); ++i) {
    std::string a = args.argv[i];
    if (a.rfind("--worker=", 0) == 0) {
      workers.push_back(a.substr(9));
      continue;
    }
    if (a == "--worker" && i + 2 < args.argv.size()) {
      workers.push_back(args.argv[++i]);
      continue;
    }
    filtered.push_back(args.argv[i]);
  }
  filtered.push_back(nullptr);
  const tessera::CommandLine cl = tessera::ParseCommandLine(
      static_cast<int>(filtered.size() - 1), filtered.data(),
      "tessera-gateway [--listen HOST:PORT] [--grpc-listen HOST:PORT] [--worker HOST:PORT]... [--worker-dns NAME:PORT] "
      "[--config FILE]");
  const std::vector<char*>& rest = cl.positional;
  auto fail = [](const std::string& m) {
    std::fprintf(stderr, "tessera-gateway: %s\n", m.c_str());
    return 1;
  };
  if (rest.size() > 1) return fail(std::string("unexpected argument '") + rest[1] + "'");
  tessera::gateway::GatewayConfig c;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    absl::Status s = c.LoadYaml(absl::GetFlag(FLAGS_config));
    if (!s.ok()) return fail(std::string(s.message()));
  }
  if (!absl::GetFlag(FLAGS_listen).empty()) c.listen = absl::GetFlag(FLAGS_listen);
  if (!absl::GetFlag(FLAGS_grpc_listen).empty()) c.grpc_listen = absl::GetFlag(FLAGS_grpc_listen);
  for (const auto& w : absl::GetFlag(FLAGS_worker)) workers.push_back(w);
  if (!workers.empty()) {
    c.workers.clear();
    for (const auto& w : workers) {
      for (size_t start = 0; start <= w.size();) {
        size_t comma = w.find(',', start);
        std::string one = w.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!one.empty()) c.workers.push_back(one);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
  }
  if (!absl::GetFlag(FLAGS_worker_dns).empty()) c.worker_dns = absl::GetFlag(FLAGS_worker_dns);
  if (!absl::GetFlag(FLAGS_dns_server).empty()) c.dns_server = absl::GetFlag(FLAGS_dns_server);
  auto set_positive = [](int v, int& field) {
    if (v > 0) field = v;
  };
  set_positive(absl::GetFlag(FLAGS_dns_refresh_ms), c.dns_refresh_ms);
  set_positive(absl::GetFlag(FLAGS_health_check_interval_ms), c.health_check_interval_ms);
  set_positive(absl::GetFlag(FLAGS_health_check_timeout_ms), c.health_check_timeout_ms);
  set_positive(absl::GetFlag(FLAGS_connect_timeout_ms), c.connect_timeout_ms);
  set_positive(absl::GetFlag(FLAGS_first_response_timeout_ms), c.first_response_timeout_ms);
  set_positive(absl::GetFlag(FLAGS_max_attempts), c.max_attempts);
  set_positive(absl::GetFlag(FLAGS_max_in_flight_per_worker), c.max_in_flight_per_worker);
  set_positive(absl::GetFlag(FLAGS_base_ejection_ms), c.base_ejection_ms);
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (absl::GetFlag(FLAGS_drain_timeout_s) >= 0) c.drain_timeout_s = absl::GetFlag(FLAGS_drain_timeout_s);
  if (!absl::GetFlag(FLAGS_api_key).empty()) c.api_keys = absl::GetFlag(FLAGS_api_key);
  if (!absl::GetFlag(FLAGS_admin_api_key).empty()) c.admin_api_keys = absl::GetFlag(FLAGS_admin_api_key);
  if (absl::GetFlag(FLAGS_io_threads) > 0) c.io_threads = absl::GetFlag(FLAGS_io_threads);
  if (!absl::GetFlag(FLAGS_routing_policy).empty()) c.routing_policy = absl::GetFlag(FLAGS_routing_policy);
  if (auto v = absl::GetFlag(FLAGS_log_routing)) c.log_routing = *v;
  if (absl::GetFlag(FLAGS_max_n) > 0) c.request.max_n = absl::GetFlag(FLAGS_max_n);
  if (absl::Status s = c.Validate(); !s.ok()) return fail(std::string(s.message()));
  std::fprintf(stderr, "tessera-gateway effective configuration:\n%s\n", c.ToYaml().c_str());

  auto registry = std::make_shared<prometheus::Registry>();
  tessera::gateway::GatewayMetrics metrics(*registry);
  tessera::gateway::WorkerPoolOptions pool_options = c.PoolOptions();
  pool_options.metrics = &metrics;
  auto pool = tessera::gateway::WorkerPool::Create(c.workers, pool_options);
  if (!pool.ok()) return fail(std::string(pool.status().message()));
  std::unique_ptr<tessera::MetricsServer> metrics_server;
  if (!c.metrics_listen.empty()) {
    auto ms = tessera::MetricsServer::Start(c.metrics_listen, registry, [p = pool->get()] { p->ExportWorkerMetrics(); });
    if (!ms.ok()) return fail(std::string(ms.status().message()));
    metrics_server = std::move(*ms);
    std::fprintf(stderr, "tessera-gateway: serving metrics on %s (port %d)\n", c.metrics_listen.c_str(),
                 metrics_server->port());
  }
  (*pool)->RefreshNow();
  tessera::gateway::HttpFrontend frontend(c, **pool);
  auto server = tessera::gateway::HttpServer::Start(
      c.listen, [&frontend](std::shared_ptr<tessera::gateway::HttpExchange> ex) { frontend.Handle(std::move(ex)); },
      c.http, c.io_threads);
  if (!server.ok()) return fail(std::string(server.status().message()));
  std::fprintf(stderr, "tessera-gateway: serving HTTP on %s (port %d), %zu static worker(s), %zu DNS name(s)\n",
               c.listen.c_str(), (*server)->port(), c.workers.size(), c.worker_dns.size());
  tessera::gateway::GrpcFrontend grpc_frontend(c, **pool);
  std::unique_ptr<grpc::Server> grpc_server;
  if (!c.grpc_listen.empty()) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int grpc_port = 0;
    builder.AddListeningPort(c.grpc_listen, grpc::InsecureServerCredentials(), &grpc_port);
    builder.RegisterService(&grpc_frontend);
    builder.SetMaxReceiveMessageSize(static_cast<int>(c.http.max_body_bytes));
    grpc_server = builder.BuildAndStart();
    if (!grpc_server || grpc_port == 0) return fail("cannot listen on " + c.grpc_listen);
    std::fprintf(stderr, "tessera-gateway: serving the gRPC API on %s (port %d)\n", c.grpc_listen.c_str(), grpc_port);
  }
  std::signal(SIGINT, [](int) { g_stop.store(true); });
  std::signal(SIGTERM, [](int) { g_stop.store(true); });
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));

  // Graceful drain: not ready and no new work at once; running requests get
  // drain_timeout_s to finish; those still running then end with an error
  // (in-band for streams), and the process exits 0.
  (*pool)->StartDrain();
  if (grpc_server) grpc_server->GetHealthCheckService()->SetServingStatus(false);
  const auto drain_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(c.drain_timeout_s);
  std::fprintf(stderr, "tessera-gateway: draining %d request(s), for at most %d s\n", (*pool)->requests_in_flight(),
               c.drain_timeout_s);
  while ((*pool)->requests_in_flight() > 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (const int left = (*pool)->requests_in_flight(); left > 0) {
    std::fprintf(stderr, "tessera-gateway: drain timeout: ending %d request(s) with an error\n", left);
    (*pool)->AbortAll(absl::UnavailableError("the gateway shut down before the request finished"));
  }
  (*server)->FlushWrites(std::chrono::seconds(2));
  std::fprintf(stderr, "tessera-gateway: shutting down\n");
  (*server)->Stop();
  if (grpc_server) grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
