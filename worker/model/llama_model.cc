#include "worker/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace tessera {
namespace {

// Looks up a weight and checks its shape and, for norms and biases, that it
// is F32. `expected_rows` of 0 means a vector.
absl::StatusOr<WeightView> Bind(Checkpoint& ckpt, const Backend& backend, WeightRole role, int layer,
                                int64_t expected_cols, int64_t expected_rows, bool must_be_f32) {
  auto named = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(std::string(WeightRoleName(role)),
                                                layer >= 0 ? absl::StrCat(" of layer ", layer) : "", ": ", s.message()));
  };
  absl::StatusOr<WeightView> wo = ckpt.Weight(role, layer < 0 ? 0 : layer);
  if (!wo.ok()) return wo.status().code() == absl::StatusCode::kNotFound ? wo.status() : named(wo.status());
  const WeightView& w = *wo;
  const bool vector = expected_rows == 0;
  if (w.cols != expected_cols || w.rows != (vector ? 1 : expected_rows)) {
    return named(absl::InvalidArgumentError(absl::StrFormat("shape [%d, %d] (rows, columns); expected [%d, %d]", w.rows,
                                                            w.cols, vector ? 1 : expected_rows, expected_cols)));
  }
  if (must_be_f32 && w.type != GgmlType::kF32) {
    return named(absl::UnimplementedError(absl::StrCat("must be F32, got ", std::string(TypeName(w.type)))));
  }
  if (!backend.SupportsWeightType(w.type)) {
    return named(absl::UnimplementedError(absl::StrCat("type ", std::string(TypeName(w.type)), " is not supported by the ",
                                                       std::string(backend.name()), " backend")));
  }
  return w;
}

uint64_t Bytes(const WeightView& w) { return static_cast<uint64_t>(w.rows) * w.row_bytes; }

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(Checkpoint& ckpt, Backend& backend,
                                                             const LlamaModelOptions& options) {
  const LlamaConfig& c = ckpt.config();
  TESSERA_RETURN_IF_ERROR(ValidateLlamaConfig(c));
  TESSERA_RETURN_IF_ERROR(backend.SupportsHeadDim(c.head_dim));
  if (options.max_logit_rows < 1 || options.max_logit_rows > options.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("max_logit_rows must be in [1, max_batch_tokens]; got ",
                                                   options.max_logit_rows));
  }
  if (options.max_batch_tokens < 1 || options.max_batch_tokens > (1 << 16)) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_tokens must be in [1, 65536]; got ",
                                                   options.max_batch_tokens));
  }

  std::unique_ptr<LlamaModel> m(new LlamaModel(c, backend, options));
  auto bind = [&](WeightRole role, int layer, int64_t cols, int64_t rows, bool f32) {
    return Bind(ckpt, backend, role, layer, cols, rows, f32);
  };
  TESSERA_ASSIGN_OR_RETURN(m->token_embd_, bind(WeightRole::kTokenEmbd, -1, c.n_embd, c.n_vocab, false));
  if (m->token_embd_.input_perm != nullptr) {
    return absl::UnimplementedError("token embedding: a column-permuted (act-order) embedding cannot be looked up");
  }
  TESSERA_ASSIGN_OR_RETURN(m->output_norm_, bind(WeightRole::kOutputNorm, -1, c.n_embd, 0, true));
  if (auto out = bind(WeightRole::kOutput, -1, c.n_embd, c.n_vocab, false); out.ok()) {
    m->output_ = *out;
    m->weight_bytes_per_step_ += Bytes(*out);
  } else if (out.status().code() == absl::StatusCode::kNotFound) {
    m->output_ = m->token_embd_;  // tied embeddings
    m->weight_bytes_per_step_ += Bytes(m->token_embd_);
  } else {
    return out.status();
  }
  if (auto rf = bind(WeightRole::kRopeFreqs, -1, c.rope_dims / 2, 0, true); rf.ok()) {
    m->rope_freq_factors_.resize(c.rope_dims / 2);
    std::memcpy(m->rope_freq_factors_.data(), rf->data, sizeof(float) * m->rope_freq_factors_.size());
    for (float v : m->rope_freq_factors_) {
      if (!(v > 0 && std::isfinite(v))) return absl::InvalidArgumentError("rope frequency factors: a factor is not positive");
    }
  } else if (rf.status().code() != absl::StatusCode::kNotFound) {
    return rf.status();
  }
  for (int l = 0; l < c.n_layers; ++l) {
    Layer L;
    TESSERA_ASSIGN_OR_RETURN(L.attn_norm, bind(WeightRole::kAttnNorm, l, c.n_embd, 0, true));
    TESSERA_ASSIGN_OR_RETURN(L.wq, bind(WeightRole::kQ, l, c.n_embd, c.q_dim(), false));
    TESSERA_ASSIGN_OR_RETURN(L.wk, bind(WeightRole::kK, l, c.n_embd, c.kv_dim(), false));
    TESSERA_ASSIGN_OR_RETURN(L.wv, bind(WeightRole::kV, l, c.n_embd, c.kv_dim(), false));
    TESSERA_ASSIGN_OR_RETURN(L.wo, bind(WeightRole::kO, l, c.q_dim(), c.n_embd, false));
    if (c.qkv_bias) {
      TESSERA_ASSIGN_OR_RETURN(L.bq, bind(WeightRole::kQBias, l, c.q_dim(), 0, true));
      TESSERA_ASSIGN_OR_RETURN(L.bk, bind(WeightRole::kKBias, l, c.kv_dim(), 0, true));
      TESSERA_ASSIGN_OR_RETURN(L.bv, bind(WeightRole::kVBias, l, c.kv_dim(), 0, true));
    }
    TESSERA_ASSIGN_OR_RETURN(L.ffn_norm, bind(WeightRole::kFfnNorm, l, c.n_embd, 0, true));
    TESSERA_ASSIGN_OR_RETURN(L.w_gate, bind(WeightRole::kGate, l, c.n_embd, c.n_ff, false));
    TESSERA_ASSIGN_OR_RETURN(L.w_up, bind(WeightRole::kUp, l, c.n_embd, c.n_ff, false));
    TESSERA_ASSIGN_OR_RETURN(L.w_down, bind(WeightRole::kDown, l, c.n_ff, c.n_embd, false));
    for (const WeightView* w : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_norm, &L.w_gate, &L.w_up, &L.w_down}) {
      m->weight_bytes_per_step_ += Bytes(*w);
    }
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
