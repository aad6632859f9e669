#include "worker/service/worker_config.h"

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/engine/engine.h"
#include "worker/lora/adapter_manager.h"
#include "worker/lora/lora_adapter.h"
#include "worker/model/model_bundle.h"
#include "worker/sim/sim_worker.h"

namespace tessera {
namespace {

using config::AtLeast;
using config::InRange;
using config::OneOf;
using K = config::Key<WorkerConfig>;
using Strings = std::vector<std::string>;

// Defaults owned by the worker itself; the rest are the defaults of what they
// configure, read from there so that each is spelt once.
constexpr int kDefaultMaxLoraRank = 64;  // AdapterManagerOptions' 16 is a library default
constexpr int kDefaultDrainTimeoutS = 30;
constexpr int kDefaultMaxNumBatchedTokens = 0;  // automatic (SchedulerOptions' 512 is a library default)

const EngineOptions kEngine;
const AdapterManagerOptions kAdapters;
const SimWorkerOptions kSim;

absl::Status CheckDevice(std::string_view, const std::string& d) {
  if (d == "cpu" || d == "cuda" || d.starts_with("cuda:")) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("device must be cpu, cuda or cuda:N; got '", d, "'"));
}

absl::Status CheckLoraDtype(std::string_view, const std::string& d) {
  return ResolveLoraDtype(d, false, false).status();
}

// --backend / backend: the old spelling of engine (cpu was the model engine).
absl::Status SetBackend(WorkerConfig& c, std::string v) {
  if (v != "cpu" && v != "sim") {
    return absl::InvalidArgumentError(absl::StrCat("backend must be 'cpu' or 'sim'; got '", v, "'"));
  }
  c.engine = v == "cpu" ? "model" : v;
  return absl::OkStatus();
}

absl::Status CheckBatchedTokens(const WorkerConfig& c) {
  if (c.max_num_batched_tokens != 0 && c.max_num_batched_tokens < c.max_num_seqs) {
    return absl::InvalidArgumentError(absl::StrCat("max_num_batched_tokens must be >= max_num_seqs; got ",
                                                   c.max_num_batched_tokens, " < ", c.max_num_seqs));
  }
  return absl::OkStatus();
}

absl::Status CheckCpuLoras(const WorkerConfig& c) {
  if (c.max_cpu_loras >= c.max_loras && c.max_cpu_loras <= 65536) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("max_cpu_loras must be in [max_loras, 65536]; got ", c.max_cpu_loras,
                                                 " (max_loras ", c.max_loras, ")"));
}

// A served name from a model path: a GGUF file's stem, a directory's name.
std::string ModelNameFromPath(const std::string& model) {
  std::filesystem::path p = std::filesystem::path(model).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  std::error_code ec;
  return std::filesystem::is_directory(p, ec) ? p.filename().string() : p.stem().string();
}

}  // namespace

WorkerConfigTable MakeWorkerConfigTable() {
  using C = WorkerConfig;
  return WorkerConfigTable(
      "tessera-worker", "worker/service/worker_config.cc",
      {
          K::Of("engine", &C::engine, std::string("model"),
                "model: serve the model; sim: a simulated worker without a model, for routing and scale tests",
                OneOf({"model", "sim"})),
          K::Alias<std::string>("backend", "engine", SetBackend, "cpu is now model"),
          K::Of("listen", &C::listen, std::string("127.0.0.1:50051"), "address to serve gRPC on"),
          K::Of("model", &C::model, std::string(),
                "GGUF file or Hugging Face checkpoint directory (dense, AWQ, GPTQ, compressed-tensors; default: the "
                "bundled model)"),
          K::Of("model_name", &C::model_name, std::string(),
                "name clients use for the model (default: the GGUF file name without .gguf, or the directory's name)"),
          K::Of("chat_template", &C::chat_template, std::string(),
                "file holding a Jinja chat template to use instead of the model's own (checked at load like the "
                "model's)"),
          K::Of("chat_content_special_tokens", &C::chat_content_special_tokens, false,
                "let control-token text in chat messages become control tokens, as vLLM and llama-server do "
                "(unsafe: a user can end their turn and open a system turn)"),
          K::Of("threads", &C::threads, 0, "CPU threads (0 = all; shared by the tensor-parallel ranks)",
                InRange(0, 1024)),
          K::Of("tensor_parallel_size", &C::tensor_parallel_size, 1,
                "ranks the model is split over: CPU ranks with --device cpu, GPUs 0..N-1 with --device cuda",
                InRange(1, 64)),
          K::Of("tensor_parallel_timeout_ms", &C::tensor_parallel_timeout_ms, 30000,
                "a tensor-parallel collective not done by then fails the group and ends the worker",
                InRange(100, 600000)),
          K::Of("max_waiting", &C::max_waiting, kEngine.max_waiting,
                "queued requests beyond which new ones are refused with 429"),
          K::Of("max_num_seqs", &C::max_num_seqs, kEngine.scheduler.max_num_seqs, "sequences batched in one step",
                InRange(1, 1024)),
          K::Of("max_num_batched_tokens", &C::max_num_batched_tokens, kDefaultMaxNumBatchedTokens,
                "tokens in one step; longer prompts are prefilled in chunks (0: the tokens that fit in "
                "--step-target-ms, from a step cost measured at start)",
                InRange(0, 65536, " (0: automatic)")),
          K::Of("step_target_ms", &C::step_target_ms, kEngine.step_target_seconds * 1000,
                "with an automatic max_num_batched_tokens: the time one step should take, so a running stream waits "
                "at most about that long for another request's prompt (0: 1.5x a full decode step, at least 20 ms)",
                InRange(0.0, 60000.0)),
          K::Of("kv_cache_memory", &C::kv_cache_memory_mib, static_cast<int>(kDefaultKvCacheBytes >> 20),
                "KV cache size in MiB", InRange(1, 1 << 20, " MiB")),
          K::Of("enable_prefix_caching", &C::enable_prefix_caching, kEngine.prefix_caching,
                "reuse KV blocks of shared prompt prefixes"),
          K::Of("adapter_dirs", &C::adapter_dirs, Strings(),
                "directories holding LoRA adapters, comma-separated or repeated; adapters are served by their "
                "directory name, and runtime loads must lie inside one")
              .Flag("adapter_dir"),
          K::Of("max_loras", &C::max_loras, kAdapters.max_loras, "LoRA adapters resident on the device at once",
                InRange(1, 1024)),
          K::Of("max_cpu_loras", &C::max_cpu_loras, kAdapters.max_cpu_loras, "LoRA adapters kept in host memory"),
          K::Of("max_lora_rank", &C::max_lora_rank, kDefaultMaxLoraRank, "largest LoRA rank accepted",
                InRange(1, 1024)),
          K::Of("lora_dtype", &C::lora_dtype, std::string("auto"),
                "storage type of adapter weights on the device and in host memory: auto (float16 on the CPU, the "
                "model's activation type on a GPU), float32, float16 or bfloat16",
                CheckLoraDtype),
          K::Of("metrics_listen", &C::metrics_listen, std::string(),
                "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)"),
          K::Of("drain_timeout_s", &C::drain_timeout_s, kDefaultDrainTimeoutS,
                "on SIGTERM, time for running generations to finish", InRange(0, 3600)),
          K::Of("device", &C::device, std::string("cpu"), "cpu or cuda[:N]", CheckDevice),
          K::Of("synthetic", &C::synthetic, std::string(),
                "serve a synthetic model of this architecture's shapes with random weights (llama3-8b, llama2-7b, "
                "tiny) instead of a file: for speed and memory measurements only"),
          K::Of("synthetic_type", &C::synthetic_type, std::string("q4_k"), "weight encoding of the synthetic model"),
          K::Of("sim_adapters", &C::sim_adapters, kSim.adapters,
                "sim engine: adapters named a0 .. a<N-1> in its catalog", InRange(0, 1000000)),
          K::Of("sim_step_ms", &C::sim_step_ms, kSim.step_ms, "sim engine: fixed time of one step", AtLeast(0.0)),
          K::Of("sim_prefill_us_per_token", &C::sim_prefill_us_per_token, kSim.prefill_us_per_token,
                "sim engine: step time per prompt token admitted", AtLeast(0.0)),
          K::Of("sim_decode_us_per_seq", &C::sim_decode_us_per_seq, kSim.decode_us_per_seq,
                "sim engine: step time per running sequence", AtLeast(0.0)),
          K::Of("sim_adapter_load_ms", &C::sim_adapter_load_ms, kSim.adapter_load_ms,
                "sim engine: adapter load time from disk (a quarter from host memory)", AtLeast(0.0)),
      },
      {CheckCpuLoras, CheckBatchedTokens});
}

WorkerConfigTable& TheWorkerConfigTable() {
  static WorkerConfigTable* table = new WorkerConfigTable(MakeWorkerConfigTable());
  return *table;
}

absl::StatusOr<WorkerConfig> LoadWorkerConfig(const WorkerConfigTable& table, const std::string& yaml_path,
                                              const std::vector<config::FlagText>& flags) {
  absl::StatusOr<WorkerConfig> c = table.Load(yaml_path, flags);
  if (!c.ok()) return c;
  if (c->model.empty()) c->model = DefaultModelPath();
  if (c->model_name.empty()) {
    c->model_name = c->engine == "sim"         ? "sim"
                    : !c->synthetic.empty() ? "synthetic-" + c->synthetic
                                            : ModelNameFromPath(c->model);
  }
  return c;
}

}  // namespace tessera
