#include "worker/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace tessera {
namespace {

// Looks up a tensor and checks its shape (ne[0], ne[1]) and, for norms and
// biases, that it is F32. `expected_rows` of 0 means a 1-D tensor.
absl::StatusOr<WeightView> Bind(const GgufFile& f, const Backend& backend, const std::string& name,
                                int64_t expected_cols, int64_t expected_rows, bool must_be_f32) {
  const GgufTensor* t = f.FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("model is missing tensor '", name, "'"));
  const bool one_d = expected_rows == 0;
  if (t->ne[0] != expected_cols || (one_d ? t->rows() != 1 : (t->ne[1] != expected_rows || t->ne[2] != 1 || t->ne[3] != 1))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor '%s' has shape [%d, %d, %d, %d]; expected [%d, %d]", name, t->ne[0], t->ne[1],
        t->ne[2], t->ne[3], expected_cols, one_d ? 1 : expected_rows));
  }
  if (must_be_f32 && t->type != GgmlType::kF32) {
    return absl::UnimplementedError(absl::StrCat("tensor '", name, "' must be F32, got ", std::string(TypeName(t->type))));
  }
  if (!backend.SupportsWeightType(t->type)) {
    return absl::UnimplementedError(absl::StrCat("tensor '", name, "' has type ", std::string(TypeName(t->type)),
                                                 ", which the ", std::string(backend.name()), " backend does not support"));
  }
  WeightView w;
  w.data = t->data;
  w.type = t->type;
  w.rows = one_d ? 1 : t->ne[1];
  w.cols = t->ne[0];
  w.row_bytes = t->nbytes / static_cast<size_t>(w.rows);
  return w;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const GgufFile& f, Backend& backend,
                                                             const LlamaModelOptions& options) {
  TESSERA_ASSIGN_OR_RETURN(LlamaConfig c, ReadLlamaConfig(f));
  TESSERA_RETURN_IF_ERROR(backend.SupportsHeadDim(c.head_dim));
  if (options.max_logit_rows < 1 || options.max_logit_rows > options.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("max_logit_rows must be in [1, max_batch_tokens]; got ",
                                                   options.max_logit_rows));
  }
  if (options.max_batch_tokens < 1 || options.max_batch_tokens > (1 << 16)) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_tokens must be in [1, 65536]; got ",
                                                   options.max_batch_tokens));
  }
  const GgufTensor* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) return absl::NotFoundError("model is missing tensor 'token_embd.weight'");
  if (embd->ne[1] < 1 || embd->ne[1] > (1 << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("token_embd.weight has ", embd->ne[1], " rows"));
  }
  c.n_vocab = static_cast<int>(embd->ne[1]);

  std::unique_ptr<LlamaModel> m(new LlamaModel(c, backend, options));
  TESSERA_ASSIGN_OR_RETURN(m->token_embd_, Bind(f, backend, "token_embd.weight", c.n_embd, c.n_vocab, false));
  TESSERA_ASSIGN_OR_RETURN(m->output_norm_, Bind(f, backend, "output_norm.weight", c.n_embd, 0, true));
  if (f.FindTensor("output.weight")) {
    TESSERA_ASSIGN_OR_RETURN(m->output_, Bind(f, backend, "output.weight", c.n_embd, c.n_vocab, false));
  } else {
    m->output_ = m->token_embd_;  // tied embeddings
  }
  if (f.FindTensor("rope_freqs.weight")) {
    TESSERA_ASSIGN_OR_RETURN(WeightView rf, Bind(f, backend, "rope_freqs.weight", c.rope_dims / 2, 0, true));
    m->rope_freq_factors_.resize(c.rope_dims / 2);
    std::memcpy(m->rope_freq_factors_.data(), rf.data, sizeof(float) * m->rope_freq_factors_.size());
    for (float v : m->rope_freq_factors_) {
      if (!(v > 0 && std::isfinite(v))) return absl::InvalidArgumentError("rope_freqs.weight has a non-positive factor");
    }
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    Layer L;
    TESSERA_ASSIGN_OR_RETURN(L.attn_norm, Bind(f, backend, p + "attn_norm.weight", c.n_embd, 0, true));
    TESSERA_ASSIGN_OR_RETURN(L.wq, Bind(f, backend, p + "attn_q.weight", c.n_embd, c.q_dim(), false));
    TESSERA_ASSIGN_OR_RETURN(L.wk, Bind(f, backend, p + "attn_k.weight", c.n_embd, c.kv_dim(), false));
    TESSERA_ASSIGN_OR_RETURN(L.wv, Bind(f, backend, p + "attn_v.weight", c.n_embd, c.kv_dim(), false));
    TESSERA_ASSIGN_OR_RETURN(L.wo, Bind(f, backend, p + "attn_output.weight", c.q_dim(), c.n_embd, false));
    if (c.qkv_bias) {
      TESSERA_ASSIGN_OR_RETURN(L.bq, Bind(f, backend, p + "attn_q.bias", c.q_dim(), 0, true));
      TESSERA_ASSIGN_OR_RETURN(L.bk, Bind(f, backend, p + "attn_k.bias", c.kv_dim(), 0, true));
      TESSERA_ASSIGN_OR_RETURN(L.bv, Bind(f, backend, p + "attn_v.bias", c.kv_dim(), 0, true));
    }
    TESSERA_ASSIGN_OR_RETURN(L.ffn_norm, Bind(f, backend, p + "ffn_norm.weight", c.n_embd, 0, true));
    TESSERA_ASSIGN_OR_RETURN(L.w_gate, Bind(f, backend, p + "ffn_gate.weight", c.n_embd, c.n_ff, false));
    TESSERA_ASSIGN_OR_RETURN(L.w_up, Bind(f, backend, p + "ffn_up.weight", c.n_embd, c.n_ff, false));
    TESSERA_ASSIGN_OR_RETURN(L.w_down, Bind(f, backend, p + "ffn_down.weight", c.n_ff, c.n_embd, false));
    m->layers_.push_back(L);
  }
  TESSERA_RETURN_IF_ERROR(m->AllocateScratch());
  return m;
}

absl::Status LlamaModel::AllocateScratch() {
  const int64_t n = options_.max_batch_tokens;
  const LlamaConfig& c = config_;
  TESSERA_ASSIGN_OR_RETURN(x_, backend_.AllocateMat(n, c.n_embd));
  TESSERA_ASSIGN_OR_RETURN(xn_, backend_.AllocateMat(n, c.n_embd));
  TESSERA_ASSIGN_OR_RETURN(q_, backend_.AllocateMat(n, c.q_dim()));
  TESSERA_ASSIGN_OR_RETURN(k_, backend_.AllocateMat(n, c.kv_dim()));
  TESSERA_ASSIGN_OR_RETURN(v_, backend_.AllocateMat(n, c.kv_dim()));
  TESSERA_ASSIGN_OR_RETURN(attn_, backend_.AllocateMat(n, c.q_dim()));
  TESSERA_ASSIGN_OR_RETURN(gate_, backend_.AllocateMat(n, c.n_ff));
  TESSERA_ASSIGN_OR_RETURN(up_, backend_.AllocateMat(n, c.n_ff));
  TESSERA_ASSIGN_OR_RETURN(logits_, backend_.AllocateMat(options_.max_logit_rows, c.n_vocab));
  return absl::OkStatus();
}

absl::Status LlamaModel::Forward(std::span<const int32_t> tokens, const BatchLayout& layout,
                                 KvCache& cache, std::span<const int32_t> logit_rows, float* logits,
                                 std::span<const LoraView* const> row_adapters) {
  const LlamaConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 1 || n > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", n, " tokens; must be in [1, ",
                                                   options_.max_batch_tokens, "]"));
  }
  if (layout.positions.size() != tokens.size() || layout.row_sequence.size() != tokens.size()) {
    return absl::InvalidArgumentError("batch layout does not match the token count");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " out of range [0, ", c.n_vocab, ")"));
    }
    const int32_t seq = layout.row_sequence[i];
    if (seq < 0 || static_cast<size_t>(seq) >= layout.block_tables.size()) {
      return absl::InvalidArgumentError(absl::StrCat("row ", i, " names sequence ", seq));
    }
    const int64_t pos = layout.positions[i];
    if (pos < 0 || pos / cache.block_size() >= static_cast<int64_t>(layout.block_tables[seq].size())) {
      return absl::InvalidArgumentError(absl::StrCat("row ", i, " position ", pos,
                                                     " is not covered by its block table"));
    }
  }
  if (static_cast<int64_t>(logit_rows.size()) > options_.max_logit_rows) {
    return absl::InvalidArgumentError(absl::StrCat(logit_rows.size(), " logit rows requested; at most ",
                                                   options_.max_logit_rows));
  }
  for (int32_t r : logit_rows) {
    if (r < 0 || r >= n) return absl::InvalidArgumentError(absl::StrCat("logit row ", r, " out of range"));
  }

  if (!row_adapters.empty() && row_adapters.size() != tokens.size()) {
    return absl::InvalidArgumentError("row adapters do not match the token count");
  }
  adapter_rows_.clear();
  for (int64_t i = 0; i < static_cast<int64_t>(row_adapters.size()); ++i) {
    const LoraView* view = row_adapters[i];
    if (view == nullptr) continue;
    auto it = std::find_if(adapter_rows_.begin(), adapter_rows_.end(),
                           [view](const AdapterRows& a) { return a.view == view; });
    if (it == adapter_rows_.end()) it = adapter_rows_.insert(adapter_rows_.end(), AdapterRows{view, {}});
    it->rows.push_back(static_cast<int32_t>(i));
  }
  // y += the adapters' delta for projection `proj` of layer `l` on input `in`.
  auto lora = [&](int l, LoraTarget proj, const Mat& in, Mat y) {
    if (adapter_rows_.empty()) return;
    lora_groups_.clear();
    for (const AdapterRows& a : adapter_rows_) {
      if (const LoraPair* p = a.view->pair(l, static_cast<int>(proj))) lora_groups_.push_back({a.rows, *p});
    }
    if (!lora_groups_.empty()) backend_.LoraApply(in, lora_groups_, y);
  };

  Mat x = Rows(x_, n), xn = Rows(xn_, n), q = Rows(q_, n), k = Rows(k_, n), v = Rows(v_, n);
  Mat attn = Rows(attn_, n), gate = Rows(gate_, n), up = Rows(up_, n);
  RopeParams rope;
  rope.n_rot = c.rope_dims;
  rope.freq_base = c.rope_freq_base;
  rope.freq_scale = c.rope_freq_scale;
  rope.freq_factors = rope_freq_factors_.empty() ? nullptr : rope_freq_factors_.data();
  rope.neox = c.rope_neox;
  AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim, 1.f / std::sqrt(static_cast<float>(c.head_dim))};

  backend_.GetRows(token_embd_, tokens, x);
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[l];
    backend_.RmsNorm(x, L.attn_norm, c.rms_eps, xn);
    backend_.MatMul(L.wq, xn, q);
    backend_.MatMul(L.wk, xn, k);
    backend_.MatMul(L.wv, xn, v);
    lora(l, LoraTarget::kQ, xn, q);
    lora(l, LoraTarget::kK, xn, k);
    lora(l, LoraTarget::kV, xn, v);
    if (c.qkv_bias) {
      backend_.AddBias(L.bq, q);
      backend_.AddBias(L.bk, k);
      backend_.AddBias(L.bv, v);
    }
    backend_.Rope(q, c.n_heads, c.head_dim, layout.positions, rope);
    backend_.Rope(k, c.n_kv_heads, c.head_dim, layout.positions, rope);
    backend_.StoreKv(k, v, layout, cache.layer(l));
    backend_.Attention(q, cache.layer(l), layout, shape, attn);
    backend_.MatMul(L.wo, attn, x, /*accumulate=*/true);
    lora(l, LoraTarget::kO, attn, x);

    backend_.RmsNorm(x, L.ffn_norm, c.rms_eps, xn);
    backend_.MatMul(L.w_gate, xn, gate);
    backend_.MatMul(L.w_up, xn, up);
    lora(l, LoraTarget::kGate, xn, gate);
    lora(l, LoraTarget::kUp, xn, up);
    backend_.SwiGlu(gate, up, gate);
    backend_.MatMul(L.w_down, gate, x, /*accumulate=*/true);
    lora(l, LoraTarget::kDown, gate, x);
  }
  if (logit_rows.empty()) return absl::OkStatus();
  // Only the rows whose logits are wanted go through the final norm and the
  // (large) output projection.
  const int64_t nl = static_cast<int64_t>(logit_rows.size());
  Mat sel = Rows(xn_, nl);
  backend_.CopyRows(x, logit_rows, sel);
  backend_.RmsNorm(sel, output_norm_, c.rms_eps, sel);
  Mat out = Rows(logits_, nl);
  backend_.MatMul(output_, sel, out);
  for (int64_t i = 0; i < nl; ++i) backend_.CopyToHost(out, i, logits + i * c.n_vocab);
  return absl::OkStatus();
}

}  // namespace tessera
