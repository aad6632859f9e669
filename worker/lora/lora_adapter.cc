#include "worker/lora/lora_adapter.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/escape.h"
#include "common/fp16.h"
#include "common/json/json_file.h"
#include "common/safetensors/safetensors_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kTargetNames[kLoraTargets] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"};

absl::Status Refuse(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("LoRA adapter: ", std::string(what)));
}

// PEFT's module path of a projection, without the "base_model.model." prefix.
std::string ModulePath(int layer, LoraTarget t) {
  const bool attn = t == LoraTarget::kQ || t == LoraTarget::kK || t == LoraTarget::kV || t == LoraTarget::kO;
  return absl::StrCat("model.layers.", layer, attn ? ".self_attn." : ".mlp.",
                      std::string(kTargetNames[static_cast<int>(t)]));
}

// PEFT's pattern rule: a key applies to a module whose name is the key or
// ends with "." + key; the first matching key wins.
template <typename T>
const T* PatternFor(const std::vector<std::pair<std::string, T>>& patterns, const std::string& module) {
  for (const auto& [key, value] : patterns) {
    if (module == key || absl::EndsWith(module, "." + key)) return &value;
  }
  return nullptr;
}

std::pair<int64_t, int64_t> InOut(const LlamaConfig& c, LoraTarget t) {
  switch (t) {
    case LoraTarget::kQ: return {c.n_embd, c.q_dim()};
    case LoraTarget::kK: case LoraTarget::kV: return {c.n_embd, c.kv_dim()};
    case LoraTarget::kO: return {c.q_dim(), c.n_embd};
    case LoraTarget::kGate: case LoraTarget::kUp: return {c.n_embd, c.n_ff};
    case LoraTarget::kDown: return {c.n_ff, c.n_embd};
  }
  return {0, 0};
}

// Checkpoints whose q/k rows are interleaved (llama.cpp's GGUFs of Llama
// architectures; LlamaConfig::qk_rows_interleaved) hold each head's rows
// reordered from Hugging Face's half-split layout: GGUF row
// h*hd + 2j + s is HF row h*hd + s*hd/2 + j (llama.cpp's converter permutes
// the base weights and, for LoRA, lora_B the same way). PEFT adapters are
// in HF order, so lora_B of q and k is reordered to match the base.
void PermuteRopeRows(std::vector<float>& b, int n_heads, int head_dim, int rank) {
  const std::vector<float> hf = b;
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    for (int j = 0; j < half; ++j) {
      for (int s = 0; s < 2; ++s) {
        const size_t dst = static_cast<size_t>(h * head_dim + 2 * j + s) * rank;
        const size_t src = static_cast<size_t>(h * head_dim + s * half + j) * rank;
        std::copy(hf.begin() + src, hf.begin() + src + rank, b.begin() + dst);
      }
    }
  }
}

// Rounds float weights to a 16-bit LoraDtype; a value float16 cannot hold
// (it would become infinite) is an error naming the tensor.
absl::Status To16Bit(const std::vector<float>& in, LoraDtype dtype, std::vector<uint16_t>& out,
                     const std::string& tensor) {
  out.resize(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    out[i] = dtype == LoraDtype::kF16 ? Fp32ToFp16(in[i]) : Fp32ToBf16(in[i]);
    const float back = dtype == LoraDtype::kF16 ? Fp16ToFp32(out[i]) : Bf16ToFp32(out[i]);
    if (!std::isfinite(back)) {
      return Refuse(absl::StrCat(tensor, " holds ", in[i], ", beyond what ", std::string(LoraDtypeName(dtype)),
                                 " stores; serve it with --lora-dtype float32"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view LoraTargetName(LoraTarget t) { return kTargetNames[static_cast<int>(t)]; }

bool IsValidAdapterName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) return false;
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

absl::StatusOr<std::string> ResolveAdapterDir(const std::string& path, const std::vector<std::string>& roots) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto inside = [](const fs::path& p, const fs::path& root) {
    const std::string rs = root.string() + "/";
    return absl::StartsWith(p.string() + "/", rs) && p != root;
  };
  const auto outside = [&] {
    return absl::PermissionDeniedError(
        absl::StrCat("adapter path '", EscapeForMessage(path), "' is outside the configured adapter directories"));
  };
  // A path that names a place outside every root is refused before the file
  // system is asked anything, so that the answer (403, never 404) cannot
  // reveal what exists outside the roots.
  const fs::path lexical = fs::absolute(path, ec).lexically_normal();
  bool lexically_inside = false;
  for (const std::string& root : roots) {
    const fs::path lr = fs::absolute(root, ec).lexically_normal();
    const fs::path cr = fs::canonical(root, ec);
    lexically_inside |= inside(lexical, lr) || (!ec && inside(lexical, cr));
  }
  if (!lexically_inside) return outside();
  const fs::path real = fs::canonical(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("adapter path '", EscapeForMessage(path), "' does not exist"));
  for (const std::string& root : roots) {
    const fs::path r = fs::canonical(root, ec);
    if (!ec && inside(real, r)) return real.string();
  }
  return outside();  // inside by name, outside through a symlink
}

absl::StatusOr<LoraAdapterConfig> ParseLoraConfig(std::string_view text, int max_rank) {
  if (JsonNestingDepth(text) > 32) return Refuse("adapter_config.json nests more than 32 levels deep");
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Refuse("adapter_config.json is not a JSON object");
  LoraAdapterConfig c;
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  if (const std::string t = str("peft_type"); t != "LORA") {
    return Refuse(absl::StrCat("peft_type must be \"LORA\"; got \"", EscapeForMessage(t), "\""));
  }
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() < 1) {
    return Refuse("'r' must be a positive integer");
  }
  if (j["r"].get<int64_t>() > max_rank) {
    return Refuse(absl::StrCat("rank ", j["r"].get<int64_t>(), " exceeds --max-lora-rank ", max_rank));
  }
  c.rank = static_cast<int>(j["r"].get<int64_t>());
  c.alpha = c.rank;
  if (j.contains("lora_alpha") && !j["lora_alpha"].is_null()) {
    if (!j["lora_alpha"].is_number() || !std::isfinite(j["lora_alpha"].get<double>())) {
      return Refuse("'lora_alpha' must be a number");
    }
    c.alpha = j["lora_alpha"].get<double>();
  }
  auto flag = [&](const char* k, bool* out) -> absl::Status {
    if (!j.contains(k) || j[k].is_null()) return absl::OkStatus();
    if (!j[k].is_boolean()) return Refuse(absl::StrCat("'", k, "' must be a boolean"));
    *out = j[k].get<bool>();
    return absl::OkStatus();
  };
  TESSERA_RETURN_IF_ERROR(flag("use_rslora", &c.use_rslora));
  // PEFT itself ignores fan_in_fan_out for nn.Linear (every Llama
  // projection), so it is accepted and ignored here too.
  TESSERA_RETURN_IF_ERROR(flag("fan_in_fan_out", &c.fan_in_fan_out));
  bool dora = false;
  TESSERA_RETURN_IF_ERROR(flag("use_dora", &dora));
  if (dora) return Refuse("DoRA adapters (use_dora) are not supported");
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null() &&
      !(j["modules_to_save"].is_array() && j["modules_to_save"].empty())) {
    return Refuse("adapters with modules_to_save are not supported");
  }
  if (j.contains("bias") && !j["bias"].is_null() && str("bias") != "none") {
    return Refuse(absl::StrCat("bias must be \"none\"; got \"", EscapeForMessage(str("bias")), "\""));
  }
  if (!j.contains("target_modules")) return Refuse("'target_modules' is required");
  std::vector<std::string> targets;
  if (j["target_modules"].is_string()) {
    targets.push_back(j["target_modules"].get<std::string>());
  } else if (j["target_modules"].is_array()) {
    for (const Json& t : j["target_modules"]) {
      if (!t.is_string()) return Refuse("'target_modules' must hold strings");
      targets.push_back(t.get<std::string>());
    }
  } else {
    return Refuse("'target_modules' must be a string or a list of strings");
  }
  for (const std::string& t : targets) {
    bool known = false;
    for (int k = 0; k < kLoraTargets; ++k) {
      if (t == kTargetNames[k] || absl::EndsWith(t, absl::StrCat(".", std::string(kTargetNames[k])))) {
        c.targets[k] = true;
        known = true;
      }
    }
    if (!known) {
      return Refuse(absl::StrCat("target module '", EscapeForMessage(t),
                                 "' is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"));
    }
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_object()) return Refuse(absl::StrCat("'", key, "' must be an object"));
    for (auto it = j[key].begin(); it != j[key].end(); ++it) {
      if (std::string(key) == "rank_pattern") {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() < 1 || it.value().get<int64_t>() > max_rank) {
          return Refuse(absl::StrCat("rank_pattern '", EscapeForMessage(it.key()), "' must be an integer in [1, ",
                                     max_rank, "]"));
        }
        c.rank_pattern.emplace_back(it.key(), static_cast<int>(it.value().get<int64_t>()));
      } else {
        if (!it.value().is_number() || !std::isfinite(it.value().get<double>())) {
          return Refuse(absl::StrCat("alpha_pattern '", EscapeForMessage(it.key()), "' must be a number"));
        }
        c.alpha_pattern.emplace_back(it.key(), it.value().get<double>());
      }
    }
  }
  return c;
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::Load(const std::string& name, const std::string& dir,
                                                               const LlamaConfig& base, int max_rank,
                                                               LoraDtype dtype) {
  if (!IsValidAdapterName(name)) {
    return Refuse(absl::StrCat("invalid adapter name '", EscapeForMessage(name),
                               "'; names match [A-Za-z0-9][A-Za-z0-9._-]{0,127}"));
  }
  namespace fs = std::filesystem;
  const fs::path d(dir);
  std::error_code ec;
  if (!fs::exists(d / "adapter_model.safetensors", ec)) {
    if (fs::exists(d / "adapter_model.bin", ec)) {
      return Refuse("adapter_model.bin (a pickle file) is refused and was not opened; convert it to safetensors");
    }
    return absl::NotFoundError(absl::StrCat("LoRA adapter '", name, "': no adapter_model.safetensors"));
  }
  // Size and file type are checked before a byte is read (a symlink to
  // /dev/zero or a FIFO is refused, not read).
  absl::StatusOr<std::string> text = ReadRegularFile((d / "adapter_config.json").string(), 1u << 20);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("LoRA adapter '", name, "': no adapter_config.json"));
    }
    return Refuse(absl::StrCat("adapter_config.json: ", text.status().message()));
  }
  TESSERA_ASSIGN_OR_RETURN(LoraAdapterConfig config, ParseLoraConfig(*text, max_rank));
  TESSERA_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open((d / "adapter_model.safetensors").string()));

  std::unique_ptr<LoraAdapter> a(new LoraAdapter());
  a->name_ = name;
  a->config_ = config;
  a->layers_.resize(base.n_layers);
  size_t used = 0;
  const std::string prefix = "base_model.model.";
  for (int l = 0; l < base.n_layers; ++l) {
    for (int k = 0; k < kLoraTargets; ++k) {
      const LoraTarget t = static_cast<LoraTarget>(k);
      const std::string module = ModulePath(l, t);
      const SafetensorsTensor* ta = file->Find(prefix + module + ".lora_A.weight");
      const SafetensorsTensor* tb = file->Find(prefix + module + ".lora_B.weight");
      if (ta == nullptr && tb == nullptr) continue;
      if (ta == nullptr || tb == nullptr) return Refuse(absl::StrCat(module, " has only one of lora_A and lora_B"));
      if (!config.targets[k]) return Refuse(absl::StrCat(module, " has weights but is not in target_modules"));
      const int* rp = PatternFor(config.rank_pattern, module);
      const double* ap = PatternFor(config.alpha_pattern, module);
      const int r = rp ? *rp : config.rank;
      const double alpha = ap ? *ap : config.alpha;
      const auto [in, out] = InOut(base, t);
      if (ta->shape != std::vector<int64_t>{r, in} || tb->shape != std::vector<int64_t>{out, r}) {
        return Refuse(absl::StrCat(module, ": lora_A must be [", r, ", ", in, "] and lora_B [", out, ", ", r,
                                   "] for this base model"));
      }
      auto w = std::make_unique<LoraWeights>();
      w->rank = r;
      w->in = in;
      w->out = out;
      w->scale = static_cast<float>(config.use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r);
      w->a.resize(static_cast<size_t>(r) * in);
      w->b.resize(static_cast<size_t>(out) * r);
      TESSERA_RETURN_IF_ERROR(ta->ToFloat(w->a));
      TESSERA_RETURN_IF_ERROR(tb->ToFloat(w->b));
      for (float v : w->a) if (!std::isfinite(v)) return Refuse(absl::StrCat(module, ".lora_A has a non-finite value"));
      for (float v : w->b) if (!std::isfinite(v)) return Refuse(absl::StrCat(module, ".lora_B has a non-finite value"));
      if (base.qk_rows_interleaved && (t == LoraTarget::kQ || t == LoraTarget::kK)) {
        PermuteRopeRows(w->b, t == LoraTarget::kQ ? base.n_heads : base.n_kv_heads, base.head_dim, r);
      }
      if (dtype != LoraDtype::kF32) {
        TESSERA_RETURN_IF_ERROR(To16Bit(w->a, dtype, w->a16, absl::StrCat(module, ".lora_A")));
        TESSERA_RETURN_IF_ERROR(To16Bit(w->b, dtype, w->b16, absl::StrCat(module, ".lora_B")));
        w->a = {};
        w->b = {};
        w->dtype = dtype;
      }
      a->bytes_ += w->bytes();
      a->layers_[l][k] = std::move(w);
      used += 2;
    }
  }
  if (used != file->tensors().size()) {
    for (const auto& t : file->tensors()) {
      bool known = false;
      for (int l = 0; l < base.n_layers && !known; ++l)
        for (int k = 0; k < kLoraTargets && !known; ++k)
          known = t.name == prefix + ModulePath(l, static_cast<LoraTarget>(k)) + ".lora_A.weight" ||
                  t.name == prefix + ModulePath(l, static_cast<LoraTarget>(k)) + ".lora_B.weight";
      if (!known) return Refuse(absl::StrCat("unexpected tensor '", EscapeForMessage(t.name), "'"));
    }
  }
  if (used == 0) return Refuse("the adapter has no LoRA weights for this model");
  return a;
}

absl::StatusOr<LoraDtype> ResolveLoraDtype(std::string_view flag, bool on_gpu, bool bf16_model) {
  if (flag == "float32") return LoraDtype::kF32;
  if (flag == "float16") return LoraDtype::kF16;
  if (flag == "bfloat16") return LoraDtype::kBF16;
  if (flag == "auto") return on_gpu && bf16_model ? LoraDtype::kBF16 : LoraDtype::kF16;
  return absl::InvalidArgumentError(absl::StrCat("lora_dtype must be auto, float32, float16 or bfloat16; got '",
                                                 EscapeForMessage(flag), "'"));
}

const LoraWeights* LoraAdapter::weights(int layer, LoraTarget t) const {
  if (layer < 0 || layer >= static_cast<int>(layers_.size())) return nullptr;
  return layers_[layer][static_cast<int>(t)].get();
}

}  // namespace tessera
