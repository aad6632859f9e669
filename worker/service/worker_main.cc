// tessera-worker: serves one model over the tessera.worker.v1 gRPC service
// (plus grpc.health.v1).
//
//   tessera-worker [--listen HOST:PORT] [--model PATH] [--config FILE]
//                  [--model-name NAME] [--threads N] [--max-waiting N]
//
// Every key of the YAML config can be given as a flag; flags win. The
// effective configuration is printed at start.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <yaml-cpp/yaml.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/json/json_file.h"
#include "common/flag_names.h"
#include "common/metrics/metrics_server.h"
#include "worker/engine/engine.h"
#include "worker/lora/adapter_manager.h"
#include "worker/service/worker_metrics.h"
#include "worker/service/worker_service.h"
#include "worker/sim/sim_worker.h"

// Defaults owned by the worker itself; the rest are the defaults of what they
// configure (EngineOptions, SchedulerOptions, AdapterManagerOptions), read
// from there so that each is spelt once. The Helm chart's values.yaml spells
// them for operators; tests/deploy checks that it agrees with this binary.
namespace {
constexpr int kDefaultMaxLoraRank = 64;  // AdapterManagerOptions' 16 is a library default
constexpr int kDefaultDrainTimeoutS = 30;
}  // namespace

ABSL_FLAG(std::string, listen, "", "address to serve gRPC on (default 127.0.0.1:50051)");
ABSL_FLAG(std::string, model, "",
          "GGUF file or Hugging Face checkpoint directory (dense, AWQ, GPTQ, compressed-tensors; default: the bundled "
          "model)");
ABSL_FLAG(std::string, config, "", "YAML configuration file");
ABSL_FLAG(std::optional<bool>, chat_content_special_tokens, std::nullopt,
          "let control-token text in chat messages become control tokens, as vLLM and llama-server do "
          "(unsafe: a user can end their turn and open a system turn; default false)");
ABSL_FLAG(std::string, chat_template, "",
          "file holding a Jinja chat template to use instead of the model's own (checked at load like the model's)");
ABSL_FLAG(std::string, model_name, "",
          "name clients use for the model (default: the GGUF file name without .gguf, or the directory's name)");
ABSL_FLAG(int, threads, -1, "CPU threads (0 = all; default 0)");
ABSL_FLAG(int, max_waiting, -1,
          absl::StrCat("queued requests beyond which new ones are refused with 429 (default ",
                       tessera::EngineOptions{}.max_waiting, ")"));
ABSL_FLAG(int, max_num_seqs, -1,
          absl::StrCat("sequences batched in one step (default ", tessera::SchedulerOptions{}.max_num_seqs, ")"));
ABSL_FLAG(int, max_num_batched_tokens, -1,
          "tokens in one step; longer prompts are prefilled in chunks (default 0: the tokens that fit in --step-target-ms, from a step cost measured at start)");
ABSL_FLAG(double, step_target_ms, -1,
          "with an automatic max_num_batched_tokens: the time one step should take, so a running stream waits at most about that long for another request's prompt (default 0: 1.5x a full decode step, at least 20 ms)");
ABSL_FLAG(int, kv_cache_memory, -1,
          absl::StrCat("KV cache size in MiB (default ", tessera::kDefaultKvCacheBytes >> 20, ")"));
ABSL_FLAG(std::vector<std::string>, adapter_dir, {}, "directories holding LoRA adapters, comma-separated; adapters are served by their directory name, and runtime loads must lie inside one");
ABSL_FLAG(int, max_loras, -1,
          absl::StrCat("LoRA adapters resident on the device at once (default ",
                       tessera::AdapterManagerOptions{}.max_loras, ")"));
ABSL_FLAG(int, max_cpu_loras, -1,
          absl::StrCat("LoRA adapters kept in host memory (default ", tessera::AdapterManagerOptions{}.max_cpu_loras,
                       ")"));
ABSL_FLAG(int, max_lora_rank, -1, absl::StrCat("largest LoRA rank accepted (default ", kDefaultMaxLoraRank, ")"));
ABSL_FLAG(std::string, lora_dtype, "",
          "storage type of adapter weights on the device and in host memory: auto (default: float16 on the CPU, the model's activation type on a GPU), float32, float16 or bfloat16");
ABSL_FLAG(std::string, backend, "", "cpu (default) or sim: a simulated worker without a model, for routing and scale tests");
ABSL_FLAG(int, sim_adapters, 0, "sim backend: adapters named a0 .. a<N-1> in its catalog");
ABSL_FLAG(double, sim_step_ms, 5, "sim backend: fixed time of one step");
ABSL_FLAG(double, sim_prefill_us_per_token, 100, "sim backend: step time per prompt token admitted");
ABSL_FLAG(double, sim_decode_us_per_seq, 500, "sim backend: step time per running sequence");
ABSL_FLAG(double, sim_adapter_load_ms, 100, "sim backend: adapter load time from disk (a quarter from host memory)");
ABSL_FLAG(std::string, device, "", "cpu (default) or cuda[:N]");
ABSL_FLAG(std::string, synthetic, "",
          "serve a synthetic model of this architecture's shapes with random weights (llama3-8b, llama2-7b, tiny) "
          "instead of a file: for speed and memory measurements only");
ABSL_FLAG(std::string, synthetic_type, "", "weight encoding of the synthetic model (default q4_k)");
ABSL_FLAG(std::string, metrics_listen, "", "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)");
ABSL_FLAG(int, drain_timeout_s, -1,
          absl::StrCat("on SIGTERM, time for running generations to finish (default ", kDefaultDrainTimeoutS, ")"));
ABSL_FLAG(std::optional<bool>, enable_prefix_caching, std::nullopt, "reuse KV blocks of shared prompt prefixes (default true)");

namespace {

// A served name from a model path: a GGUF file's stem, a directory's name.
std::string ModelNameFromPath(const std::string& model) {
  std::filesystem::path p = std::filesystem::path(model).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  std::error_code ec;
  return std::filesystem::is_directory(p, ec) ? p.filename().string() : p.stem().string();
}

struct WorkerConfig {
  std::string backend = "cpu";
  std::string listen = "127.0.0.1:50051";
  std::string model;
  std::string model_name;
  std::string chat_template;  // a file; empty: the model's own template
  bool chat_content_special_tokens = false;
  int threads = 0;
  int max_waiting = tessera::EngineOptions{}.max_waiting;
  int max_num_seqs = tessera::SchedulerOptions{}.max_num_seqs;
  int max_num_batched_tokens = 0;  // 0: from the measured step cost and step_target_ms
  double step_target_ms = 0;       // 0: auto
  int kv_cache_memory_mib = static_cast<int>(tessera::kDefaultKvCacheBytes >> 20);
  bool enable_prefix_caching = true;
  std::vector<std::string> adapter_dirs;
  int max_loras = tessera::AdapterManagerOptions{}.max_loras;
  int max_cpu_loras = tessera::AdapterManagerOptions{}.max_cpu_loras;
  int max_lora_rank = kDefaultMaxLoraRank;
  std::string lora_dtype = "auto";
  std::string metrics_listen;
  int drain_timeout_s = kDefaultDrainTimeoutS;
  std::string device = "cpu";
  std::string synthetic;
  std::string synthetic_type = "q4_k";
};

absl::Status LoadYaml(const std::string& path, WorkerConfig& c) {
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(path, ": the top level must be a mapping"));
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      if (key == "listen") c.listen = kv.second.as<std::string>();
      else if (key == "backend") c.backend = kv.second.as<std::string>();
      else if (key == "model") c.model = kv.second.as<std::string>();
      else if (key == "model_name") c.model_name = kv.second.as<std::string>();
      else if (key == "chat_template") c.chat_template = kv.second.as<std::string>();
      else if (key == "chat_content_special_tokens") c.chat_content_special_tokens = kv.second.as<bool>();
      else if (key == "threads") c.threads = kv.second.as<int>();
      else if (key == "max_waiting") c.max_waiting = kv.second.as<int>();
      else if (key == "max_num_seqs") c.max_num_seqs = kv.second.as<int>();
      else if (key == "max_num_batched_tokens") c.max_num_batched_tokens = kv.second.as<int>();
      else if (key == "step_target_ms") c.step_target_ms = kv.second.as<double>();
      else if (key == "kv_cache_memory") c.kv_cache_memory_mib = kv.second.as<int>();
      else if (key == "enable_prefix_caching") c.enable_prefix_caching = kv.second.as<bool>();
      else if (key == "adapter_dirs") c.adapter_dirs = kv.second.as<std::vector<std::string>>();
      else if (key == "max_loras") c.max_loras = kv.second.as<int>();
      else if (key == "max_cpu_loras") c.max_cpu_loras = kv.second.as<int>();
      else if (key == "max_lora_rank") c.max_lora_rank = kv.second.as<int>();
      else if (key == "lora_dtype") c.lora_dtype = kv.second.as<std::string>();
      else if (key == "metrics_listen") c.metrics_listen = kv.second.as<std::string>();
      else if (key == "device") c.device = kv.second.as<std::string>();
      else if (key == "synthetic") c.synthetic = kv.second.as<std::string>();
      else if (key == "synthetic_type") c.synthetic_type = kv.second.as<std::string>();
      else if (key == "drain_timeout_s") c.drain_timeout_s = kv.second.as<int>();
      else return absl::InvalidArgumentError(absl::StrCat(path, ": unknown key '", key, "'"));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return absl::OkStatus();
}

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

}  // namespace

int main(int argc, char** argv) {
  const tessera::CommandLine cl = tessera::ParseCommandLine(
      argc, argv, "tessera-worker [--listen HOST:PORT] [--model PATH|DIR] [--adapter-dir DIR] [--config FILE]");
  const std::vector<char*>& rest = cl.positional;
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
  if (!absl::GetFlag(FLAGS_backend).empty()) c.backend = absl::GetFlag(FLAGS_backend);
  if (c.backend != "cpu" && c.backend != "sim") return fail("backend must be 'cpu' or 'sim'; got '" + c.backend + "'");
  if (!absl::GetFlag(FLAGS_device).empty()) c.device = absl::GetFlag(FLAGS_device);
  if (!absl::GetFlag(FLAGS_synthetic).empty()) c.synthetic = absl::GetFlag(FLAGS_synthetic);
  if (!absl::GetFlag(FLAGS_synthetic_type).empty()) c.synthetic_type = absl::GetFlag(FLAGS_synthetic_type);
  if (c.device != "cpu" && c.device != "cuda" && c.device.rfind("cuda:", 0) != 0) {
    return fail("device must be cpu, cuda or cuda:N; got '" + c.device + "'");
  }
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (absl::GetFlag(FLAGS_drain_timeout_s) >= 0) c.drain_timeout_s = absl::GetFlag(FLAGS_drain_timeout_s);
  if (c.drain_timeout_s < 0 || c.drain_timeout_s > 3600) return fail("drain_timeout_s must be in [0, 3600]");
  if (!absl::GetFlag(FLAGS_model).empty()) c.model = absl::GetFlag(FLAGS_model);
  if (!absl::GetFlag(FLAGS_model_name).empty()) c.model_name = absl::GetFlag(FLAGS_model_name);
  if (!absl::GetFlag(FLAGS_chat_template).empty()) c.chat_template = absl::GetFlag(FLAGS_chat_template);
  if (auto v = absl::GetFlag(FLAGS_chat_content_special_tokens)) c.chat_content_special_tokens = *v;
  if (absl::GetFlag(FLAGS_threads) >= 0) c.threads = absl::GetFlag(FLAGS_threads);
  if (absl::GetFlag(FLAGS_max_waiting) >= 0) c.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  if (absl::GetFlag(FLAGS_max_num_seqs) >= 0) c.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  if (absl::GetFlag(FLAGS_max_num_batched_tokens) >= 0) c.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  if (absl::GetFlag(FLAGS_step_target_ms) >= 0) c.step_target_ms = absl::GetFlag(FLAGS_step_target_ms);
  if (absl::GetFlag(FLAGS_kv_cache_memory) >= 0) c.kv_cache_memory_mib = absl::GetFlag(FLAGS_kv_cache_memory);
  if (auto p = absl::GetFlag(FLAGS_enable_prefix_caching)) c.enable_prefix_caching = *p;
  if (!absl::GetFlag(FLAGS_adapter_dir).empty()) c.adapter_dirs = absl::GetFlag(FLAGS_adapter_dir);
  if (absl::GetFlag(FLAGS_max_loras) >= 0) c.max_loras = absl::GetFlag(FLAGS_max_loras);
  if (absl::GetFlag(FLAGS_max_cpu_loras) >= 0) c.max_cpu_loras = absl::GetFlag(FLAGS_max_cpu_loras);
  if (absl::GetFlag(FLAGS_max_lora_rank) >= 0) c.max_lora_rank = absl::GetFlag(FLAGS_max_lora_rank);
  if (!absl::GetFlag(FLAGS_lora_dtype).empty()) c.lora_dtype = absl::GetFlag(FLAGS_lora_dtype);
  if (auto d = tessera::ResolveLoraDtype(c.lora_dtype, false, false); !d.ok()) return fail(std::string(d.status().message()));
  if (c.max_loras < 1 || c.max_loras > 1024) return fail("max_loras must be in [1, 1024]");
  if (c.max_cpu_loras < c.max_loras || c.max_cpu_loras > 65536) return fail("max_cpu_loras must be in [max_loras, 65536]");
  if (c.max_lora_rank < 1 || c.max_lora_rank > 1024) return fail("max_lora_rank must be in [1, 1024]");
  if (c.max_num_seqs < 1 || c.max_num_seqs > 1024) return fail("max_num_seqs must be in [1, 1024]");
  if (c.max_num_batched_tokens < 0 || c.max_num_batched_tokens > 65536) return fail("max_num_batched_tokens must be in [0, 65536] (0: automatic)");
  if (c.max_num_batched_tokens != 0 && c.max_num_batched_tokens < c.max_num_seqs) return fail("max_num_batched_tokens must be >= max_num_seqs");
  if (!(c.step_target_ms >= 0 && c.step_target_ms <= 60000)) return fail("step_target_ms must be in [0, 60000]");
  if (c.kv_cache_memory_mib < 1 || c.kv_cache_memory_mib > (1 << 20)) return fail("kv_cache_memory must be in [1, 1048576] MiB");
  if (c.model.empty()) c.model = tessera::DefaultModelPath();
  if (c.model_name.empty()) {
    c.model_name = c.backend == "sim"         ? "sim"
                   : !c.synthetic.empty() ? "synthetic-" + c.synthetic
                                          : ModelNameFromPath(c.model);
  }
  if (c.threads < 0 || c.threads > 1024) return fail("threads must be in [0, 1024]");

  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "backend" << YAML::Value << c.backend << YAML::Key << "listen" << YAML::Value << c.listen << YAML::Key << "model" << YAML::Value
      << c.model << YAML::Key << "model_name" << YAML::Value << c.model_name << YAML::Key << "chat_template" << YAML::Value << c.chat_template << YAML::Key
      << "chat_content_special_tokens" << YAML::Value << c.chat_content_special_tokens << YAML::Key << "threads"
      << YAML::Value << c.threads << YAML::Key << "max_waiting" << YAML::Value << c.max_waiting << YAML::Key
      << "max_num_seqs" << YAML::Value << c.max_num_seqs << YAML::Key << "max_num_batched_tokens" << YAML::Value
      << c.max_num_batched_tokens << YAML::Key << "step_target_ms" << YAML::Value << c.step_target_ms << YAML::Key << "kv_cache_memory" << YAML::Value << c.kv_cache_memory_mib
      << YAML::Key << "enable_prefix_caching" << YAML::Value << c.enable_prefix_caching << YAML::Key
      << "adapter_dirs" << YAML::Value << YAML::Flow << c.adapter_dirs << YAML::Key << "max_loras" << YAML::Value
      << c.max_loras << YAML::Key << "max_cpu_loras" << YAML::Value << c.max_cpu_loras << YAML::Key
      << "max_lora_rank" << YAML::Value << c.max_lora_rank << YAML::Key << "lora_dtype" << YAML::Value << c.lora_dtype << YAML::Key << "metrics_listen" << YAML::Value
      << c.metrics_listen << YAML::Key << "drain_timeout_s" << YAML::Value << c.drain_timeout_s << YAML::Key << "device"
      << YAML::Value << c.device << YAML::Key << "synthetic" << YAML::Value << c.synthetic << YAML::Key
      << "synthetic_type" << YAML::Value << c.synthetic_type << YAML::EndMap;
  std::fprintf(stderr, "tessera-worker effective configuration:\n%s\n", out.c_str());

  // Metrics are up before the model loads (a slow load is visible), and
  // read the engine and adapters once they exist.
  auto registry = std::make_shared<prometheus::Registry>();
  tessera::WorkerMetrics metrics(*registry, c.model_name, c.backend);
  std::atomic<const tessera::Engine*> live_engine{nullptr};
  std::atomic<const tessera::AdapterManager*> live_adapters{nullptr};
  std::atomic<const tessera::structured::ConstraintCache*> live_constraints{nullptr};
  std::unique_ptr<tessera::MetricsServer> metrics_server;
  if (!c.metrics_listen.empty()) {
    auto ms = tessera::MetricsServer::Start(c.metrics_listen, registry,
                                            [&] {
      metrics.Collect(live_engine.load(), live_adapters.load(), live_constraints.load());
    });
    if (!ms.ok()) return fail(std::string(ms.status().message()));
    metrics_server = std::move(*ms);
    std::fprintf(stderr, "tessera-worker: serving metrics on %s (port %d)\n", c.metrics_listen.c_str(),
                 metrics_server->port());
  }

  if (c.backend == "sim") {
    tessera::SimWorkerOptions so;
    so.model_id = c.model_name;
    so.max_num_seqs = c.max_num_seqs;
    so.max_waiting = c.max_waiting;
    so.max_loras = c.max_loras;
    so.max_cpu_loras = c.max_cpu_loras;
    so.adapters = absl::GetFlag(FLAGS_sim_adapters);
    so.step_ms = absl::GetFlag(FLAGS_sim_step_ms);
    so.prefill_us_per_token = absl::GetFlag(FLAGS_sim_prefill_us_per_token);
    so.decode_us_per_seq = absl::GetFlag(FLAGS_sim_decode_us_per_seq);
    so.adapter_load_ms = absl::GetFlag(FLAGS_sim_adapter_load_ms);
    if (so.adapters < 0 || so.adapters > 1000000 || so.step_ms < 0 || so.prefill_us_per_token < 0 ||
        so.decode_us_per_seq < 0 || so.adapter_load_ms < 0) {
      return fail("sim flags must be non-negative (and sim_adapters at most 1000000)");
    }
    tessera::SimWorker sim(so);
    return Serve(sim, sim, c) ? 0 : fail("cannot listen on " + c.listen);
  }

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
  if (!c.chat_template.empty()) {
    // Templates are small; 1 MiB is far above any real one (Llama 3.1's is ~10 KiB).
    auto text = tessera::ReadRegularFile(c.chat_template, 1 << 20);
    if (!text.ok()) return fail(absl::StrCat("--chat-template: ", text.status().message()));
    bundle_options.chat_template_override = std::move(*text);
    bundle_options.chat_template_origin = c.chat_template;
  }
  auto bundle = c.synthetic.empty()
                    ? tessera::LoadModelBundle(c.model, bundle_options)
                    : tessera::LoadSyntheticModelBundle(c.synthetic, c.synthetic_type, bundle_options);
  if (!bundle.ok()) return fail(std::string(bundle.status().message()));
  const tessera::CheckpointInfo& ckpt_info = (*bundle)->checkpoint->info();
  metrics.SetModelFormat(ckpt_info);
  std::fprintf(stderr, "tessera-worker: loaded '%s': %s (weights %s%s)\n", c.model.c_str(),
               ckpt_info.description.c_str(), ckpt_info.weight_type.c_str(),
               ckpt_info.bits > 0 ? absl::StrCat(", ", ckpt_info.bits, "-bit").c_str() : "");
  metrics.SetModelLoadSeconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
  tessera::EngineOptions eo;
  eo.observer = &metrics;
  eo.scheduler.max_num_seqs = c.max_num_seqs;
  eo.scheduler.max_num_batched_tokens = c.max_num_batched_tokens;
  eo.step_target_seconds = c.step_target_ms / 1000;
  eo.max_waiting = c.max_waiting;
  eo.kv_cache_bytes = static_cast<int64_t>(c.kv_cache_memory_mib) << 20;
  eo.prefix_caching = c.enable_prefix_caching;
  const tessera::LoraDtype lora_dtype = *tessera::ResolveLoraDtype(
      c.lora_dtype, c.device.starts_with("cuda"), ckpt_info.weight_type == "BF16");
  std::fprintf(stderr, "tessera-worker: LoRA weights stored as %s\n",
               std::string(tessera::LoraDtypeName(lora_dtype)).c_str());
  auto adapters = tessera::AdapterManager::Create({.roots = c.adapter_dirs,
                                                  .max_loras = c.max_loras,
                                                  .max_cpu_loras = c.max_cpu_loras,
                                                  .max_lora_rank = c.max_lora_rank,
                                                  .lora_dtype = lora_dtype},
                                                 (*bundle)->model->config(), *(*bundle)->backend);
  if (!adapters.ok()) return fail(std::string(adapters.status().message()));
  eo.adapters = adapters->get();
  auto engine = tessera::Engine::Create(**bundle, eo);
  if (!engine.ok()) return fail(std::string(engine.status().message()));
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
       .on_constraint_compiled = [&metrics](double seconds, bool ok) { metrics.OnConstraintCompiled(seconds, ok); }});
  live_engine.store(engine->get());
  live_adapters.store(adapters->get());
  live_constraints.store(&service.constraint_cache());

  const bool served = Serve(service, service, c);
  // The metrics server reads the engine: it goes first.
  metrics_server.reset();
  live_engine.store(nullptr);
  live_constraints.store(nullptr);
  if (!served) return fail("cannot listen on " + c.listen);
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
