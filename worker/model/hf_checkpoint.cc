// A Hugging Face checkpoint directory as a Checkpoint: config.json,
// model.safetensors (or shards listed by model.safetensors.index.json, or
// exllamav2's output*.safetensors),
// generation_config.json and the tokenizer files. Dense F16/BF16/F32 weights
// are used in place in the mappings; group-quantized linear layers (AWQ,
// GPTQ, compressed-tensors, EXL2; quant_format.h) are repacked into memory the
// checkpoint owns, after which their file pages are dropped from the
// resident set. Every file must resolve inside the directory (ModelDirectory).
#include <deque>
#include <filesystem>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/escape.h"
#include "common/json/json_file.h"
#include "common/model_dir.h"
#include "common/safetensors/safetensors_file.h"
#include "common/status_macros.h"
#include "worker/model/checkpoint.h"
#include "worker/model/hf_config.h"
#include "worker/model/quant_format.h"
#include "worker/tokenizer/hf_tokenizer.h"

namespace tessera {
namespace {

using Json = nlohmann::json;

std::string ModuleName(WeightRole role, int layer) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  switch (role) {
    case WeightRole::kTokenEmbd: return "model.embed_tokens";
    case WeightRole::kOutputNorm: return "model.norm";
    case WeightRole::kOutput: return "lm_head";
    case WeightRole::kAttnNorm: return p + "input_layernorm";
    case WeightRole::kQ: case WeightRole::kQBias: return p + "self_attn.q_proj";
    case WeightRole::kK: case WeightRole::kKBias: return p + "self_attn.k_proj";
    case WeightRole::kV: case WeightRole::kVBias: return p + "self_attn.v_proj";
    case WeightRole::kO: return p + "self_attn.o_proj";
    case WeightRole::kFfnNorm: return p + "post_attention_layernorm";
    case WeightRole::kGate: return p + "mlp.gate_proj";
    case WeightRole::kUp: return p + "mlp.up_proj";
    case WeightRole::kDown: return p + "mlp.down_proj";
    case WeightRole::kRopeFreqs: return "";
  }
  return "";
}

bool IsVector(WeightRole r) {
  return r == WeightRole::kOutputNorm || r == WeightRole::kAttnNorm || r == WeightRole::kFfnNorm ||
         r == WeightRole::kQBias || r == WeightRole::kKBias || r == WeightRole::kVBias;
}
bool IsBias(WeightRole r) { return r == WeightRole::kQBias || r == WeightRole::kKBias || r == WeightRole::kVBias; }

class HfCheckpoint final : public Checkpoint, public TensorSource {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  const CheckpointInfo& info() const override { return info_; }
  const LlamaConfig& config() const override { return cfg_.llama; }
  const TokenizerSpec& tokenizer_spec() const override { return tokenizer_; }
  const std::optional<std::string>& chat_template() const override { return chat_template_; }
  absl::StatusOr<WeightView> Weight(WeightRole role, int layer) override;

  const SafetensorsTensor* Find(const std::string& name) const override {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : it->second.tensor;
  }

 private:
  struct Located {
    const SafetensorsTensor* tensor;
    const SafetensorsFile* shard;
  };

  absl::Status OpenWeights();
  absl::Status AddShard(const std::string& relative, const std::vector<std::string>* expected);
  absl::StatusOr<WeightView> Dense(const std::string& name, bool to_f32);
  absl::StatusOr<WeightView> Quantized(const std::string& module, int64_t out, int64_t in);
  void DropPagesOf(const std::string& module);
  std::vector<uint8_t>& Own(size_t bytes) {
    owned_.emplace_back(bytes);
    return owned_.back();
  }

  ModelDirectory dir_;
  HfModelConfig cfg_;
  CheckpointInfo info_;
  TokenizerSpec tokenizer_;
  std::optional<std::string> chat_template_;
  std::unique_ptr<QuantFormat> quant_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  absl::flat_hash_map<std::string, Located> tensors_;
  std::deque<std::vector<uint8_t>> owned_;    // stable addresses
  std::deque<std::vector<int32_t>> perms_;
};

absl::Status HfCheckpoint::AddShard(const std::string& relative, const std::vector<std::string>* expected) {
  TESSERA_ASSIGN_OR_RETURN(std::string real, dir_.Resolve(relative));
  auto file = SafetensorsFile::Open(real);
  if (!file.ok()) return absl::Status(file.status().code(), absl::StrCat(EscapeForMessage(relative), ": ", file.status().message()));
  for (const SafetensorsTensor& t : (*file)->tensors()) {
    if (!tensors_.emplace(t.name, Located{&t, file->get()}).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", EscapeForMessage(t.name), "' appears in two shards"));
    }
  }
  if (expected != nullptr) {
    for (const std::string& name : *expected) {
      if ((*file)->Find(name) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("model.safetensors.index.json maps '", EscapeForMessage(name),
                                                       "' to '", EscapeForMessage(relative), "', which lacks it"));
      }
    }
  }
  shards_.push_back(std::move(*file));
  return absl::OkStatus();
}

absl::Status HfCheckpoint::OpenWeights() {
  absl::StatusOr<std::string> index = dir_.Resolve("model.safetensors.index.json");
  if (index.ok()) {
    TESSERA_ASSIGN_OR_RETURN(Json j, ReadJsonFile(*index, {.max_bytes = 64u << 20, .max_depth = 16}));
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError("model.safetensors.index.json has no weight_map object");
    }
    std::map<std::string, std::vector<std::string>> by_shard;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(absl::StrCat("model.safetensors.index.json maps '", EscapeForMessage(it.key()),
                                                       "' to a non-string"));
      }
      by_shard[it.value().get<std::string>()].push_back(it.key());
    }
    if (by_shard.empty()) return absl::InvalidArgumentError("model.safetensors.index.json maps no tensors");
    for (const auto& [shard, names] : by_shard) {
      absl::Status s = AddShard(shard, &names);
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat("shard '", EscapeForMessage(shard), "': ", s.message()));
    }
    return absl::OkStatus();
  }
  if (index.status().code() != absl::StatusCode::kNotFound) return index.status();
  absl::Status single = AddShard("model.safetensors", nullptr);
  if (single.code() == absl::StatusCode::kNotFound) {
    // exllamav2's converter (EXL2) writes output.safetensors, or
    // output-00001-of-0000N.safetensors ... without an index.
    if (dir_.Exists("output.safetensors")) return AddShard("output.safetensors", nullptr);
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir_.path(), ec)) {
      const std::string name = entry.path().filename().string();
      int n = 0;
      if (name.size() != 33 || !name.starts_with("output-00001-of-") || !name.ends_with(".safetensors") ||
          !absl::SimpleAtoi(name.substr(16, 5), &n) || n < 1) {
        continue;
      }
      for (int i = 1; i <= n; ++i) {
        TESSERA_RETURN_IF_ERROR(AddShard(absl::StrFormat("output-%05d-of-%05d.safetensors", i, n), nullptr));
      }
      return absl::OkStatus();
    }
  }
  if (single.code() == absl::StatusCode::kNotFound && dir_.Exists("pytorch_model.bin")) {
    return absl::InvalidArgumentError(
        "the directory holds pytorch_model.bin, a pickle file, which is never opened; convert it to safetensors");
  }
  return single;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> HfCheckpoint::Open(const std::string& path) {
  std::unique_ptr<HfCheckpoint> c(new HfCheckpoint());
  TESSERA_ASSIGN_OR_RETURN(c->dir_, ModelDirectory::Open(path));
  TESSERA_ASSIGN_OR_RETURN(std::string config_path, c->dir_.Resolve("config.json"));
  TESSERA_ASSIGN_OR_RETURN(Json config, ReadJsonFile(config_path, {.max_bytes = 4u << 20, .max_depth = 64}));
  TESSERA_ASSIGN_OR_RETURN(c->cfg_, CatchJsonErrors("config.json", [&] { return ParseHfConfig(config); }));
  if (!c->cfg_.quantization_config.is_null()) {
    TESSERA_ASSIGN_OR_RETURN(c->quant_, CatchJsonErrors("quantization_config",
                                                        [&] { return CreateQuantFormat(c->cfg_.quantization_config); }));
  }
  // generation_config.json: the end-of-generation ids.
  std::vector<int32_t> eos_ids = c->cfg_.eos_token_ids;
  if (absl::StatusOr<std::string> gc = c->dir_.Resolve("generation_config.json"); gc.ok()) {
    TESSERA_ASSIGN_OR_RETURN(Json g, ReadJsonFile(*gc, {.max_bytes = 1u << 20, .max_depth = 16}));
    if (g.is_object() && g.contains("eos_token_id")) {
      const Json& e = g["eos_token_id"];
      for (const Json& v : e.is_array() ? e : Json::array({e})) {
        if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < c->cfg_.llama.n_vocab) {
          eos_ids.push_back(v.get<int32_t>());
        }
      }
    }
  } else if (gc.status().code() != absl::StatusCode::kNotFound) {
    return gc.status();
  }

  TESSERA_RETURN_IF_ERROR(c->OpenWeights());

  TESSERA_ASSIGN_OR_RETURN(HfTokenizer tok, CatchJsonErrors("tokenizer files", [&] { return ReadHfTokenizer(c->dir_); }));
  TokenizerSpec& s = tok.spec;
  const size_t n_vocab = static_cast<size_t>(c->cfg_.llama.n_vocab);
  if (s.tokens.size() > n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer has ", s.tokens.size(),
                                                   " tokens but config.json vocab_size is ", n_vocab));
  }
  // Embedding rows beyond the tokenizer (padded vocabularies) are ids no
  // text encodes to.
  s.tokens.resize(n_vocab);
  s.types.resize(n_vocab, TokenType::kUnused);
  if (!s.scores.empty()) s.scores.resize(n_vocab, 0.f);
  if (s.bos < 0) s.bos = c->cfg_.bos_token_id < static_cast<int32_t>(n_vocab) ? c->cfg_.bos_token_id : -1;
  for (int32_t id : eos_ids) {
    if (id < 0 || id >= static_cast<int32_t>(n_vocab)) continue;
    if (s.eos < 0) s.eos = id;
    s.extra_eog.push_back(id);
  }
  c->tokenizer_ = std::move(s);
  c->chat_template_ = std::move(tok.chat_template);

  CheckpointInfo& info = c->info_;
  info.format = "hf";
  const std::string dtype = config.is_object() && config.contains("torch_dtype") && config["torch_dtype"].is_string()
                                ? config["torch_dtype"].get<std::string>()
                                : "";
  if (c->quant_) {
    info.quantization = std::string(c->quant_->method());
    info.bits = c->quant_->bits();
    info.group_size = c->quant_->group_size();
    info.weight_type = c->quant_->WeightType();
    info.description = absl::StrCat("Hugging Face directory, ", c->quant_->Describe(), ", ", c->shards_.size(), " shard(s)");
  } else {
    info.weight_type = dtype.empty() ? "dense" : dtype;
    info.description = absl::StrCat("Hugging Face directory, ", info.weight_type, ", ", c->shards_.size(), " shard(s)");
  }
  if (c->cfg_.llama.name.empty()) c->cfg_.llama.name = std::filesystem::path(path).filename().string();
  return std::unique_ptr<Checkpoint>(std::move(c));
}

absl::StatusOr<WeightView> HfCheckpoint::Dense(const std::string& name, bool to_f32) {
  const SafetensorsTensor* t = Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("checkpoint is missing tensor '", name, "'"));
  WeightView w;
  if (t->shape.size() == 1) {
    w.rows = 1;
    w.cols = t->shape[0];
  } else if (t->shape.size() == 2) {
    w.rows = t->shape[0];
    w.cols = t->shape[1];
  } else {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has ", t->shape.size(), " dimensions"));
  }
  if (w.rows < 1 || w.cols < 1) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is empty"));
  if (t->dtype != SafetensorsDtype::kF32 && t->dtype != SafetensorsDtype::kF16 && t->dtype != SafetensorsDtype::kBF16) {
    return absl::UnimplementedError(absl::StrCat("tensor '", name, "' has dtype ", std::string(DtypeName(t->dtype)),
                                                 "; dense weights must be F32, F16 or BF16"));
  }
  if (to_f32) {
    std::vector<uint8_t>& buf = Own(static_cast<size_t>(w.rows * w.cols) * sizeof(float));
    TESSERA_RETURN_IF_ERROR(t->ToFloat({reinterpret_cast<float*>(buf.data()), static_cast<size_t>(w.rows * w.cols)}));
    w.data = buf.data();
    w.type = GgmlType::kF32;
    w.row_bytes = static_cast<size_t>(w.cols) * sizeof(float);
    return w;
  }
  const size_t elem = DtypeSize(t->dtype);
  w.type = t->dtype == SafetensorsDtype::kF32 ? GgmlType::kF32 : t->dtype == SafetensorsDtype::kF16 ? GgmlType::kF16 : GgmlType::kBF16;
  w.row_bytes = static_cast<size_t>(w.cols) * elem;
  w.data = t->bytes.data();
  if (reinterpret_cast<uintptr_t>(w.data) % elem != 0) {
    // Safetensors data need not be aligned; kernels read typed values.
    std::vector<uint8_t>& buf = Own(t->bytes.size());
    std::memcpy(buf.data(), t->bytes.data(), t->bytes.size());
    w.data = buf.data();
  }
  return w;
}

void HfCheckpoint::DropPagesOf(const std::string& module) {
  for (const char* suffix : {".qweight", ".qzeros", ".scales", ".g_idx", ".weight_packed", ".weight_scale",
                             ".weight_zero_point", ".q_weight", ".q_scale", ".q_scale_max", ".q_groups", ".q_invperm",
                             ".q_perm"}) {
    auto it = tensors_.find(module + suffix);
    if (it != tensors_.end()) it->second.shard->DropPages(it->second.tensor->bytes);
  }
}

absl::StatusOr<WeightView> HfCheckpoint::Quantized(const std::string& module, int64_t out, int64_t in) {
  TESSERA_ASSIGN_OR_RETURN(GroupQuantized q, quant_->Unpack(*this, module, out, in));
  absl::StatusOr<RepackedWeight> r = RepackGroupQuantized(q);
  if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat(module, ": ", r.status().message()));
  DropPagesOf(module);
  WeightView w;
  w.rows = out;
  w.cols = in;
  w.type = r->type;
  w.row_bytes = r->row_bytes;
  w.wide_cols = r->wide_cols;
  owned_.push_back(std::move(r->data));
  w.data = owned_.back().data();
  if (!r->perm.empty()) {
    perms_.push_back(std::move(r->perm));
    w.input_perm = perms_.back().data();
  }
  return w;
}

absl::StatusOr<WeightView> HfCheckpoint::Weight(WeightRole role, int layer) {
  const LlamaConfig& c = cfg_.llama;
  if (role == WeightRole::kRopeFreqs) {
    if (cfg_.rope_freq_factors.empty()) return absl::NotFoundError("no rope frequency factors");
    std::vector<uint8_t>& buf = Own(cfg_.rope_freq_factors.size() * sizeof(float));
    std::memcpy(buf.data(), cfg_.rope_freq_factors.data(), buf.size());
    return WeightView{buf.data(), GgmlType::kF32, 1, static_cast<int64_t>(cfg_.rope_freq_factors.size()), buf.size()};
  }
  if (role == WeightRole::kOutput && cfg_.tie_word_embeddings) return absl::NotFoundError("tied embeddings");
  const std::string module = ModuleName(role, layer);
  if (IsVector(role)) return Dense(module + (IsBias(role) ? ".bias" : ".weight"), /*to_f32=*/true);
  if (quant_ != nullptr && quant_->IsQuantized(*this, module)) {
    int64_t out = 0, in = 0;
    switch (role) {
      case WeightRole::kQ: out = c.q_dim(); in = c.n_embd; break;
      case WeightRole::kK: case WeightRole::kV: out = c.kv_dim(); in = c.n_embd; break;
      case WeightRole::kO: out = c.n_embd; in = c.q_dim(); break;
      case WeightRole::kGate: case WeightRole::kUp: out = c.n_ff; in = c.n_embd; break;
      case WeightRole::kDown: out = c.n_embd; in = c.n_ff; break;
      case WeightRole::kOutput: out = c.n_vocab; in = c.n_embd; break;
      default:
        return absl::UnimplementedError(absl::StrCat(module, " is quantized, which Tessera supports only for linear layers"));
    }
    return Quantized(module, out, in);
  }
  return Dense(module + ".weight", /*to_f32=*/false);
}

}  // namespace

bool ProbeHfCheckpoint(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) && std::filesystem::exists(std::filesystem::path(path) / "config.json", ec);
}

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenHfCheckpoint(const std::string& path) { return HfCheckpoint::Open(path); }

}  // namespace tessera
