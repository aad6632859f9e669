// tessera-worker's table of keys: defaults from their owners, every key read
// back from the printed configuration, messages, precedence, and the
// deprecated backend spelling of engine.
#include "worker/service/worker_config.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "worker/engine/engine.h"
#include "worker/lora/adapter_manager.h"
#include "worker/sim/sim_worker.h"

namespace tessera {
namespace {

WorkerConfigTable Table(std::vector<std::string>* warnings) {
  WorkerConfigTable t = MakeWorkerConfigTable();
  t.SetWarningSink([warnings](const std::string& m) { warnings->push_back(m); });
  return t;
}

TEST(WorkerConfigTest, DefaultsAreTheirOwners) {
  std::vector<std::string> warnings;
  const WorkerConfig c = Table(&warnings).Defaults();
  EXPECT_EQ(c.engine, "model");
  EXPECT_EQ(c.listen, "127.0.0.1:50051");
  EXPECT_EQ(c.max_waiting, EngineOptions{}.max_waiting);
  EXPECT_EQ(c.max_num_seqs, SchedulerOptions{}.max_num_seqs);
  EXPECT_EQ(c.max_num_batched_tokens, 0);
  EXPECT_EQ(int64_t{c.kv_cache_memory_mib} << 20, kDefaultKvCacheBytes);
  EXPECT_EQ(c.enable_prefix_caching, EngineOptions{}.prefix_caching);
  EXPECT_EQ(c.max_loras, AdapterManagerOptions{}.max_loras);
  EXPECT_EQ(c.max_cpu_loras, AdapterManagerOptions{}.max_cpu_loras);
  EXPECT_EQ(c.max_lora_rank, 64);
  EXPECT_EQ(c.drain_timeout_s, 30);
  EXPECT_EQ(c.lora_dtype, "auto");
  EXPECT_EQ(c.device, "cpu");
  EXPECT_EQ(c.synthetic_type, "q4_k");
  EXPECT_EQ(c.sim_step_ms, SimWorkerOptions{}.step_ms);
  EXPECT_EQ(c.sim_decode_us_per_seq, SimWorkerOptions{}.decode_us_per_seq);
}

TEST(WorkerConfigTest, ThePrintedConfigurationKeepsItsKeysAndReadsBack) {
  std::vector<std::string> warnings;
  const WorkerConfigTable t = Table(&warnings);
  WorkerConfig c = t.Defaults();
  ASSERT_TRUE(t.MergeYaml("engine: sim\nmodel: /m/x.gguf\nthreads: 3\nstep_target_ms: 37.5\nadapter_dirs: [/a, /b]\n"
                          "enable_prefix_caching: false\ndevice: cuda:1\nsim_adapters: 7\n",
                          "w.yaml", c)
                  .ok());
  const std::string printed = t.ToYaml(c);
  // The keys tools and the Helm chart read, in the order they always had.
  std::vector<std::string> keys;
  for (const auto& kv : YAML::Load(printed)) keys.push_back(kv.first.as<std::string>());
  const std::vector<std::string> expected = {
      "engine", "listen", "model", "model_name", "chat_template", "chat_content_special_tokens", "threads",
      "tensor_parallel_size", "tensor_parallel_timeout_ms", "max_waiting", "max_num_seqs", "max_num_batched_tokens", "step_target_ms", "kv_cache_memory",
      "enable_prefix_caching", "adapter_dirs", "max_loras", "max_cpu_loras", "max_lora_rank", "lora_dtype",
      "metrics_listen", "drain_timeout_s", "device", "synthetic", "synthetic_type", "sim_adapters", "sim_step_ms",
      "sim_prefill_us_per_token", "sim_decode_us_per_seq", "sim_adapter_load_ms"};
  EXPECT_EQ(keys, expected);
  EXPECT_TRUE(absl::StrContains(printed, "\nadapter_dirs: [/a, /b]\n")) << printed;
  EXPECT_TRUE(absl::StrContains(printed, "\nstep_target_ms: 37.5\n")) << printed;
  EXPECT_TRUE(absl::StrContains(printed, "\nenable_prefix_caching: false\n")) << printed;
  // Every key read back from the printed form gives the same configuration.
  WorkerConfig back = t.Defaults();
  ASSERT_TRUE(t.MergeYaml(printed, "printed", back).ok());
  EXPECT_EQ(t.ToYaml(back), printed);
  EXPECT_EQ(back.adapter_dirs, c.adapter_dirs);
  EXPECT_EQ(back.step_target_ms, 37.5);
  EXPECT_EQ(back.sim_adapters, 7);
  EXPECT_TRUE(warnings.empty());
}

TEST(WorkerConfigTest, UnknownKeysAndBadValues) {
  std::vector<std::string> warnings;
  const WorkerConfigTable t = Table(&warnings);
  WorkerConfig c = t.Defaults();
  EXPECT_EQ(t.MergeYaml("max_num_seq: 4\n", "w.yaml", c).message(), "w.yaml: unknown key 'max_num_seq'");
  auto load = [&](const std::string& yaml) {
    WorkerConfig w = t.Defaults();
    absl::Status s = t.MergeYaml(yaml, "w.yaml", w);
    if (s.ok()) s = t.Validate(w);
    return std::string(s.message());
  };
  EXPECT_EQ(load("engine: cpu"), "engine must be one of model, sim; got 'cpu'");
  EXPECT_EQ(load("device: tpu"), "device must be cpu, cuda or cuda:N; got 'tpu'");
  EXPECT_EQ(load("max_num_seqs: 0"), "max_num_seqs must be in [1, 1024]; got 0");
  EXPECT_EQ(load("kv_cache_memory: 0"), "kv_cache_memory must be in [1, 1048576] MiB; got 0");
  EXPECT_EQ(load("max_num_batched_tokens: 70000"),
            "max_num_batched_tokens must be in [0, 65536] (0: automatic); got 70000");
  EXPECT_EQ(load("max_num_batched_tokens: 16"), "max_num_batched_tokens must be >= max_num_seqs; got 16 < 32");
  EXPECT_EQ(load("max_loras: 8\nmax_cpu_loras: 4"),
            "max_cpu_loras must be in [max_loras, 65536]; got 4 (max_loras 8)");
  EXPECT_EQ(load("drain_timeout_s: 4000"), "drain_timeout_s must be in [0, 3600]; got 4000");
  EXPECT_EQ(load("threads: -1"), "threads must be in [0, 1024]; got -1");
  EXPECT_EQ(load("sim_step_ms: -1"), "sim_step_ms must be >= 0; got -1");
  EXPECT_TRUE(absl::StrContains(load("lora_dtype: int4"), "int4")) << load("lora_dtype: int4");
  EXPECT_TRUE(absl::StartsWith(load("threads: all"), "w.yaml: threads: ")) << load("threads: all");
}

TEST(WorkerConfigTest, FlagsWinOverTheFile) {
  std::vector<std::string> warnings;
  const WorkerConfigTable t = Table(&warnings);
  const std::string path = testing::TempDir() + "/worker_config_test.yaml";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("engine: sim\nmax_num_seqs: 8\nmax_waiting: 9\nadapter_dirs: [/f]\nchat_content_special_tokens: true\n",
               f);
    std::fclose(f);
  }
  absl::StatusOr<WorkerConfig> c = LoadWorkerConfig(
      t, path,
      {{"max_num_seqs", "4"}, {"adapter_dir", "/x"}, {"adapter_dir", "/y,/z"}, {"chat_content_special_tokens", "false"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_num_seqs, 4);     // flag
  EXPECT_EQ(c->max_waiting, 9);      // file
  EXPECT_EQ(c->engine, "sim");       // file
  EXPECT_EQ(c->adapter_dirs, (std::vector<std::string>{"/x", "/y", "/z"}));
  EXPECT_FALSE(c->chat_content_special_tokens);
  EXPECT_EQ(c->model_name, "sim");   // derived once the rest is known
  EXPECT_FALSE(c->model.empty());    // the bundled model
  // A flag is checked like the file: zero given is zero, not "unset".
  EXPECT_EQ(LoadWorkerConfig(t, path, {{"max_num_seqs", "0"}}).status().message(),
            "max_num_seqs must be in [1, 1024]; got 0");
}

TEST(WorkerConfigTest, ServedNameFollowsTheModel) {
  std::vector<std::string> warnings;
  const WorkerConfigTable t = Table(&warnings);
  EXPECT_EQ(LoadWorkerConfig(t, "", {{"model", "/models/tiny.Q4_1.gguf"}})->model_name, "tiny.Q4_1");
  EXPECT_EQ(LoadWorkerConfig(t, "", {{"synthetic", "llama3-8b"}})->model_name, "synthetic-llama3-8b");
  EXPECT_EQ(LoadWorkerConfig(t, "", {{"model_name", "mine"}, {"engine", "sim"}})->model_name, "mine");
}

TEST(WorkerConfigTest, BackendIsADeprecatedSpellingOfEngine) {
  std::vector<std::string> warnings;
  const WorkerConfigTable t = Table(&warnings);
  absl::StatusOr<WorkerConfig> c = LoadWorkerConfig(t, "", {{"backend", "sim"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->engine, "sim");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "--backend is deprecated; use --engine (cpu is now model)");
  WorkerConfig y = t.Defaults();
  y.engine = "sim";
  ASSERT_TRUE(t.MergeYaml("backend: cpu\n", "w.yaml", y).ok());
  EXPECT_EQ(y.engine, "model");
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[1], "w.yaml: 'backend' is deprecated; use 'engine' (cpu is now model)");
  EXPECT_EQ(LoadWorkerConfig(t, "", {{"backend", "gpu"}}).status().message(),
            "backend must be 'cpu' or 'sim'; got 'gpu'");
  // Never printed: the effective configuration names the engine.
  EXPECT_FALSE(absl::StrContains(t.ToYaml(*c), "backend")) << t.ToYaml(*c);
  // And no key is a flag twice.
  std::set<std::string> flags;
  for (const auto& k : t.keys()) EXPECT_TRUE(flags.insert(k.flag).second) << k.flag;
}

}  // namespace
}  // namespace tessera
