// tessera-gateway: the OpenAI-compatible front door.
//
//   tessera-gateway [--listen HOST:PORT] [--grpc-listen HOST:PORT]
//                   [--worker HOST:PORT]... [--config FILE] [--api-key KEY]...
//
// Every key of the YAML config can be given as a flag (gateway_config.cc has
// the table of keys); flags given win. The effective configuration is
// printed at start.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/command_line.h"
#include "gateway/gateway_config.h"
#include <grpcpp/grpcpp.h>

#include "common/metrics/metrics_server.h"
#include "gateway/gateway_metrics.h"
#include "gateway/grpc_frontend.h"
#include "gateway/http_frontend.h"

// Every other flag is a key of the configuration (gateway_config.cc).
ABSL_FLAG(std::string, config, "", "YAML configuration file");

namespace {
std::atomic<bool> g_stop{false};
}

int main(int argc, char** argv) {
  tessera::gateway::GatewayConfigTable& table = tessera::gateway::TheGatewayConfigTable();
  table.RegisterFlags();
  const tessera::CommandLine cl = tessera::ParseCommandLine(
      argc, argv,
      "tessera-gateway [--listen HOST:PORT] [--grpc-listen HOST:PORT] [--worker HOST:PORT]... "
      "[--worker-dns NAME:PORT] [--config FILE]");
  const std::vector<char*>& rest = cl.positional;
  auto fail = [](const std::string& m) {
    std::fprintf(stderr, "tessera-gateway: %s\n", m.c_str());
    return 1;
  };
  if (rest.size() > 1) return fail(std::string("unexpected argument '") + rest[1] + "'");
  absl::StatusOr<tessera::gateway::GatewayConfig> config =
      tessera::gateway::LoadGatewayConfig(table, absl::GetFlag(FLAGS_config), table.GivenFlags());
  if (!config.ok()) return fail(std::string(config.status().message()));
  const tessera::gateway::GatewayConfig& c = *config;
  std::fprintf(stderr, "tessera-gateway effective configuration:\n%s\n", table.ToYaml(c).c_str());

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
