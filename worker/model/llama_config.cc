#include "worker/model/llama_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"
#include "common/status_macros.h"

namespace tessera {
namespace {

constexpr const char* kSupportedArchitectures[] = {"llama", "qwen2", "mistral"};

absl::StatusOr<int> ReadCount(const GgufFile& f, const std::string& key, int64_t max) {
  TESSERA_ASSIGN_OR_RETURN(uint64_t v, f.GetUint(key));
  if (v < 1 || v > static_cast<uint64_t>(max)) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF metadata '", key, "' must be in [1, ", max,
                                                   "]; got ", v));
  }
  return static_cast<int>(v);
}

}  // namespace

absl::StatusOr<LlamaConfig> ReadLlamaConfig(const GgufFile& f) {
  LlamaConfig c;
  TESSERA_ASSIGN_OR_RETURN(c.architecture, f.GetString("general.architecture"));
  bool known = false;
  for (const char* a : kSupportedArchitectures) known |= c.architecture == a;
  if (!known) {
    return absl::UnimplementedError(absl::StrCat("unsupported model architecture '", EscapeForMessage(c.architecture),
                                                 "'; supported: ",
                                                 absl::StrJoin(kSupportedArchitectures, ", ")));
  }
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
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention.head_count ", c.n_heads,
                                                   " is not a multiple of head_count_kv ", c.n_kv_heads));
  }
  c.head_dim = c.n_embd / c.n_heads;
  if (f.Find(a + ".attention.key_length")) {
    TESSERA_ASSIGN_OR_RETURN(c.head_dim, ReadCount(f, a + ".attention.key_length", 1024));
  } else if (c.n_embd % c.n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("embedding_length ", c.n_embd,
                                                   " is not a multiple of head_count ", c.n_heads));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("head dimension must be even; got ", c.head_dim));
  }
  TESSERA_ASSIGN_OR_RETURN(c.n_ctx_train, ReadCount(f, a + ".context_length", 1 << 24));
  if (f.Find(a + ".attention.layer_norm_rms_epsilon")) {
    TESSERA_ASSIGN_OR_RETURN(double eps, f.GetFloat(a + ".attention.layer_norm_rms_epsilon"));
    if (!(eps > 0 && eps < 1)) {
      return absl::InvalidArgumentError(absl::StrCat("rms epsilon must be in (0, 1); got ", eps));
    }
    c.rms_eps = static_cast<float>(eps);
  }
  c.rope_dims = c.head_dim;
  if (f.Find(a + ".rope.dimension_count")) {
    TESSERA_ASSIGN_OR_RETURN(c.rope_dims, ReadCount(f, a + ".rope.dimension_count", c.head_dim));
    if (c.rope_dims % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("rope.dimension_count must be even; got ", c.rope_dims));
    }
  }
  if (f.Find(a + ".rope.freq_base")) {
    TESSERA_ASSIGN_OR_RETURN(double base, f.GetFloat(a + ".rope.freq_base"));
    if (!(base > 1 && base < 1e12)) {
      return absl::InvalidArgumentError(absl::StrCat("rope.freq_base must be in (1, 1e12); got ", base));
    }
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
  c.rope_neox = a == "qwen2";
  c.qkv_bias = a == "qwen2";
  return c;
}

}  // namespace tessera
