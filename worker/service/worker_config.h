// WorkerConfig: every setting of tessera-worker, and the one table of its keys
// (worker_config.cc) from which the YAML file's reading, the flags and the
// printed effective configuration are derived (common/config/config_table.h).
//
// Defaults come from what each key configures (EngineOptions,
// SchedulerOptions, AdapterManagerOptions, SimWorkerOptions,
// kDefaultKvCacheBytes); the worker's own are named in worker_config.cc. The
// Helm chart's values.yaml spells them for operators; tests/deploy checks that
// it agrees with the binary's printed defaults.
//
// Thread-safety: a WorkerConfig is a plain value. WorkerConfigTable() is built
// on first use; call it first from main, before other threads start.
#ifndef TESSERA_WORKER_SERVICE_WORKER_CONFIG_H_
#define TESSERA_WORKER_SERVICE_WORKER_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config/config_table.h"

namespace tessera {

struct WorkerConfig {
  std::string engine;  // "model": serve the model; "sim": simulated, no model
  std::string listen;
  std::string model;       // empty: the bundled model (filled in by Load)
  std::string model_name;  // empty: from the model (filled in by Load)
  std::string chat_template;  // a file; empty: the model's own template
  bool chat_content_special_tokens = false;
  int threads = 0;
  int tensor_parallel_size = 1;
  int tensor_parallel_timeout_ms = 30000;
  int max_waiting = 0;
  int max_num_seqs = 0;
  int max_num_batched_tokens = 0;  // 0: from the measured step cost and step_target_ms
  double step_target_ms = 0;       // 0: auto
  int kv_cache_memory_mib = 0;
  bool enable_prefix_caching = false;
  std::vector<std::string> adapter_dirs;
  int max_loras = 0;
  int max_cpu_loras = 0;
  int max_lora_rank = 0;
  std::string lora_dtype;
  std::string metrics_listen;
  int drain_timeout_s = 0;
  std::string device;
  std::string synthetic;
  std::string synthetic_type;
  // engine: sim only.
  int sim_adapters = 0;
  double sim_step_ms = 0;
  double sim_prefill_us_per_token = 0;
  double sim_decode_us_per_seq = 0;
  double sim_adapter_load_ms = 0;
};

using WorkerConfigTable = config::ConfigTable<WorkerConfig>;

// A new table of WorkerConfig's keys (tests build their own).
WorkerConfigTable MakeWorkerConfigTable();

// The process's table, whose flags main registers.
WorkerConfigTable& TheWorkerConfigTable();

// Defaults, then the YAML file at `yaml_path` (none if empty), then `flags`;
// validated; the model and its served name filled in when left empty (the
// bundled model; "sim", "synthetic-<arch>", or the file's stem or directory's
// name).
absl::StatusOr<WorkerConfig> LoadWorkerConfig(const WorkerConfigTable& table, const std::string& yaml_path,
                                              const std::vector<config::FlagText>& flags);

}  // namespace tessera

#endif  // TESSERA_WORKER_SERVICE_WORKER_CONFIG_H_
