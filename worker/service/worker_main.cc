// tessera-worker: serves one model over the tessera.worker.v1 gRPC service
// (plus grpc.health.v1).
//
//   tessera-worker [--listen HOST:PORT] [--model PATH] [--config FILE]
//                  [--engine model|sim] [--model-name NAME] [--threads N] ...
//
// Every key of the YAML config can be given as a flag (worker_config.cc has
// the table of keys); flags given win. The effective configuration is
// printed at start.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/json/json_file.h"
#include "common/metrics/metrics_server.h"
#include "worker/engine/engine.h"
#include "worker/lora/adapter_manager.h"
#include "worker/service/worker_config.h"
#include "worker/service/worker_metrics.h"
#include "worker/service/worker_service.h"
#include "worker/sim/sim_worker.h"

// Every other flag is a key of the configuration (worker_config.cc).
ABSL_FLAG(std::string, config, "", "YAML configuration file");

namespace {

using tessera::WorkerConfig;

std::atomic<bool> g_stop{false};

// Serves `service` (plus grpc.health.v1) on c.listen until SIGINT or
// SIGTERM, then drains: health turns NOT_SERVING and new generations are
// refused at once, running ones get drain_timeout_s to finish, the rest end
// with an in-band UNAVAILABLE; then the server shuts down. False if it
// cannot listen.
bool Serve(grpc::Service& service, tessera::DrainableService& drainable, const WorkerConfig& c) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(c.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(64 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return false;
  std::fprintf(stderr, "tessera-worker: serving '%s' on %s (port %d)\n", c.model_name.c_str(), c.listen.c_str(), port);
  std::signal(SIGINT, [](int) { g_stop.store(true); });
  std::signal(SIGTERM, [](int) { g_stop.store(true); });
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  server->GetHealthCheckService()->SetServingStatus(false);
  drainable.StartDrain();
  std::fprintf(stderr, "tessera-worker: draining %d generation(s), for at most %d s\n", drainable.ActiveGenerations(),
               c.drain_timeout_s);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(c.drain_timeout_s);
  while (drainable.ActiveGenerations() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (const int left = drainable.ActiveGenerations(); left > 0) {
    std::fprintf(stderr, "tessera-worker: drain timeout: ending %d generation(s) with an error\n", left);
    drainable.AbortGenerations(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker shut down before the generation finished"));
  }
  std::fprintf(stderr, "tessera-worker: shutting down\n");
  drainable.StopLoadReports();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return true;
}

int Fail(const std::string& m) {
  std::fprintf(stderr, "tessera-worker: %s\n", m.c_str());
  return 1;
}

int RunSim(const WorkerConfig& c) {
  tessera::SimWorker sim({.model_id = c.model_name,
                          .max_num_seqs = c.max_num_seqs,
                          .max_waiting = c.max_waiting,
                          .max_loras = c.max_loras,
                          .max_cpu_loras = c.max_cpu_loras,
                          .adapters = c.sim_adapters,
                          .step_ms = c.sim_step_ms,
                          .prefill_us_per_token = c.sim_prefill_us_per_token,
                          .decode_us_per_seq = c.sim_decode_us_per_seq,
                          .adapter_load_ms = c.sim_adapter_load_ms});
  return Serve(sim, sim, c) ? 0 : Fail("cannot listen on " + c.listen);
}

// Metrics are served before the model loads (a slow load is visible); the
// server reads the engine, adapters and constraint cache once they exist.
struct Telemetry {
  explicit Telemetry(const WorkerConfig& c)
      // The info metric's label keeps its name and values (cpu: the model engine).
      : metrics(*registry, c.model_name, c.engine == "sim" ? "sim" : "cpu") {}

  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  tessera::WorkerMetrics metrics;
  std::atomic<const tessera::Engine*> live_engine{nullptr};
  std::atomic<const tessera::AdapterManager*> live_adapters{nullptr};
  std::atomic<const tessera::structured::ConstraintCache*> live_constraints{nullptr};
  std::unique_ptr<tessera::MetricsServer> server;  // null: metrics off

  // Starts the metrics server on c.metrics_listen, if set.
  absl::Status Serve(const WorkerConfig& c) {
    if (c.metrics_listen.empty()) return absl::OkStatus();
    auto ms = tessera::MetricsServer::Start(c.metrics_listen, registry, [this] {
      metrics.Collect(live_engine.load(), live_adapters.load(), live_constraints.load());
    });
    if (!ms.ok()) return ms.status();
    server = std::move(*ms);
    std::fprintf(stderr, "tessera-worker: serving metrics on %s (port %d)\n", c.metrics_listen.c_str(),
                 server->port());
    return absl::OkStatus();
  }
};

// Loads the model, builds the adapter manager, the engine and the service,
// and serves until a signal.
int RunModel(const WorkerConfig& c, Telemetry& t) {
  const auto load_start = std::chrono::steady_clock::now();
  // Logit rows per step: one per sequence, plus rows that prompt-logprob
  // prefills (OpenAI echo + logprobs) share, so such a prompt advances up
  // to 1 + kPromptLogitRows tokens per step. The cost is memory only:
  // kPromptLogitRows x vocabulary floats on the device and on the host.
  constexpr int kPromptLogitRows = 32;
  // An automatic step budget is chosen within the scratch sized for this.
  const int kAutoBatchTokensCap = std::max(c.max_num_seqs + 16, c.device.starts_with("cuda") ? 2048 : 512);
  tessera::ModelBundleOptions bundle_options{.device = c.device,
                                             .threads = c.threads,
                                             .max_batch_tokens = c.max_num_batched_tokens != 0 ? c.max_num_batched_tokens
                                                                 : kAutoBatchTokensCap,
                                             .max_logit_rows = c.max_num_seqs + kPromptLogitRows};
  bundle_options.chat_content_special_tokens = c.chat_content_special_tokens;
  bundle_options.tensor_parallel_size = c.tensor_parallel_size;
  bundle_options.collective_timeout_ms = c.tensor_parallel_timeout_ms;
  if (!c.chat_template.empty()) {
    // Templates are small; 1 MiB is far above any real one (Llama 3.1's is ~10 KiB).
    auto text = tessera::ReadRegularFile(c.chat_template, 1 << 20);
    if (!text.ok()) return Fail(absl::StrCat("--chat-template: ", text.status().message()));
    bundle_options.chat_template_override = std::move(*text);
    bundle_options.chat_template_origin = c.chat_template;
  }
  auto bundle = c.synthetic.empty()
                    ? tessera::LoadModelBundle(c.model, bundle_options)
                    : tessera::LoadSyntheticModelBundle(c.synthetic, c.synthetic_type, bundle_options);
  if (!bundle.ok()) return Fail(std::string(bundle.status().message()));
  const tessera::CheckpointInfo& ckpt_info = (*bundle)->checkpoint->info();
  t.metrics.SetModelFormat(ckpt_info);
  std::fprintf(stderr, "tessera-worker: loaded '%s': %s (weights %s%s)\n", c.model.c_str(),
               ckpt_info.description.c_str(), ckpt_info.weight_type.c_str(),
               ckpt_info.bits > 0 ? absl::StrCat(", ", ckpt_info.bits, "-bit").c_str() : "");
  if (const tessera::LlamaModel& m = *(*bundle)->model; m.tensor_parallel_size() > 1) {
    for (int r = 0; r < m.tensor_parallel_size(); ++r) {
      const tessera::RankShard& s = m.shard(r);
      std::fprintf(stderr,
                   "tessera-worker: tensor-parallel rank %d/%d: heads [%d, %d), KV heads [%d, %d), "
                   "feed-forward [%lld, %lld), weights %.1f MiB\n",
                   r, m.tensor_parallel_size(), s.q_head_begin, s.q_head_end, s.kv_head_begin, s.kv_head_end,
                   static_cast<long long>(s.ff_begin), static_cast<long long>(s.ff_end),
                   m.rank_weight_bytes(r) / 1048576.0);
    }
  }
  t.metrics.SetTensorParallelSize((*bundle)->model->tensor_parallel_size());
  t.metrics.SetModelLoadSeconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
  tessera::EngineOptions eo;
  eo.observer = &t.metrics;
  eo.scheduler.max_num_seqs = c.max_num_seqs;
  eo.scheduler.max_num_batched_tokens = c.max_num_batched_tokens;
  eo.step_target_seconds = c.step_target_ms / 1000;
  eo.max_waiting = c.max_waiting;
  eo.kv_cache_bytes = static_cast<int64_t>(c.kv_cache_memory_mib) << 20;
  eo.prefix_caching = c.enable_prefix_caching;
  eo.on_model_failure = [](const absl::Status& s) {
    // No orderly shutdown: the group cannot step again and a rank may be
    // wedged; the exit tells the gateway (connections drop) and the
    // orchestrator (restart).
    std::fprintf(stderr, "tessera-worker: %s; exiting\n", std::string(s.message()).c_str());
    std::fflush(stderr);
    std::_Exit(3);
  };
  const tessera::LoraDtype lora_dtype = *tessera::ResolveLoraDtype(
      c.lora_dtype, c.device.starts_with("cuda"), ckpt_info.weight_type == "BF16");
  std::fprintf(stderr, "tessera-worker: LoRA weights stored as %s\n",
               std::string(tessera::LoraDtypeName(lora_dtype)).c_str());
  auto adapters = tessera::AdapterManager::Create({.roots = c.adapter_dirs,
                                                  .max_loras = c.max_loras,
                                                  .max_cpu_loras = c.max_cpu_loras,
                                                  .max_lora_rank = c.max_lora_rank,
                                                  .lora_dtype = lora_dtype,
                                                  .model = (*bundle)->model.get()},
                                                 (*bundle)->model->config(), *(*bundle)->backend);
  if (!adapters.ok()) return Fail(std::string(adapters.status().message()));
  eo.adapters = adapters->get();
  auto engine = tessera::Engine::Create(**bundle, eo);
  if (!engine.ok()) return Fail(std::string(engine.status().message()));
  if (const auto& cost = (*engine)->step_cost()) {
    std::fprintf(stderr,
                 "tessera-worker: max_num_batched_tokens %d at short context (measured step cost %.2f ms + "
                 "%.3f ms per row + %.3f us per attended key; step target %.1f ms, prompt chunks cut to it)\n",
                 (*engine)->options().scheduler.max_num_batched_tokens, cost->fixed_seconds * 1e3,
                 cost->per_row_seconds * 1e3, cost->per_pair_seconds * 1e6,
                 (*engine)->options().step_target_seconds * 1e3);
  } else {
    std::fprintf(stderr, "tessera-worker: max_num_batched_tokens %d (configured)\n",
                 (*engine)->options().scheduler.max_num_batched_tokens);
  }
  tessera::WorkerService service(
      **bundle, **engine, **adapters,
      {.model_id = c.model_name,
       .on_constraint_compiled = [&t](double seconds, bool ok) { t.metrics.OnConstraintCompiled(seconds, ok); }});
  t.live_engine.store(engine->get());
  t.live_adapters.store(adapters->get());
  t.live_constraints.store(&service.constraint_cache());

  const bool served = Serve(service, service, c);
  // The metrics server reads the engine: it goes first.
  t.server.reset();
  t.live_engine.store(nullptr);
  t.live_constraints.store(nullptr);
  if (!served) return Fail("cannot listen on " + c.listen);
  (*engine)->Stop();
  const tessera::EngineStats st = (*engine)->stats();
  std::fprintf(stderr, "tessera-worker: engine steps=%llu preemptions=%llu prefix_hit_tokens=%llu prefix_query_tokens=%llu\n",
               static_cast<unsigned long long>(st.steps), static_cast<unsigned long long>(st.preemptions),
               static_cast<unsigned long long>(st.prefix_hit_tokens),
               static_cast<unsigned long long>(st.prefix_query_tokens));
  const tessera::AdapterStats as = (*adapters)->stats();
  std::fprintf(stderr, "tessera-worker: adapters loads=%llu uploads=%llu device_evictions=%llu host_evictions=%llu failures=%llu\n",
               static_cast<unsigned long long>(as.loads), static_cast<unsigned long long>(as.uploads),
               static_cast<unsigned long long>(as.device_evictions), static_cast<unsigned long long>(as.host_evictions),
               static_cast<unsigned long long>(as.load_failures));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tessera::WorkerConfigTable& table = tessera::TheWorkerConfigTable();
  table.RegisterFlags();
  const tessera::CommandLine cl = tessera::ParseCommandLine(
      argc, argv, "tessera-worker [--listen HOST:PORT] [--model PATH|DIR] [--adapter-dir DIR] [--config FILE]");
  if (cl.positional.size() > 1) return Fail(std::string("unexpected argument '") + cl.positional[1] + "'");
  const absl::StatusOr<WorkerConfig> config =
      tessera::LoadWorkerConfig(table, absl::GetFlag(FLAGS_config), table.GivenFlags());
  if (!config.ok()) return Fail(std::string(config.status().message()));
  const WorkerConfig& c = *config;
  std::fprintf(stderr, "tessera-worker effective configuration:\n%s\n", table.ToYaml(c).c_str());

  Telemetry telemetry(c);
  if (absl::Status s = telemetry.Serve(c); !s.ok()) return Fail(std::string(s.message()));
  if (c.engine == "sim") return RunSim(c);
  return RunModel(c, telemetry);
}
