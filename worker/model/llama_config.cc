#include "worker/model/llama_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"

namespace tessera {
namespace {

absl::Status InRange(std::string_view what, int64_t v, int64_t lo, int64_t hi) {
  if (v >= lo && v <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(std::string(what), " must be in [", lo, ", ", hi, "]; got ", v));
}

}  // namespace

absl::Status ValidateLlamaConfig(const LlamaConfig& c) {
  bool known = false;
  for (const char* a : kSupportedArchitectures) known |= c.architecture == a;
  if (!known) {
    return absl::UnimplementedError(absl::StrCat("unsupported model architecture '", EscapeForMessage(c.architecture),
                                                 "'; supported: ", absl::StrJoin(kSupportedArchitectures, ", ")));
  }
  for (absl::Status s : {InRange("layer count", c.n_layers, 1, 1024), InRange("hidden size", c.n_embd, 1, 1 << 16),
                         InRange("feed-forward size", c.n_ff, 1, 1 << 18), InRange("head count", c.n_heads, 1, 1024),
                         InRange("KV head count", c.n_kv_heads, 1, 1024), InRange("head dimension", c.head_dim, 2, 1024),
                         InRange("vocabulary size", c.n_vocab, 1, 1 << 24),
                         InRange("context length", c.n_ctx_train, 1, 1 << 24),
                         InRange("rope dimensions", c.rope_dims, 2, c.head_dim)}) {
    if (!s.ok()) return s;
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head count ", c.n_heads, " is not a multiple of the KV head count ", c.n_kv_heads));
  }
  if (c.head_dim % 2 != 0) return absl::InvalidArgumentError(absl::StrCat("head dimension must be even; got ", c.head_dim));
  if (c.rope_dims % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("rope dimensions must be even; got ", c.rope_dims));
  }
  if (!(c.rms_eps > 0 && c.rms_eps < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("rms epsilon must be in (0, 1); got ", c.rms_eps));
  }
  if (!(c.rope_freq_base > 1 && c.rope_freq_base < 1e12)) {
    return absl::InvalidArgumentError(absl::StrCat("rope base must be in (1, 1e12); got ", c.rope_freq_base));
  }
  if (!(c.rope_freq_scale > 0 && c.rope_freq_scale <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("rope scale must be in (0, 1]; got ", c.rope_freq_scale));
  }
  return absl::OkStatus();
}

}  // namespace tessera
