// tessera-gateway's table of keys: defaults from their owners, the printed
// configuration read back, messages, flags over the file, repeated --worker.
#include "gateway/gateway_config.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"

namespace tessera::gateway {
namespace {

using Strings = std::vector<std::string>;

TEST(GatewayConfigTest, DefaultsAreTheirOwners) {
  const GatewayConfigTable t = MakeGatewayConfigTable();
  const GatewayConfig c = t.Defaults();
  EXPECT_EQ(c.listen, "127.0.0.1:8080");
  EXPECT_EQ(c.max_attempts, CompletionOptions{}.max_attempts);
  EXPECT_EQ(std::chrono::milliseconds(c.first_response_timeout_ms), CompletionOptions{}.first_response_timeout);
  EXPECT_EQ(std::chrono::seconds(c.request_timeout_s), CompletionOptions{}.timeout);
  EXPECT_EQ(std::chrono::milliseconds(c.dns_refresh_ms), WorkerPoolOptions{}.dns_refresh_interval);
  EXPECT_EQ(std::chrono::milliseconds(c.base_ejection_ms), WorkerPoolOptions{}.base_ejection);
  EXPECT_EQ(c.retry_budget_ratio, WorkerPoolOptions{}.retry_budget_ratio);
  EXPECT_EQ(c.routing_policy, WorkerPoolOptions{}.routing_policy);
  EXPECT_EQ(c.request.max_n, RequestLimits{}.max_n);
  EXPECT_EQ(c.http.max_body_bytes, HttpLimits{}.max_body_bytes);
  EXPECT_EQ(c.http.idle_timeout, HttpLimits{}.idle_timeout);
  EXPECT_EQ(c.io_threads, 2);
  EXPECT_EQ(c.drain_timeout_s, 30);
  // The defaults make a valid configuration once there is a worker.
  EXPECT_TRUE(absl::StartsWith(t.Validate(c).message(), "no workers:")) << t.Validate(c);
  EXPECT_TRUE(t.Load("", {{"worker", "w:1"}}).ok());
}

TEST(GatewayConfigTest, ThePrintedConfigurationReadsBack) {
  const GatewayConfigTable t = MakeGatewayConfigTable();
  GatewayConfig c = t.Defaults();
  ASSERT_TRUE(t.MergeYaml("workers: [w:1, w:2]\nretry_budget_ratio: 0.5\nmax_body_bytes: 8192\nidle_timeout_s: 5\n"
                          "max_n: 4\nlog_routing: true\napi_keys: [k1, k2]\n",
                          "g.yaml", c)
                  .ok());
  const std::string printed = t.ToYaml(c);
  std::vector<std::string> keys;
  for (const auto& kv : YAML::Load(printed)) keys.push_back(kv.first.as<std::string>());
  const Strings expected = {"listen", "grpc_listen", "workers", "worker_dns", "dns_server", "dns_refresh_ms",
                            "health_check_interval_ms", "health_check_timeout_ms", "connect_timeout_ms",
                            "first_response_timeout_ms", "max_attempts", "retry_budget_ratio",
                            "outlier_consecutive_failures", "base_ejection_ms", "max_in_flight_per_worker",
                            "metrics_listen", "drain_timeout_s", "api_keys", "admin_api_keys", "io_threads",
                            "routing_policy", "log_routing", "request_timeout_s", "max_n", "max_body_bytes",
                            "max_header_bytes", "max_header_count", "max_json_depth", "request_read_timeout_s",
                            "idle_timeout_s"};
  EXPECT_EQ(keys, expected);
  // Keys are counted, never shown.
  EXPECT_TRUE(absl::StrContains(printed, "\napi_keys: 2 configured\nadmin_api_keys: 0 configured\n")) << printed;
  EXPECT_FALSE(absl::StrContains(printed, "k1")) << printed;
  // Everything else reads back to the same configuration.
  const std::string readable = absl::StrReplaceAll(
      printed, {{"api_keys: 2 configured\n", "api_keys: [k1, k2]\n"}, {"admin_api_keys: 0 configured\n", ""}});
  GatewayConfig back = t.Defaults();
  ASSERT_TRUE(t.MergeYaml(readable, "printed", back).ok()) << readable;
  EXPECT_EQ(t.ToYaml(back), printed);
  EXPECT_EQ(back.http.idle_timeout, std::chrono::seconds(5));
  EXPECT_EQ(back.http.max_body_bytes, 8192u);
  EXPECT_EQ(back.request.max_n, 4);
  EXPECT_EQ(back.retry_budget_ratio, 0.5);
}

TEST(GatewayConfigTest, MessagesNameTheKey) {
  const GatewayConfigTable t = MakeGatewayConfigTable();
  auto load = [&](const std::string& yaml) {
    GatewayConfig c = t.Defaults();
    absl::Status s = t.MergeYaml("workers: [w:1]\n" + yaml, "g.yaml", c);
    if (s.ok()) s = t.Validate(c);
    return std::string(s.message());
  };
  EXPECT_EQ(load("workerz: [a]"), "g.yaml: unknown key 'workerz'");
  EXPECT_EQ(load("max_attempts: 11"), "max_attempts must be in [1, 10]; got 11");
  EXPECT_EQ(load("dns_refresh_ms: 50"), "dns_refresh_ms must be in [100, 3600000]; got 50");
  EXPECT_EQ(load("retry_budget_ratio: 2"), "retry_budget_ratio must be in [0, 1]; got 2");
  EXPECT_EQ(load("io_threads: 0"), "io_threads must be in [1, 256]; got 0");
  EXPECT_EQ(load("max_n: 200"), "max_n must be in [1, 128]; got 200");
  EXPECT_EQ(load("request_timeout_s: 0"), "request_timeout_s must be >= 1; got 0");
  EXPECT_EQ(load("max_body_bytes: 10"), "max_body_bytes must be >= 1024; got 10");
  EXPECT_EQ(load("api_keys: ['']"), "api_keys must not contain empty keys");
  EXPECT_EQ(load("admin_api_keys: [a, '']"), "admin_api_keys must not contain empty keys");
  EXPECT_FALSE(load("routing_policy: random").empty());
  EXPECT_FALSE(load("worker_dns: [nope]").empty());
}

TEST(GatewayConfigTest, FlagsWinAndRepeatedWorkersAccumulate) {
  const GatewayConfigTable t = MakeGatewayConfigTable();
  const std::string path = testing::TempDir() + "/gateway_config_test.yaml";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("workers: [f:1]\nmax_attempts: 2\nio_threads: 4\napi_keys: [file-key]\n", f);
    std::fclose(f);
  }
  absl::StatusOr<GatewayConfig> c = LoadGatewayConfig(
      t, path, {{"worker", "a:1"}, {"worker", "b:2,c:3"}, {"max_attempts", "5"}, {"api_key", "flag-key"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->workers, (Strings{"a:1", "b:2", "c:3"}));
  EXPECT_EQ(c->max_attempts, 5);
  EXPECT_EQ(c->io_threads, 4);
  EXPECT_EQ(c->api_keys, Strings{"flag-key"});
  // Zero given is zero, checked, not "unset".
  EXPECT_EQ(LoadGatewayConfig(t, path, {{"max_attempts", "0"}}).status().message(),
            "max_attempts must be in [1, 10]; got 0");
  std::set<std::string> flags;
  for (const auto& k : t.keys()) EXPECT_TRUE(flags.insert(k.flag).second) << k.flag;
  EXPECT_TRUE(flags.count("worker") && flags.count("api_key") && flags.count("admin_api_key"));
}

}  // namespace
}  // namespace tessera::gateway
