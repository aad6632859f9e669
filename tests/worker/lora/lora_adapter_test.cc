#include "worker/lora/lora_adapter.h"

#include <chrono>
#include <thread>

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/fp16.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "worker/lora/adapter_manager.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

LlamaConfig TinyBase() {
  LlamaConfig c;
  c.n_layers = 2;
  c.n_embd = 8;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.n_ff = 16;
  return c;
}

class LoraAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tessera-lora-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Writes a PEFT adapter directory; tensors: name -> (shape, value).
  fs::path Write(const std::string& name, nlohmann::json config,
                 const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors, float big = 0) {
    fs::path dir = root_ / name;
    fs::create_directories(dir);
    std::ofstream(dir / "adapter_config.json") << config.dump();
    nlohmann::json header = nlohmann::json::object();
    std::vector<uint8_t> data;
    for (const auto& [tname, shape] : tensors) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      const size_t begin = data.size();
      for (int64_t i = 0; i < n; ++i) {
        const float v = big != 0 && i == 0 ? big : 0.01f * static_cast<float>(i % 7);
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        data.insert(data.end(), p, p + 4);
      }
      header[tname] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {begin, data.size()}}};
    }
    const std::string h = header.dump();
    std::ofstream f(dir / "adapter_model.safetensors", std::ios::binary);
    const uint64_t len = h.size();
    f.write(reinterpret_cast<const char*>(&len), 8);
    f << h;
    f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    return dir;
  }

  static nlohmann::json Config(int r, std::vector<std::string> targets) {
    return {{"peft_type", "LORA"}, {"r", r}, {"lora_alpha", 2 * r}, {"target_modules", targets}, {"bias", "none"}};
  }

  fs::path root_;
};

std::string Name(int l, const char* part, const char* proj, const char* ab) {
  return "base_model.model.model.layers." + std::to_string(l) + "." + part + "." + proj + ".lora_" + ab + ".weight";
}

TEST_F(LoraAdapterTest, SixteenBitStorageHalvesTheHostBytesAndRefusesWhatFloat16CannotHold) {
  const auto tensors = std::vector<std::pair<std::string, std::vector<int64_t>>>{
      {Name(0, "self_attn", "q_proj", "A"), {4, 8}}, {Name(0, "self_attn", "q_proj", "B"), {8, 4}},
      {Name(1, "mlp", "down_proj", "A"), {4, 16}}, {Name(1, "mlp", "down_proj", "B"), {8, 4}}};
  auto dir = Write("half", Config(4, {"q_proj", "down_proj"}), tensors);
  auto f32 = LoraAdapter::Load("half", dir.string(), TinyBase(), 64, LoraDtype::kF32);
  auto f16 = LoraAdapter::Load("half", dir.string(), TinyBase(), 64, LoraDtype::kF16);
  auto bf16 = LoraAdapter::Load("half", dir.string(), TinyBase(), 64, LoraDtype::kBF16);
  ASSERT_TRUE(f32.ok() && f16.ok() && bf16.ok());
  EXPECT_EQ((*f16)->bytes() * 2, (*f32)->bytes());
  EXPECT_EQ((*bf16)->bytes() * 2, (*f32)->bytes());
  const LoraWeights* q = (*f16)->weights(0, LoraTarget::kQ);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, LoraDtype::kF16);
  EXPECT_TRUE(q->a.empty() && q->b.empty());
  ASSERT_EQ(q->a16.size(), 32u);
  EXPECT_EQ(Fp16ToFp32(q->a16[1]), Fp16ToFp32(Fp32ToFp16(0.01f)));  // value 0.01 * (1 % 7), rounded once

  // 1e6 overflows float16 (max 65504) but not bfloat16.
  auto big = Write("big", Config(4, {"q_proj", "down_proj"}), tensors, 1e6f);
  auto refused = LoraAdapter::Load("big", big.string(), TinyBase(), 64, LoraDtype::kF16);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("beyond what float16 stores"), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("--lora-dtype float32"), std::string::npos);
  EXPECT_TRUE(LoraAdapter::Load("big", big.string(), TinyBase(), 64, LoraDtype::kBF16).ok());

  EXPECT_EQ(*ResolveLoraDtype("auto", false, true), LoraDtype::kF16);
  EXPECT_EQ(*ResolveLoraDtype("auto", true, true), LoraDtype::kBF16);
  EXPECT_EQ(*ResolveLoraDtype("auto", true, false), LoraDtype::kF16);
  EXPECT_FALSE(ResolveLoraDtype("fp8", false, false).ok());
}

TEST_F(LoraAdapterTest, LoadsValidAdapterWithPatterns) {
  auto cfg = Config(4, {"q_proj", "down_proj"});
  cfg["rank_pattern"] = {{"model.layers.1.mlp.down_proj", 2}};
  cfg["use_rslora"] = true;
  auto dir = Write("good", cfg,
                   {{Name(0, "self_attn", "q_proj", "A"), {4, 8}}, {Name(0, "self_attn", "q_proj", "B"), {8, 4}},
                    {Name(1, "mlp", "down_proj", "A"), {2, 16}}, {Name(1, "mlp", "down_proj", "B"), {8, 2}}});
  auto a = LoraAdapter::Load("good", dir.string(), TinyBase(), 64);
  ASSERT_TRUE(a.ok()) << a.status();
  const LoraWeights* q = (*a)->weights(0, LoraTarget::kQ);
  ASSERT_NE(q, nullptr);
  EXPECT_FLOAT_EQ(q->scale, 8.f / 2.f);  // rsLoRA: alpha / sqrt(r) = 8 / 2
  const LoraWeights* d = (*a)->weights(1, LoraTarget::kDown);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->rank, 2);
  EXPECT_EQ((*a)->weights(1, LoraTarget::kQ), nullptr);
}

TEST_F(LoraAdapterTest, RefusesUnsupportedOrMismatchedAdapters) {
  const auto good = std::vector<std::pair<std::string, std::vector<int64_t>>>{
      {Name(0, "self_attn", "q_proj", "A"), {4, 8}}, {Name(0, "self_attn", "q_proj", "B"), {8, 4}}};
  auto refuse = [&](const std::string& name, nlohmann::json cfg, auto tensors, const std::string& text) {
    auto dir = Write(name, cfg, tensors);
    auto a = LoraAdapter::Load(name, dir.string(), TinyBase(), 8);
    ASSERT_FALSE(a.ok()) << name;
    EXPECT_NE(a.status().message().find(text), std::string::npos) << a.status();
  };
  auto dora = Config(4, {"q_proj"});
  dora["use_dora"] = true;
  refuse("dora", dora, good, "DoRA");
  auto mts = Config(4, {"q_proj"});
  mts["modules_to_save"] = {"lm_head"};
  refuse("mts", mts, good, "modules_to_save");
  auto bias = Config(4, {"q_proj"});
  bias["bias"] = "all";
  refuse("bias", bias, good, "bias must be");
  refuse("rank", Config(16, {"q_proj"}), good, "exceeds --max-lora-rank 8");
  refuse("shape", Config(4, {"q_proj"}),
         std::vector<std::pair<std::string, std::vector<int64_t>>>{{Name(0, "self_attn", "q_proj", "A"), {4, 9}},
                                                                   {Name(0, "self_attn", "q_proj", "B"), {8, 4}}},
         "must be [4, 8]");
  refuse("target", Config(4, {"lm_head"}), good, "is not one of");
  refuse("untargeted", Config(4, {"k_proj"}), good, "not in target_modules");
  auto extra = good;
  extra.push_back({"base_model.model.lm_head.weight", {2, 2}});
  refuse("extra", Config(4, {"q_proj"}), extra, "unexpected tensor");
  refuse("half", Config(4, {"q_proj"}),
         std::vector<std::pair<std::string, std::vector<int64_t>>>{{Name(0, "self_attn", "q_proj", "A"), {4, 8}}},
         "only one of");
  EXPECT_FALSE(LoraAdapter::Load("../evil", (root_ / "dora").string(), TinyBase(), 8).ok());
}

// adapter_config.json is checked before a byte is read: a 400 MB file
// (sparse: it costs no disk) is refused by its size, /dev/zero and a FIFO
// as not regular files (neither grows the process nor blocks it), and deep
// nesting before parsing. The old reader took 834 MB for the first and grew
// until killed on the second.
TEST_F(LoraAdapterTest, HostileConfigFilesAreRefusedBeforeReading) {
  const auto good = std::vector<std::pair<std::string, std::vector<int64_t>>>{
      {Name(0, "self_attn", "q_proj", "A"), {4, 8}}, {Name(0, "self_attn", "q_proj", "B"), {8, 4}}};
  auto refused_with = [&](const std::string& name, const std::string& text) {
    auto a = LoraAdapter::Load(name, (root_ / name).string(), TinyBase(), 8);
    ASSERT_FALSE(a.ok()) << name;
    EXPECT_NE(a.status().message().find(text), std::string::npos) << name << ": " << a.status();
  };
  auto replace_config = [&](const std::string& name) {
    Write(name, Config(4, {"q_proj"}), good);
    const fs::path config = root_ / name / "adapter_config.json";
    fs::remove(config);
    return config;
  };
  {
    const fs::path config = replace_config("huge");
    std::ofstream(config) << " ";
    fs::resize_file(config, 400ull << 20);
    refused_with("huge", "bytes");
  }
  ASSERT_EQ(::symlink("/dev/zero", replace_config("zero").c_str()), 0);
  refused_with("zero", "is not a regular file");
  ASSERT_EQ(::mkfifo(replace_config("fifo").c_str(), 0600), 0);
  refused_with("fifo", "is not a regular file");
  std::ofstream(replace_config("deep")) << std::string(10000, '[') << std::string(10000, ']');
  refused_with("deep", "nests more than 32 levels");
}

TEST_F(LoraAdapterTest, PickleIsRefusedUnopened) {
  fs::create_directories(root_ / "pickled");
  std::ofstream(root_ / "pickled" / "adapter_config.json") << Config(4, {"q_proj"}).dump();
  std::ofstream(root_ / "pickled" / "adapter_model.bin") << "not even a pickle";
  auto a = LoraAdapter::Load("pickled", (root_ / "pickled").string(), TinyBase(), 8);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("pickle"), std::string::npos);
}

TEST_F(LoraAdapterTest, NamesAndPathConfinement) {
  EXPECT_TRUE(IsValidAdapterName("sql-helper_v2.1"));
  for (const char* bad : {"", "../x", "/abs", ".hidden", "a/b", "a b", "x\n"}) EXPECT_FALSE(IsValidAdapterName(bad)) << bad;
  EXPECT_FALSE(IsValidAdapterName(std::string(129, 'a')));
  fs::create_directories(root_ / "inside" / "a");
  fs::create_directories(root_ / "outside");
  fs::create_symlink(root_ / "outside", root_ / "inside" / "escape");
  const std::vector<std::string> roots = {(root_ / "inside").string()};
  EXPECT_TRUE(ResolveAdapterDir((root_ / "inside" / "a").string(), roots).ok());
  EXPECT_EQ(ResolveAdapterDir((root_ / "inside" / ".." / "outside").string(), roots).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveAdapterDir((root_ / "inside" / "escape").string(), roots).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveAdapterDir("/etc", roots).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveAdapterDir((root_ / "inside").string(), roots).status().code(), absl::StatusCode::kPermissionDenied);
  // Missing inside a root: not found; outside, missing or not: the same 403.
  EXPECT_EQ(ResolveAdapterDir((root_ / "inside" / "nope").string(), roots).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolveAdapterDir((root_ / "nope").string(), roots).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveAdapterDir((root_ / "outside").string(), roots).status().code(), absl::StatusCode::kPermissionDenied);
}

class AdapterManagerTest : public LoraAdapterTest {
 protected:
  fs::path WriteQ(const std::string& name, int r = 2) {
    return Write(name, Config(r, {"q_proj"}),
                 {{Name(0, "self_attn", "q_proj", "A"), {r, 8}}, {Name(0, "self_attn", "q_proj", "B"), {8, r}},
                  {Name(1, "self_attn", "q_proj", "A"), {r, 8}}, {Name(1, "self_attn", "q_proj", "B"), {8, r}}});
  }
  std::unique_ptr<AdapterManager> Manager(int max_loras, int max_cpu_loras) {
    auto m = AdapterManager::Create({.roots = {root_.string()}, .max_loras = max_loras,
                                     .max_cpu_loras = max_cpu_loras, .max_lora_rank = 8},
                                    base_, *backend_);
    EXPECT_TRUE(m.ok()) << m.status();
    return std::move(*m);
  }
  // Calls TryPin until it pins or fails (the loader works in the background).
  static AdapterGate::Pin PinWhenLoaded(AdapterManager& m, uint64_t id) {
    for (int i = 0; i < 500; ++i) {
      const AdapterGate::Pin p = m.TryPin(id);
      if (p == AdapterGate::Pin::kPinned || p == AdapterGate::Pin::kFailed) return p;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return AdapterGate::Pin::kLoading;
  }

  LlamaConfig base_ = TinyBase();
  std::unique_ptr<Backend> backend_ = CreateCpuBackend({.threads = 1});
};

TEST_F(AdapterManagerTest, DiscoversLoadsPinsAndEvictsLeastRecentlyUsed) {
  WriteQ("a");
  WriteQ("b", 4);
  auto m = Manager(/*max_loras=*/1, /*max_cpu_loras=*/2);
  ASSERT_EQ(m->List().size(), 2u);
  const uint64_t a = *m->Resolve("a"), b = *m->Resolve("b");
  EXPECT_NE(a, b);
  EXPECT_EQ(m->TryPin(a), AdapterGate::Pin::kLoading);  // cold: loaded off the caller's thread
  ASSERT_EQ(PinWhenLoaded(*m, a), AdapterGate::Pin::kPinned);
  ASSERT_NE(m->View(a), nullptr);
  EXPECT_NE(m->View(a)->pair(1, static_cast<int>(LoraTarget::kQ), 0), nullptr);
  EXPECT_EQ(m->View(a)->pair(1, static_cast<int>(LoraTarget::kV), 0), nullptr);
  // The only slot is pinned: b waits for it and a is not evicted.
  AdapterGate::Pin p = m->TryPin(b);
  for (int i = 0; i < 200 && p != AdapterGate::Pin::kWaitForSlot; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    p = m->TryPin(b);
  }
  EXPECT_EQ(p, AdapterGate::Pin::kWaitForSlot);
  EXPECT_NE(m->View(a), nullptr);
  m->Unpin(a);
  m->Unpin(a);  // pins never go below zero
  ASSERT_EQ(PinWhenLoaded(*m, b), AdapterGate::Pin::kPinned);
  EXPECT_EQ(m->View(a), nullptr);  // evicted from the device
  const AdapterStats st = m->stats();
  EXPECT_EQ(st.device_evictions, 1u);
  EXPECT_EQ(st.on_device, 1);
  EXPECT_EQ(st.on_host, 2);
  for (const AdapterInfo& info : m->List()) {
    EXPECT_EQ(info.tier, info.name == "b" ? AdapterTier::kDevice : AdapterTier::kHost) << info.name;
  }
}

TEST_F(AdapterManagerTest, BrokenAdapterFailsOnceUntilItsFilesChange) {
  const fs::path dir = WriteQ("broken");
  fs::resize_file(dir / "adapter_model.safetensors", 20);
  auto m = Manager(2, 2);
  const uint64_t id = *m->Resolve("broken");
  EXPECT_EQ(PinWhenLoaded(*m, id), AdapterGate::Pin::kFailed);
  EXPECT_EQ(m->Failure(id).code(), absl::StatusCode::kInvalidArgument) << m->Failure(id);
  // Asked again, it is refused at once without another read, and not listed.
  auto again = m->Resolve("broken");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(m->List().empty());
  EXPECT_EQ(m->stats().load_failures, 1u);
  // Repaired files are read again.
  fs::remove_all(dir);
  WriteQ("broken");
  auto fixed = m->Resolve("broken");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(PinWhenLoaded(*m, *fixed), AdapterGate::Pin::kPinned);
}

TEST_F(AdapterManagerTest, RuntimeLoadUnloadAndConfinement) {
  WriteQ("staged/x");
  auto m = Manager(2, 2);
  EXPECT_TRUE(m->List().empty());  // staged/ is not an adapter directory
  EXPECT_EQ(m->Load("../x", (root_ / "staged/x").string()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Load("x", "/etc").code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(m->Load("x", (root_ / "staged/x").string()).ok());
  EXPECT_EQ(m->Load("x", (root_ / "staged/x").string()).code(), absl::StatusCode::kAlreadyExists);
  const uint64_t id = *m->Resolve("x");
  ASSERT_EQ(PinWhenLoaded(*m, id), AdapterGate::Pin::kPinned);
  ASSERT_TRUE(m->Unload("x").ok());
  EXPECT_EQ(m->Unload("x").code(), absl::StatusCode::kNotFound);
  EXPECT_NE(m->View(id), nullptr);  // still pinned by a running sequence
  EXPECT_EQ(m->TryPin(id), AdapterGate::Pin::kFailed);
  EXPECT_EQ(m->Failure(id).code(), absl::StatusCode::kNotFound);
  m->Unpin(id);
  EXPECT_EQ(m->View(id), nullptr);  // released with its last pin
  EXPECT_EQ(m->Resolve("x").status().code(), absl::StatusCode::kNotFound);
  // Loaded again under the same name: a new id, so a new prefix-cache namespace.
  ASSERT_TRUE(m->Load("x", (root_ / "staged/x").string()).ok());
  EXPECT_NE(*m->Resolve("x"), id);
}

}  // namespace
}  // namespace tessera
