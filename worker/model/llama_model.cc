#include "worker/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "worker/model/quant_format.h"

namespace tessera {
namespace {

// Looks up a weight and checks its shape and, for norms and biases, that it
// is F32. `expected_rows` of 0 means a vector. A mixed-width weight the
// backend cannot multiply is widened to 8 bits into `owned`.
absl::StatusOr<WeightView> Bind(Checkpoint& ckpt, const Backend& backend, WeightRole role, int layer,
                                int64_t expected_cols, int64_t expected_rows, bool must_be_f32,
                                std::deque<std::vector<uint8_t>>& owned) {
  auto named = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(std::string(WeightRoleName(role)),
                                                layer >= 0 ? absl::StrCat(" of layer ", layer) : "", ": ", s.message()));
  };
  absl::StatusOr<WeightView> wo = ckpt.Weight(role, layer < 0 ? 0 : layer);
  if (!wo.ok()) return wo.status().code() == absl::StatusCode::kNotFound ? wo.status() : named(wo.status());
  WeightView& w = *wo;
  const bool vector = expected_rows == 0;
  if (w.cols != expected_cols || w.rows != (vector ? 1 : expected_rows)) {
    return named(absl::InvalidArgumentError(absl::StrFormat("shape [%d, %d] (rows, columns); expected [%d, %d]", w.rows,
                                                            w.cols, vector ? 1 : expected_rows, expected_cols)));
  }
  if (must_be_f32 && w.type != GgmlType::kF32) {
    return named(absl::UnimplementedError(absl::StrCat("must be F32, got ", std::string(TypeName(w.type)))));
  }
  if (IsMixedWidth(w.type) && !backend.SupportsWeightType(w.type)) {
    owned.push_back(WidenMixedWidth(w));
    w.data = owned.back().data();
  }
  if (!backend.SupportsWeightType(w.type)) {
    return named(absl::UnimplementedError(absl::StrCat("type ", std::string(TypeName(w.type)), " is not supported by the ",
                                                       std::string(backend.name()), " backend")));
  }
  return w;
}

uint64_t Bytes(const WeightView& w) { return static_cast<uint64_t>(w.rows) * w.row_bytes; }

int64_t BlockElems(const WeightView& w) {
  const std::optional<GgmlTypeTraits> t = TraitsOf(w.type);
  return t.has_value() ? t->block_elems : 1;
}
// Bytes a view reads: its rows, each over its columns only.
uint64_t ViewBytes(const WeightView& w) {
  const std::optional<GgmlTypeTraits> t = TraitsOf(w.type);
  if (!t.has_value() || t->block_elems < 1 || IsMixedWidth(w.type)) return Bytes(w);
  return static_cast<uint64_t>(w.rows) * static_cast<uint64_t>(w.cols / t->block_elems) * t->block_bytes;
}
// Output features [begin, end) of a weight (rows are output features).
WeightView RowSlice(WeightView w, int64_t begin, int64_t end) {
  w.data += static_cast<size_t>(begin) * w.row_bytes;
  w.rows = end - begin;
  return w;
}
// Elements [begin, end) of a 1-D F32 weight (a bias).
WeightView VectorSlice(WeightView w, int64_t begin, int64_t end) {
  w.data += static_cast<size_t>(begin) * sizeof(float);
  w.cols = end - begin;
  return w;
}
// Input features [begin, end) of a weight: a view of whole blocks.
absl::StatusOr<WeightView> ColumnSlice(WeightView w, int64_t begin, int64_t end, const char* what, int layer) {
  if (w.input_perm != nullptr) {
    return absl::UnimplementedError(absl::StrCat(what, " of layer ", layer,
                                                 ": an act-order (column-permuted) weight cannot be split by input "
                                                 "features for tensor parallelism"));
  }
  if (IsMixedWidth(w.type)) {
    return absl::UnimplementedError(absl::StrCat(what, " of layer ", layer,
                                                 ": a mixed-width (EXL2) weight cannot be split by input features for "
                                                 "tensor parallelism"));
  }
  if (begin % BlockElems(w) != 0 || (end - begin) % BlockElems(w) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " of layer ", layer, ": columns [", begin, ", ", end,
                                                   ") cut its ", BlockElems(w), "-element blocks"));
  }
  w.col_offset = begin;
  w.cols = end - begin;
  return w;
}

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

  std::unique_ptr<LlamaModel> m(new LlamaModel(c, options));
  auto bind = [&](WeightRole role, int layer, int64_t cols, int64_t rows, bool f32) {
    return Bind(ckpt, backend, role, layer, cols, rows, f32, m->widened_);
  };
  TESSERA_ASSIGN_OR_RETURN(m->token_embd_, bind(WeightRole::kTokenEmbd, -1, c.n_embd, c.n_vocab, false));
  if (m->token_embd_.input_perm != nullptr || IsMixedWidth(m->token_embd_.type)) {
    return absl::UnimplementedError("token embedding: a column-permuted (act-order) or mixed-width embedding cannot be looked up");
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

  const TensorParallelGroup* group = options.tensor_parallel;
  const int size = group == nullptr ? 1 : static_cast<int>(group->backends.size());
  if (group != nullptr && (size < 2 || group->communicators.size() != group->backends.size() ||
                           group->backends[0] != &backend)) {
    return absl::InvalidArgumentError("tensor parallel group: at least 2 ranks, one communicator per backend, "
                                      "rank 0 on the model's backend");
  }
  int64_t o_block = 1, down_block = 1;
  for (const Layer& L : m->layers_) {
    o_block = std::max(o_block, BlockElems(L.wo));
    down_block = std::max(down_block, BlockElems(L.w_down));
  }
  TESSERA_ASSIGN_OR_RETURN(TensorParallelPlan plan, PlanTensorParallel(c, size, o_block, down_block));
  m->ranks_.resize(size);
  for (int r = 0; r < size; ++r) {
    Rank& rank = m->ranks_[r];
    rank.backend = group == nullptr ? &backend : group->backends[r];
    rank.comm = group == nullptr ? nullptr : group->communicators[r];
    rank.shard = plan.ranks[r];
    if (r > 0) {
      TESSERA_RETURN_IF_ERROR(rank.backend->SupportsHeadDim(c.head_dim));
      for (const Layer& L : m->layers_) {
        for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
          if (!rank.backend->SupportsWeightType(w->type)) {
            return absl::UnimplementedError(absl::StrCat("type ", std::string(TypeName(w->type)),
                                                         " is not supported by rank ", r, "'s ",
                                                         std::string(rank.backend->name()), " backend"));
          }
        }
      }
    }
  }
  TESSERA_RETURN_IF_ERROR(m->ShardWeights(plan));
  TESSERA_RETURN_IF_ERROR(m->AllocateScratch());
  for (int r = 1; r < size; ++r) m->followers_.emplace_back([p = m.get(), r] { p->FollowerLoop(r); });
  return m;
}

LlamaModel::~LlamaModel() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : followers_) t.join();
}

absl::Status LlamaModel::ShardWeights(const TensorParallelPlan& plan) {
  const LlamaConfig& c = config_;
  const bool split = ranks_.size() > 1;
  for (size_t r = 0; r < ranks_.size(); ++r) {
    Rank& rank = ranks_[r];
    const RankShard& s = plan.ranks[r];
    const int64_t q0 = int64_t{s.q_head_begin} * c.head_dim, q1 = int64_t{s.q_head_end} * c.head_dim;
    const int64_t k0 = int64_t{s.kv_head_begin} * c.head_dim, k1 = int64_t{s.kv_head_end} * c.head_dim;
    rank.weight_bytes = ViewBytes(token_embd_) + ViewBytes(output_norm_);
    if (output_.data != token_embd_.data) rank.weight_bytes += ViewBytes(output_);
    for (const Layer& W : layers_) rank.weight_bytes += ViewBytes(W.attn_norm) + ViewBytes(W.ffn_norm);
    replicated_weight_bytes_ = rank.weight_bytes;
    for (int l = 0; l < c.n_layers; ++l) {
      const Layer& W = layers_[l];
      Layer L = W;
      if (split) {
        L.wq = RowSlice(W.wq, q0, q1);
        L.wk = RowSlice(W.wk, k0, k1);
        L.wv = RowSlice(W.wv, k0, k1);
        TESSERA_ASSIGN_OR_RETURN(L.wo, ColumnSlice(W.wo, q0, q1, "attn_output", l));
        if (c.qkv_bias) {
          L.bq = VectorSlice(W.bq, q0, q1);
          L.bk = VectorSlice(W.bk, k0, k1);
          L.bv = VectorSlice(W.bv, k0, k1);
        }
        L.w_gate = RowSlice(W.w_gate, s.ff_begin, s.ff_end);
        L.w_up = RowSlice(W.w_up, s.ff_begin, s.ff_end);
        TESSERA_ASSIGN_OR_RETURN(L.w_down, ColumnSlice(W.w_down, s.ff_begin, s.ff_end, "ffn_down", l));
      }
      for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
        rank.weight_bytes += ViewBytes(*w);
      }
      rank.layers.push_back(L);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCache>> LlamaModel::CreateKvCache(const KvCacheOptions& options) const {
  std::vector<Backend*> backends;
  std::vector<int> dims;
  for (const Rank& r : ranks_) {
    backends.push_back(r.backend);
    dims.push_back(r.shard.n_kv_heads() * config_.head_dim);
  }
  return KvCache::CreateSharded(backends, config_.n_layers, dims, options);
}

int64_t LlamaModel::kv_bytes_per_block(int block_size) const {
  int64_t bytes = 0;
  for (const Rank& r : ranks_) {
    bytes += KvCache::BytesPerBlock(config_.n_layers, r.shard.n_kv_heads() * config_.head_dim, block_size);
  }
  return bytes;
}

absl::Status LlamaModel::AllocateScratch() {
  const int64_t n = options_.max_batch_tokens;
  const LlamaConfig& c = config_;
  for (Rank& r : ranks_) {
    Backend& b = *r.backend;
    const RankShard& s = r.shard;
    TESSERA_ASSIGN_OR_RETURN(r.x, b.AllocateMat(n, c.n_embd));
    TESSERA_ASSIGN_OR_RETURN(r.xn, b.AllocateMat(n, c.n_embd));
    TESSERA_ASSIGN_OR_RETURN(r.q, b.AllocateMat(n, int64_t{s.n_heads()} * c.head_dim));
    TESSERA_ASSIGN_OR_RETURN(r.k, b.AllocateMat(n, int64_t{s.n_kv_heads()} * c.head_dim));
    TESSERA_ASSIGN_OR_RETURN(r.v, b.AllocateMat(n, int64_t{s.n_kv_heads()} * c.head_dim));
    TESSERA_ASSIGN_OR_RETURN(r.attn, b.AllocateMat(n, int64_t{s.n_heads()} * c.head_dim));
    TESSERA_ASSIGN_OR_RETURN(r.gate, b.AllocateMat(n, s.n_ff()));
    TESSERA_ASSIGN_OR_RETURN(r.up, b.AllocateMat(n, s.n_ff()));
    if (ranks_.size() > 1) {
      TESSERA_ASSIGN_OR_RETURN(r.partial, b.AllocateMat(n, c.n_embd));
    }
  }
  TESSERA_ASSIGN_OR_RETURN(logits_, ranks_[0].backend->AllocateMat(options_.max_logit_rows, c.n_vocab));
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
  if (!broken_.ok()) return broken_;
  adapter_rows_.clear();
  for (int64_t i = 0; i < static_cast<int64_t>(row_adapters.size()); ++i) {
    const LoraView* view = row_adapters[i];
    if (view == nullptr) continue;
    auto it = std::find_if(adapter_rows_.begin(), adapter_rows_.end(),
                           [view](const AdapterRows& a) { return a.view == view; });
    if (it == adapter_rows_.end()) it = adapter_rows_.insert(adapter_rows_.end(), AdapterRows{view, {}});
    it->rows.push_back(static_cast<int32_t>(i));
  }
  if (cache.ranks() != tensor_parallel_size()) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache has ", cache.ranks(), " ranks; the model has ",
                                                   tensor_parallel_size(), " (use LlamaModel::CreateKvCache)"));
  }
  for (int r = 0; r < tensor_parallel_size(); ++r) {
    if (cache.kv_dim(r) != ranks_[r].shard.n_kv_heads() * c.head_dim) {
      return absl::InvalidArgumentError(absl::StrCat("KV cache rank ", r, " holds ", cache.kv_dim(r),
                                                     " values per slot; the model's shard needs ",
                                                     ranks_[r].shard.n_kv_heads() * c.head_dim));
    }
  }

  const Step step{tokens, &layout, &cache};
  if (ranks_.size() > 1) {
    // Creating the other ranks' backends moved this thread's current device.
    ranks_[0].backend->BindToCallingThread();
    absl::MutexLock lock(&mu_);
    step_ = &step;
    followers_running_ = static_cast<int>(ranks_.size()) - 1;
    ++step_number_;
  }
  absl::Status status = RankForward(ranks_[0], step);
  if (ranks_.size() > 1) {
    absl::MutexLock lock(&mu_);
    const absl::Duration wait = absl::FromChrono(2 * options_.tensor_parallel->timeout);
    if (!mu_.AwaitWithTimeout(absl::Condition(+[](int* running) { return *running == 0; }, &followers_running_),
                              wait)) {
      // A rank that never finishes may still hold `step`; the model is
      // never stepped again (and the worker ends).
      broken_ = absl::DeadlineExceededError(absl::StrCat(
          "tensor-parallel group failed: ", followers_running_, " rank(s) did not finish a step within ",
          absl::FormatDuration(wait), (status.ok() ? "" : absl::StrCat("; rank 0: ", status.message()))));
      return broken_;
    }
    step_ = nullptr;
    for (size_t r = 1; r < ranks_.size() && status.ok(); ++r) status = ranks_[r].status;
    if (!status.ok()) {
      broken_ = absl::Status(status.code(), absl::StrCat("tensor-parallel group failed: ", status.message()));
      return broken_;
    }
  }
  TESSERA_RETURN_IF_ERROR(status);
  if (logit_rows.empty()) return absl::OkStatus();
  // Only the rows whose logits are wanted go through the final norm and the
  // (large) output projection, on rank 0 (every rank holds the same x).
  Rank& r0 = ranks_[0];
  Backend& b = *r0.backend;
  const int64_t nl = static_cast<int64_t>(logit_rows.size());
  Mat sel = Rows(r0.xn, nl);
  b.CopyRows(Rows(r0.x, n), logit_rows, sel);
  b.RmsNorm(sel, output_norm_, c.rms_eps, sel);
  Mat out = Rows(logits_, nl);
  b.MatMul(output_, sel, out);
  for (int64_t i = 0; i < nl; ++i) b.CopyToHost(out, i, logits + i * c.n_vocab);
  return absl::OkStatus();
}

void LlamaModel::FollowerLoop(int rank) {
  ranks_[rank].backend->BindToCallingThread();
  // Test hook (tests/e2e/test_failover.py): TESSERA_TEST_TP_RANK_EXIT="R:S"
  // makes rank R's thread end without a word at step S, as a rank whose
  // device or process died would.
  int exit_rank = -1;
  uint64_t exit_step = 0;
  if (const char* hook = std::getenv("TESSERA_TEST_TP_RANK_EXIT"); hook != nullptr) {
    std::pair<std::string, std::string> parts = absl::StrSplit(hook, ':');
    if (!absl::SimpleAtoi(parts.first, &exit_rank) || !absl::SimpleAtoi(parts.second, &exit_step)) exit_rank = -1;
  }
  uint64_t seen = 0;
  for (;;) {
    const Step* step = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this, &seen]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || step_number_ != seen; };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      seen = step_number_;
      step = step_;
    }
    if (rank == exit_rank && seen >= exit_step) return;
    ranks_[rank].status = RankForward(ranks_[rank], *step);
    absl::MutexLock lock(&mu_);
    --followers_running_;
  }
}

absl::Status LlamaModel::RankForward(Rank& r, const Step& step) {
  const LlamaConfig& c = config_;
  Backend& b = *r.backend;
  const int64_t n = static_cast<int64_t>(step.tokens.size());
  const BatchLayout& layout = *step.layout;
  const int rank = r.comm == nullptr ? 0 : r.comm->rank();
  const bool split = ranks_.size() > 1;
  // y += the adapters' delta for projection `proj` of layer `l` on input
  // `in`, with this rank's slices of the adapters.
  auto lora = [&](int l, LoraTarget proj, const Mat& in, Mat y) {
    if (adapter_rows_.empty()) return;
    r.lora_groups.clear();
    for (const AdapterRows& a : adapter_rows_) {
      if (const LoraPair* p = a.view->pair(l, static_cast<int>(proj), rank)) r.lora_groups.push_back({a.rows, *p});
    }
    if (!r.lora_groups.empty()) b.LoraApply(in, r.lora_groups, y);
  };
  // x += w · in (+ the adapters' delta), summed over every rank's slice of
  // w's input features; a rank's adapter slice adds its part before the sum.
  auto row_parallel = [&](int l, LoraTarget proj, const WeightView& w, const Mat& in, Mat x) -> absl::Status {
    if (!split) {
      b.MatMul(w, in, x, /*accumulate=*/true);
      lora(l, proj, in, x);
      return absl::OkStatus();
    }
    Mat partial = Rows(r.partial, n);
    b.MatMul(w, in, partial);
    lora(l, proj, in, partial);
    b.Synchronize();  // the collective may run on another stream
    TESSERA_RETURN_IF_ERROR(r.comm->AllReduceSum(std::span<float>(partial.data, n * partial.stride)));
    b.Add(partial, x);
    return absl::OkStatus();
  };

  Mat x = Rows(r.x, n), xn = Rows(r.xn, n), q = Rows(r.q, n), k = Rows(r.k, n), v = Rows(r.v, n);
  Mat attn = Rows(r.attn, n), gate = Rows(r.gate, n), up = Rows(r.up, n);
  RopeParams rope;
  rope.n_rot = c.rope_dims;
  rope.freq_base = c.rope_freq_base;
  rope.freq_scale = c.rope_freq_scale;
  rope.freq_factors = rope_freq_factors_.empty() ? nullptr : rope_freq_factors_.data();
  rope.neox = c.rope_neox;
  const int n_heads = r.shard.n_heads(), n_kv_heads = r.shard.n_kv_heads();
  AttentionShape shape{n_heads, n_kv_heads, c.head_dim, 1.f / std::sqrt(static_cast<float>(c.head_dim))};

  b.GetRows(token_embd_, step.tokens, x);
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& L = r.layers[l];
    b.RmsNorm(x, L.attn_norm, c.rms_eps, xn);
    b.MatMul(L.wq, xn, q);
    b.MatMul(L.wk, xn, k);
    b.MatMul(L.wv, xn, v);
    lora(l, LoraTarget::kQ, xn, q);
    lora(l, LoraTarget::kK, xn, k);
    lora(l, LoraTarget::kV, xn, v);
    if (c.qkv_bias) {
      b.AddBias(L.bq, q);
      b.AddBias(L.bk, k);
      b.AddBias(L.bv, v);
    }
    b.Rope(q, n_heads, c.head_dim, layout.positions, rope);
    b.Rope(k, n_kv_heads, c.head_dim, layout.positions, rope);
    b.StoreKv(k, v, layout, step.cache->layer(l, rank));
    b.Attention(q, step.cache->layer(l, rank), layout, shape, attn);
    TESSERA_RETURN_IF_ERROR(row_parallel(l, LoraTarget::kO, L.wo, attn, x));

    b.RmsNorm(x, L.ffn_norm, c.rms_eps, xn);
    b.MatMul(L.w_gate, xn, gate);
    b.MatMul(L.w_up, xn, up);
    lora(l, LoraTarget::kGate, xn, gate);
    lora(l, LoraTarget::kUp, xn, up);
    b.SwiGlu(gate, up, gate);
    TESSERA_RETURN_IF_ERROR(row_parallel(l, LoraTarget::kDown, L.w_down, gate, x));
  }
  return absl::OkStatus();
}

}  // namespace tessera
