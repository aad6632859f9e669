// A GGUF file as a Checkpoint: llama.cpp's metadata keys and tensor names.
// Tensors are used in place in the file's mapping (or the caller's image).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/escape.h"
#include "common/gguf/gguf_file.h"
#include "common/status_macros.h"
#include "worker/model/checkpoint.h"

namespace tessera {
namespace {

absl::StatusOr<int> ReadCount(const GgufFile& f, const std::string& key, int64_t max) {
  TESSERA_ASSIGN_OR_RETURN(uint64_t v, f.GetUint(key));
  if (v < 1 || v > static_cast<uint64_t>(max)) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF metadata '", key, "' must be in [1, ", max, "]; got ", v));
  }
  return static_cast<int>(v);
}

absl::StatusOr<LlamaConfig> ReadGgufLlamaConfig(const GgufFile& f) {
  LlamaConfig c;
  TESSERA_ASSIGN_OR_RETURN(c.architecture, f.GetString("general.architecture"));
  bool known = false;
  for (const char* a : kSupportedArchitectures) known |= c.architecture == a;
  if (!known) return ValidateLlamaConfig(c);  // the message naming it
  if (auto name = f.GetString("general.name"); name.ok()) c.name = *name;
  const std::string& a = c.architecture;
  TESSERA_ASSIGN_OR_RETURN(c.n_layers, ReadCount(f, a + ".block_count", 1024));
  TESSERA_ASSIGN_OR_RETURN(c.n_embd, ReadCount(f, a + ".embedding_length", 1 << 16));
  TESSERA_ASSIGN_OR_RETURN(c.n_ff, ReadCount(f, a + ".feed_forward_length", 1 << 18));
  TESSERA_ASSIGN_OR_RETURN(c.n_heads, ReadCount(f, a + ".attention.head_count", 1024));
  c.n_kv_heads = c.n_heads;
  if (f.Find(a + ".attention.head_count_kv")) {
    TESSERA_ASSIGN_OR_RETURN(c.n_kv_heads, ReadCount(f, a + ".attention.head_count_kv", 1024));
  }
  if (f.Find(a + ".attention.key_length")) {
    TESSERA_ASSIGN_OR_RETURN(c.head_dim, ReadCount(f, a + ".attention.key_length", 1024));
  } else if (c.n_embd % c.n_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("embedding_length ", c.n_embd, " is not a multiple of head_count ", c.n_heads));
  } else {
    c.head_dim = c.n_embd / c.n_heads;
  }
  TESSERA_ASSIGN_OR_RETURN(c.n_ctx_train, ReadCount(f, a + ".context_length", 1 << 24));
  if (f.Find(a + ".attention.layer_norm_rms_epsilon")) {
    TESSERA_ASSIGN_OR_RETURN(double eps, f.GetFloat(a + ".attention.layer_norm_rms_epsilon"));
    c.rms_eps = static_cast<float>(eps);
  }
  c.rope_dims = c.head_dim;
  if (f.Find(a + ".rope.dimension_count")) {
    TESSERA_ASSIGN_OR_RETURN(c.rope_dims, ReadCount(f, a + ".rope.dimension_count", 1024));
  }
  if (f.Find(a + ".rope.freq_base")) {
    TESSERA_ASSIGN_OR_RETURN(double base, f.GetFloat(a + ".rope.freq_base"));
    c.rope_freq_base = static_cast<float>(base);
  }
  if (auto type = f.GetString(a + ".rope.scaling.type"); type.ok() && *type == "linear") {
    TESSERA_ASSIGN_OR_RETURN(double factor, f.GetFloat(a + ".rope.scaling.factor"));
    if (!(factor >= 1 && factor <= 1024)) {
      return absl::InvalidArgumentError(absl::StrCat("rope.scaling.factor must be in [1, 1024]; got ", factor));
    }
    c.rope_freq_scale = static_cast<float>(1.0 / factor);
  } else if (type.ok() && *type != "none" && *type != "llama3") {
    return absl::UnimplementedError(absl::StrCat("unsupported rope.scaling.type '", EscapeForMessage(*type), "'"));
  }
  // llama.cpp's converter interleaves the q/k rows of Llama-architecture
  // models (so ggml's adjacent-pair rope applies); Qwen2 keeps HF's halves.
  c.rope_neox = a == "qwen2";
  c.qk_rows_interleaved = !c.rope_neox;
  c.qkv_bias = a == "qwen2";
  const GgufTensor* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) return absl::NotFoundError("model is missing tensor 'token_embd.weight'");
  if (embd->ne[1] < 1 || embd->ne[1] > (1 << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("token_embd.weight has ", embd->ne[1], " rows"));
  }
  c.n_vocab = static_cast<int>(embd->ne[1]);
  TESSERA_RETURN_IF_ERROR(ValidateLlamaConfig(c));
  return c;
}

std::string TensorName(WeightRole role, int layer) {
  const std::string p = absl::StrCat("blk.", layer, ".");
  switch (role) {
    case WeightRole::kTokenEmbd: return "token_embd.weight";
    case WeightRole::kOutputNorm: return "output_norm.weight";
    case WeightRole::kOutput: return "output.weight";
    case WeightRole::kRopeFreqs: return "rope_freqs.weight";
    case WeightRole::kAttnNorm: return p + "attn_norm.weight";
    case WeightRole::kQ: return p + "attn_q.weight";
    case WeightRole::kK: return p + "attn_k.weight";
    case WeightRole::kV: return p + "attn_v.weight";
    case WeightRole::kO: return p + "attn_output.weight";
    case WeightRole::kQBias: return p + "attn_q.bias";
    case WeightRole::kKBias: return p + "attn_k.bias";
    case WeightRole::kVBias: return p + "attn_v.bias";
    case WeightRole::kFfnNorm: return p + "ffn_norm.weight";
    case WeightRole::kGate: return p + "ffn_gate.weight";
    case WeightRole::kUp: return p + "ffn_up.weight";
    case WeightRole::kDown: return p + "ffn_down.weight";
  }
  return "";
}

class GgufCheckpoint final : public Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Create(std::unique_ptr<GgufFile> file,
                                                            std::vector<uint8_t> image) {
    std::unique_ptr<GgufCheckpoint> c(new GgufCheckpoint());
    c->image_ = std::move(image);
    c->file_ = std::move(file);
    TESSERA_ASSIGN_OR_RETURN(c->config_, ReadGgufLlamaConfig(*c->file_));
    TESSERA_ASSIGN_OR_RETURN(c->tokenizer_, ReadGgufTokenizerSpec(*c->file_));
    if (c->file_->Find("tokenizer.chat_template")) {
      TESSERA_ASSIGN_OR_RETURN(std::string t, c->file_->GetString("tokenizer.chat_template"));
      c->chat_template_ = std::move(t);
    }
    // The weights' encoding, by bytes.
    std::map<std::string, uint64_t> bytes_by_type;
    for (const GgufTensor& t : c->file_->tensors()) bytes_by_type[std::string(TypeName(t.type))] += t.nbytes;
    uint64_t most = 0;
    for (const auto& [type, bytes] : bytes_by_type) {
      if (bytes > most) {
        most = bytes;
        c->info_.weight_type = type;
      }
    }
    c->info_.format = "gguf";
    c->info_.description = absl::StrCat("GGUF v", c->file_->version(), ", mostly ", c->info_.weight_type);
    return std::unique_ptr<Checkpoint>(std::move(c));
  }

  const CheckpointInfo& info() const override { return info_; }
  const LlamaConfig& config() const override { return config_; }
  const TokenizerSpec& tokenizer_spec() const override { return tokenizer_; }
  const std::optional<std::string>& chat_template() const override { return chat_template_; }

  absl::StatusOr<WeightView> Weight(WeightRole role, int layer) override {
    const std::string name = TensorName(role, layer);
    const GgufTensor* t = file_->FindTensor(name);
    if (t == nullptr) return absl::NotFoundError(absl::StrCat("model is missing tensor '", name, "'"));
    if (t->ne[2] != 1 || t->ne[3] != 1) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor '%s' has shape [%d, %d, %d, %d]; expected 2 dimensions",
                                                        name, t->ne[0], t->ne[1], t->ne[2], t->ne[3]));
    }
    WeightView w;
    w.data = t->data;
    w.type = t->type;
    w.rows = t->ne[1];
    w.cols = t->ne[0];
    w.row_bytes = t->nbytes / static_cast<size_t>(w.rows);
    return w;
  }

 private:
  GgufCheckpoint() = default;
  std::vector<uint8_t> image_;  // synthetic models: the bytes file_ views
  std::unique_ptr<GgufFile> file_;
  CheckpointInfo info_;
  LlamaConfig config_;
  TokenizerSpec tokenizer_;
  std::optional<std::string> chat_template_;
};

}  // namespace

bool ProbeGgufCheckpoint(const std::string& path) {
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return true;
  // A regular file's first bytes only (a FIFO must not block the probe).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  char magic[4] = {};
  const bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::read(fd, magic, 4) == 4 &&
                  std::memcmp(magic, "GGUF", 4) == 0;
  ::close(fd);
  return ok;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenGgufCheckpoint(const std::string& path) {
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  return GgufCheckpoint::Create(std::move(file), {});
}

absl::StatusOr<std::unique_ptr<Checkpoint>> GgufCheckpointFromImage(std::vector<uint8_t> image) {
  // The file views the vector's heap buffer, which moving the vector keeps.
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::FromBuffer(image));
  return GgufCheckpoint::Create(std::move(file), std::move(image));
}

}  // namespace tessera
