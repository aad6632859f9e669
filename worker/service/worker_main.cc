// tessera-worker: serves one model over the tessera.worker.v1 gRPC service
// (plus grpc.health.v1).
//
//   tessera-worker [--listen HOST:PORT] [--model PATH] [--config FILE]
//                  [--model-name NAME] [--threads N] [--max-waiting N]
//
// Every key of the YAML config can be given as a flag; flags win. The
// effective configuration is printed at start.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <yaml-cpp/yaml.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/flag_names.h"
#include "worker/engine/serial_engine.h"
#include "worker/service/worker_service.h"

ABSL_FLAG(std::string, listen, "", "address to serve gRPC on (default 127.0.0.1:50051)");
ABSL_FLAG(std::string, model, "", "GGUF model file (default: the bundled model)");
ABSL_FLAG(std::string, config, "", "YAML configuration file");
ABSL_FLAG(std::string, model_name, "", "name clients use for the model (default: the file name without .gguf)");
ABSL_FLAG(int, threads, -1, "CPU threads (0 = all; default 0)");
ABSL_FLAG(int, max_waiting, -1, "queued requests beyond which new ones are refused (default 256)");

namespace {

struct WorkerConfig {
  std::string listen = "127.0.0.1:50051";
  std::string model;
  std::string model_name;
  int threads = 0;
  int max_waiting = 256;
};

absl::Status LoadYaml(const std::string& path, WorkerConfig& c) {
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(path, ": the top level must be a mapping"));
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      if (key == "listen") c.listen = kv.second.as<std::string>();
      else if (key == "model") c.model = kv.second.as<std::string>();
      else if (key == "model_name") c.model_name = kv.second.as<std::string>();
      else if (key == "threads") c.threads = kv.second.as<int>();
      else if (key == "max_waiting") c.max_waiting = kv.second.as<int>();
      else return absl::InvalidArgumentError(absl::StrCat(path, ": unknown key '", key, "'"));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return absl::OkStatus();
}

std::atomic<bool> g_stop{false};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("tessera-worker [--listen HOST:PORT] [--model PATH] [--config FILE]");
  tessera::NormalizedArgs args = tessera::NormalizeFlagNames(argc, argv);
  std::vector<char*> rest = absl::ParseCommandLine(argc, args.argv.data());
  auto fail = [](const std::string& m) {
    std::fprintf(stderr, "tessera-worker: %s\n", m.c_str());
    return 1;
  };
  if (rest.size() > 1) return fail(std::string("unexpected argument '") + rest[1] + "'");
  WorkerConfig c;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    absl::Status s = LoadYaml(absl::GetFlag(FLAGS_config), c);
    if (!s.ok()) return fail(std::string(s.message()));
  }
  if (!absl::GetFlag(FLAGS_listen).empty()) c.listen = absl::GetFlag(FLAGS_listen);
  if (!absl::GetFlag(FLAGS_model).empty()) c.model = absl::GetFlag(FLAGS_model);
  if (!absl::GetFlag(FLAGS_model_name).empty()) c.model_name = absl::GetFlag(FLAGS_model_name);
  if (absl::GetFlag(FLAGS_threads) >= 0) c.threads = absl::GetFlag(FLAGS_threads);
  if (absl::GetFlag(FLAGS_max_waiting) >= 0) c.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  if (c.model.empty()) c.model = tessera::DefaultModelPath();
  if (c.model_name.empty()) c.model_name = std::filesystem::path(c.model).stem().string();
  if (c.threads < 0 || c.threads > 1024) return fail("threads must be in [0, 1024]");

  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "listen" << YAML::Value << c.listen << YAML::Key << "model" << YAML::Value
      << c.model << YAML::Key << "model_name" << YAML::Value << c.model_name << YAML::Key << "threads"
      << YAML::Value << c.threads << YAML::Key << "max_waiting" << YAML::Value << c.max_waiting << YAML::EndMap;
  std::fprintf(stderr, "tessera-worker effective configuration:\n%s\n", out.c_str());

  auto bundle = tessera::LoadModelBundle(c.model, {.threads = c.threads});
  if (!bundle.ok()) return fail(std::string(bundle.status().message()));
  auto engine = tessera::SerialEngine::Create(**bundle, {.max_waiting = c.max_waiting});
  if (!engine.ok()) return fail(std::string(engine.status().message()));
  tessera::WorkerService service(**bundle, **engine, {.model_id = c.model_name});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(c.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(64 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return fail("cannot listen on " + c.listen);
  std::fprintf(stderr, "tessera-worker: serving '%s' on %s (port %d)\n", c.model_name.c_str(), c.listen.c_str(), port);

  std::signal(SIGINT, [](int) { g_stop.store(true); });
  std::signal(SIGTERM, [](int) { g_stop.store(true); });
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::fprintf(stderr, "tessera-worker: shutting down\n");
  server->GetHealthCheckService()->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  (*engine)->Stop();
  return 0;
}
