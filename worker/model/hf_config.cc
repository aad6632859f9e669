#include "worker/model/hf_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/status_macros.h"

namespace tessera {
namespace {

using Json = nlohmann::json;

absl::StatusOr<int> Count(const Json& j, const char* key, int64_t max, std::optional<int> dflt = std::nullopt) {
  if (!j.contains(key) || j[key].is_null()) {
    if (dflt) return *dflt;
    return absl::InvalidArgumentError(absl::StrCat("config.json lacks '", key, "'"));
  }
  const Json& v = j[key];
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json '", key, "' must be an integer in [1, ", max, "]; got ", EscapeForMessage(v.dump())));
  }
  return v.get<int>();
}

absl::StatusOr<double> Number(const Json& j, const char* key, double dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json '", key, "' must be a number; got ",
                                                   EscapeForMessage(j[key].dump())));
  }
  const double v = j[key].get<double>();
  if (!std::isfinite(v)) return absl::InvalidArgumentError(absl::StrCat("config.json '", key, "' is not finite"));
  return v;
}

std::vector<int32_t> Ids(const Json& v) {
  std::vector<int32_t> out;
  if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < (1 << 24)) out.push_back(v.get<int32_t>());
  if (v.is_array()) {
    for (const Json& e : v) {
      if (e.is_number_integer() && e.get<int64_t>() >= 0 && e.get<int64_t>() < (1 << 24)) out.push_back(e.get<int32_t>());
    }
  }
  return out;
}

// Llama 3.1's frequency-dependent rope scaling, as llama.cpp's converter
// turns it into per-frequency divisors (rope_freqs.weight).
std::vector<float> Llama3Factors(int n_rot, double base, double factor, double low, double high, double old_ctx) {
  std::vector<float> out;
  const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  for (int i = 0; i < n_rot; i += 2) {
    const double freq = 1.0 / std::pow(base, static_cast<double>(i) / n_rot);
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.f);
    } else if (wavelen > low_wavelen) {
      out.push_back(static_cast<float>(factor));
    } else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / factor + smooth)));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<HfModelConfig> ParseHfConfig(const Json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  HfModelConfig out;
  LlamaConfig& c = out.llama;
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    arch = j["architectures"][0].get<std::string>();
  }
  if (arch == "LlamaForCausalLM") {
    c.architecture = "llama";
  } else if (arch == "MistralForCausalLM") {
    c.architecture = "mistral";
  } else if (arch == "Qwen2ForCausalLM") {
    c.architecture = "qwen2";
  } else {
    return absl::UnimplementedError(absl::StrCat("config.json architecture '", EscapeForMessage(arch),
                                                 "' is not supported; supported: LlamaForCausalLM, "
                                                 "MistralForCausalLM, Qwen2ForCausalLM"));
  }
  if (j.contains("_name_or_path") && j["_name_or_path"].is_string()) c.name = j["_name_or_path"].get<std::string>();
  TESSERA_ASSIGN_OR_RETURN(c.n_layers, Count(j, "num_hidden_layers", 1024));
  TESSERA_ASSIGN_OR_RETURN(c.n_embd, Count(j, "hidden_size", 1 << 16));
  TESSERA_ASSIGN_OR_RETURN(c.n_ff, Count(j, "intermediate_size", 1 << 18));
  TESSERA_ASSIGN_OR_RETURN(c.n_heads, Count(j, "num_attention_heads", 1024));
  TESSERA_ASSIGN_OR_RETURN(c.n_kv_heads, Count(j, "num_key_value_heads", 1024, c.n_heads));
  TESSERA_ASSIGN_OR_RETURN(c.n_vocab, Count(j, "vocab_size", 1 << 24));
  if (c.n_embd % c.n_heads != 0 && !(j.contains("head_dim") && !j["head_dim"].is_null())) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden_size ", c.n_embd, " is not a multiple of num_attention_heads ", c.n_heads));
  }
  TESSERA_ASSIGN_OR_RETURN(c.head_dim, Count(j, "head_dim", 1024, c.n_embd / c.n_heads));
  TESSERA_ASSIGN_OR_RETURN(c.n_ctx_train, Count(j, "max_position_embeddings", 1 << 24, 2048));
  // A sliding window narrower than the context: Tessera attends to the whole
  // context, which equals the model only within the window.
  if (j.value("use_sliding_window", c.architecture == "mistral") && j.contains("sliding_window") &&
      j["sliding_window"].is_number_integer() && j["sliding_window"].get<int64_t>() > 0 &&
      j["sliding_window"].get<int64_t>() < c.n_ctx_train) {
    c.n_ctx_train = j["sliding_window"].get<int>();
  }
  TESSERA_ASSIGN_OR_RETURN(double eps, Number(j, "rms_norm_eps", 1e-6));
  c.rms_eps = static_cast<float>(eps);
  TESSERA_ASSIGN_OR_RETURN(double theta, Number(j, "rope_theta", 10000.0));
  c.rope_freq_base = static_cast<float>(theta);
  c.rope_dims = c.head_dim;
  if (const std::string act = j.value("hidden_act", "silu"); act != "silu") {
    return absl::UnimplementedError(absl::StrCat("config.json hidden_act '", EscapeForMessage(act),
                                                 "' is not supported (only silu)"));
  }
  if (j.value("mlp_bias", false)) return absl::UnimplementedError("config.json mlp_bias=true is not supported");
  // Qwen2 always has q/k/v biases; Llama/Mistral when attention_bias says so
  // (then o_proj has one too, which Tessera does not implement).
  if (c.architecture == "qwen2") {
    c.qkv_bias = true;
  } else if (j.value("attention_bias", false)) {
    return absl::UnimplementedError("config.json attention_bias=true is not supported for this architecture");
  }
  out.tie_word_embeddings = j.value("tie_word_embeddings", false);
  // Hugging Face checkpoints keep q/k rows in half-split order.
  c.rope_neox = true;
  c.qk_rows_interleaved = false;

  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const Json& rs = j["rope_scaling"];
    if (!rs.is_object()) return absl::InvalidArgumentError("config.json rope_scaling is not an object");
    const std::string type = rs.value("rope_type", rs.value("type", ""));
    TESSERA_ASSIGN_OR_RETURN(double factor, Number(rs, "factor", 1.0));
    if (!(factor >= 1 && factor <= 1024)) {
      return absl::InvalidArgumentError(absl::StrCat("rope_scaling factor must be in [1, 1024]; got ", factor));
    }
    if (type == "linear") {
      c.rope_freq_scale = static_cast<float>(1.0 / factor);
    } else if (type == "llama3") {
      TESSERA_ASSIGN_OR_RETURN(double low, Number(rs, "low_freq_factor", 1.0));
      TESSERA_ASSIGN_OR_RETURN(double high, Number(rs, "high_freq_factor", 4.0));
      TESSERA_ASSIGN_OR_RETURN(double old_ctx, Number(rs, "original_max_position_embeddings", 8192));
      if (!(low > 0 && high > low && old_ctx >= 1)) {
        return absl::InvalidArgumentError("rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor");
      }
      out.rope_freq_factors = Llama3Factors(c.rope_dims, c.rope_freq_base, factor, low, high, old_ctx);
    } else if (type != "default") {
      return absl::UnimplementedError(absl::StrCat("config.json rope_scaling type '", EscapeForMessage(type),
                                                   "' is not supported (linear, llama3)"));
    }
  }
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    out.quantization_config = j["quantization_config"];
  }
  if (j.contains("eos_token_id")) out.eos_token_ids = Ids(j["eos_token_id"]);
  if (j.contains("bos_token_id")) {
    const std::vector<int32_t> b = Ids(j["bos_token_id"]);
    if (!b.empty()) out.bos_token_id = b[0];
  }
  TESSERA_RETURN_IF_ERROR(ValidateLlamaConfig(c));
  return out;
}

}  // namespace tessera
