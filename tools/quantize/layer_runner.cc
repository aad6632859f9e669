#include "tools/quantize/layer_runner.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/fp16.h"
#include "common/status_macros.h"

namespace tessera::quantize {
namespace {

constexpr int kBlockSize = 16;

WeightView F32View(const std::vector<float>& v) {
  return WeightView{reinterpret_cast<const uint8_t*>(v.data()), GgmlType::kF32, 1, static_cast<int64_t>(v.size()),
                    v.size() * sizeof(float)};
}


constexpr int64_t kPanel = 16;  // output columns per packed weight panel
constexpr int64_t kRowsPerTile = 4;

// y[t][0..16) (+)= Σ_c x[t][c] p[c][0..16) for `nt` <= 4 rows t; portable.
void GemmTileGeneric(const float* x, int64_t nt, int64_t cols, const float* p, float* acc) {
  std::fill(acc, acc + kRowsPerTile * kPanel, 0.f);
  for (int64_t k = 0; k < nt; ++k) {
    for (int64_t c = 0; c < cols; ++c) {
      const float a = x[k * cols + c];
      for (int64_t j = 0; j < kPanel; ++j) acc[k * kPanel + j] += a * p[c * kPanel + j];
    }
  }
}

// The same for 4 rows with AVX2/FMA, 8 accumulators in registers.
__attribute__((target("avx2,fma"))) void GemmTileAvx2(const float* x, int64_t cols, const float* p, float* acc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  const float* x0 = x;
  const float* x1 = x + cols;
  const float* x2 = x + 2 * cols;
  const float* x3 = x + 3 * cols;
  for (int64_t c = 0; c < cols; ++c) {
    const __m256 b0 = _mm256_loadu_ps(p + c * kPanel), b1 = _mm256_loadu_ps(p + c * kPanel + 8);
    __m256 v = _mm256_broadcast_ss(x0 + c);
    c00 = _mm256_fmadd_ps(v, b0, c00);
    c01 = _mm256_fmadd_ps(v, b1, c01);
    v = _mm256_broadcast_ss(x1 + c);
    c10 = _mm256_fmadd_ps(v, b0, c10);
    c11 = _mm256_fmadd_ps(v, b1, c11);
    v = _mm256_broadcast_ss(x2 + c);
    c20 = _mm256_fmadd_ps(v, b0, c20);
    c21 = _mm256_fmadd_ps(v, b1, c21);
    v = _mm256_broadcast_ss(x3 + c);
    c30 = _mm256_fmadd_ps(v, b0, c30);
    c31 = _mm256_fmadd_ps(v, b1, c31);
  }
  _mm256_storeu_ps(acc, c00);
  _mm256_storeu_ps(acc + 8, c01);
  _mm256_storeu_ps(acc + 16, c10);
  _mm256_storeu_ps(acc + 24, c11);
  _mm256_storeu_ps(acc + 32, c20);
  _mm256_storeu_ps(acc + 40, c21);
  _mm256_storeu_ps(acc + 48, c30);
  _mm256_storeu_ps(acc + 56, c31);
}

}  // namespace

void LayerRunner::Gemm(const DenseMatrix& w, const float* x, int64_t rows, float* y, bool accumulate) {
  const int64_t out = w.rows, cols = w.cols, panels = (out + kPanel - 1) / kPanel;
  // Weight panels, input-major: panel p holds w[16p + j][c] at [c][j].
  packed_.assign(static_cast<size_t>(panels * cols * kPanel), 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = packed_.data() + p * cols * kPanel;
    for (int64_t j = 0; j < kPanel && p * kPanel + j < out; ++j) {
      const float* src = w.row(p * kPanel + j);
      for (int64_t c = 0; c < cols; ++c) dst[c * kPanel + j] = src[c];
    }
  }
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // Each output element is one tile's dot product in input order: the
  // result does not depend on the thread count.
#pragma omp parallel
  {
    float acc[kRowsPerTile * kPanel];
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      const float* panel = packed_.data() + p * cols * kPanel;
      const int64_t j1 = std::min(kPanel, out - p * kPanel);
      for (int64_t t = 0; t < rows; t += kRowsPerTile) {
        const int64_t nt = std::min(kRowsPerTile, rows - t);
        if (avx2 && nt == kRowsPerTile) {
          GemmTileAvx2(x + t * cols, cols, panel, acc);
        } else {
          GemmTileGeneric(x + t * cols, nt, cols, panel, acc);
        }
        for (int64_t k = 0; k < nt; ++k) {
          float* yr = y + (t + k) * out + p * kPanel;
          for (int64_t j = 0; j < j1; ++j) yr[j] = accumulate ? yr[j] + acc[k * kPanel + j] : acc[k * kPanel + j];
        }
      }
    }
  }
}

absl::StatusOr<std::unique_ptr<LayerRunner>> LayerRunner::Create(const LlamaConfig& c,
                                                                 std::vector<float> rope_freq_factors, int seq_len,
                                                                 int chunk_samples, int threads) {
  std::unique_ptr<LayerRunner> r(new LayerRunner());
  r->c_ = c;
  r->seq_len_ = seq_len;
  r->chunk_samples_ = chunk_samples;
  r->backend_ = CreateCpuBackend({.threads = threads});
  TESSERA_RETURN_IF_ERROR(r->backend_->SupportsHeadDim(c.head_dim));
  r->rope_factors_ = std::move(rope_freq_factors);
  r->rope_.n_rot = c.rope_dims;
  r->rope_.freq_base = c.rope_freq_base;
  r->rope_.freq_scale = c.rope_freq_scale;
  r->rope_.freq_factors = r->rope_factors_.empty() ? nullptr : r->rope_factors_.data();
  r->rope_.neox = c.rope_neox;
  r->shape_ = AttentionShape{c.n_heads, c.n_kv_heads, c.head_dim, 1.f / std::sqrt(static_cast<float>(c.head_dim))};
  const int blocks_per_sample = (seq_len + kBlockSize - 1) / kBlockSize;
  TESSERA_ASSIGN_OR_RETURN(r->kv_, r->backend_->AllocateKvLayer(static_cast<int64_t>(blocks_per_sample) * chunk_samples,
                                                                 kBlockSize, c.kv_dim()));
  const int64_t rows = static_cast<int64_t>(chunk_samples) * seq_len;
  r->positions_.resize(rows);
  r->row_sequence_.resize(rows);
  for (int64_t i = 0; i < rows; ++i) {
    r->positions_[i] = static_cast<int32_t>(i % seq_len);
    r->row_sequence_[i] = static_cast<int32_t>(i / seq_len);
  }
  r->block_ids_.resize(static_cast<size_t>(blocks_per_sample) * chunk_samples);
  for (size_t i = 0; i < r->block_ids_.size(); ++i) r->block_ids_[i] = static_cast<int32_t>(i);
  for (int s = 0; s < chunk_samples; ++s) {
    r->tables_.emplace_back(r->block_ids_.data() + static_cast<size_t>(s) * blocks_per_sample, blocks_per_sample);
  }
  r->q_.resize(rows * c.q_dim());
  r->k_.resize(rows * c.kv_dim());
  r->v_.resize(rows * c.kv_dim());
  r->up_.resize(rows * c.n_ff);
  return r;
}

void LayerRunner::RmsNorm(const float* x, int64_t rows, const std::vector<float>& gamma, float* y) {
  backend_->RmsNorm(View(x, rows, c_.n_embd), F32View(gamma), c_.rms_eps, View(y, rows, c_.n_embd));
}

void LayerRunner::Matmul(const DenseMatrix& w, const float* x, int64_t rows, float* y, bool accumulate) {
  Gemm(w, x, rows, y, accumulate);
}

void LayerRunner::Add(const float* x, int64_t rows, int64_t cols, float* y) {
  backend_->Add(View(x, rows, cols), View(y, rows, cols));
}

void LayerRunner::AttentionFromNormed(const float* xn, int samples, const DenseMatrix& wq, const DenseMatrix& wk,
                                      const DenseMatrix& wv, const LayerWeights& w, float* out) {
  const int64_t rows = static_cast<int64_t>(samples) * seq_len_;
  Mat q = View(q_.data(), rows, c_.q_dim()), k = View(k_.data(), rows, c_.kv_dim()), v = View(v_.data(), rows, c_.kv_dim());
  Matmul(wq, xn, rows, q.data);
  Matmul(wk, xn, rows, k.data);
  Matmul(wv, xn, rows, v.data);
  if (!w.bq.empty()) {
    backend_->AddBias(F32View(w.bq), q);
    backend_->AddBias(F32View(w.bk), k);
    backend_->AddBias(F32View(w.bv), v);
  }
  const std::span<const int32_t> pos(positions_.data(), rows);
  backend_->Rope(q, c_.n_heads, c_.head_dim, pos, rope_);
  backend_->Rope(k, c_.n_kv_heads, c_.head_dim, pos, rope_);
  BatchLayout layout{pos, std::span<const int32_t>(row_sequence_.data(), rows),
                     std::span<const std::span<const int32_t>>(tables_.data(), samples)};
  backend_->StoreKv(k, v, layout, kv_);
  backend_->Attention(q, kv_, layout, shape_, View(out, rows, c_.q_dim()));
}

void LayerRunner::MlpActFromNormed(const float* xn, int64_t rows, const DenseMatrix& wg, const DenseMatrix& wu,
                                   float* act) {
  Matmul(wg, xn, rows, act);
  Matmul(wu, xn, rows, up_.data());
  backend_->SwiGlu(View(act, rows, c_.n_ff), View(up_.data(), rows, c_.n_ff), View(act, rows, c_.n_ff));
}

absl::StatusOr<LayerWeights> ReadLayerWeights(const GroupJob& job, int layer) {
  LayerWeights w;
  TESSERA_ASSIGN_OR_RETURN(w.attn_norm, job.ReadNorm(NormName(layer, false)));
  TESSERA_ASSIGN_OR_RETURN(w.ffn_norm, job.ReadNorm(NormName(layer, true)));
  for (int lin = 0; lin < kLinears; ++lin) {
    TESSERA_ASSIGN_OR_RETURN(w.lin[lin], job.ReadLinear(layer, lin));
  }
  if (job.config().qkv_bias) {
    const LlamaConfig& c = job.config();
    const std::string p = absl::StrCat("model.layers.", layer, ".self_attn.");
    TESSERA_ASSIGN_OR_RETURN(w.bq, job.input->ReadFloat(p + "q_proj.bias", 0, c.q_dim()));
    TESSERA_ASSIGN_OR_RETURN(w.bk, job.input->ReadFloat(p + "k_proj.bias", 0, c.kv_dim()));
    TESSERA_ASSIGN_OR_RETURN(w.bv, job.input->ReadFloat(p + "v_proj.bias", 0, c.kv_dim()));
  }
  return w;
}

absl::Status EmbedTokens(const GroupJob& job, const std::vector<int32_t>& tokens, std::vector<float>* x) {
  const LlamaConfig& c = job.config();
  const SafetensorsTensor* t = job.input->Find("model.embed_tokens.weight");
  if (t == nullptr || t->shape != std::vector<int64_t>{c.n_vocab, c.n_embd}) {
    return absl::InvalidArgumentError("the input's model.embed_tokens.weight is missing or not [vocab, hidden]");
  }
  x->resize(tokens.size() * static_cast<size_t>(c.n_embd));
  const size_t elem = DtypeSize(t->dtype);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint8_t* row = t->bytes.data() + static_cast<size_t>(tokens[i]) * c.n_embd * elem;
    float* out = x->data() + i * c.n_embd;
    for (int j = 0; j < c.n_embd; ++j) {
      if (t->dtype == SafetensorsDtype::kF32) {
        std::memcpy(out + j, row + 4 * j, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, row + 2 * j, 2);
        out[j] = t->dtype == SafetensorsDtype::kF16 ? Fp16ToFp32(h) : Bf16ToFp32(h);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LayerRunner>> CreateLayerRunner(const GroupJob& job, int samples, int seq_len) {
  std::vector<float> factors;
  if (absl::StatusOr<WeightView> rf = job.checkpoint->Weight(WeightRole::kRopeFreqs, 0); rf.ok()) {
    if (rf->type != GgmlType::kF32) return absl::UnimplementedError("rope frequency factors must be F32");
    factors.resize(rf->cols);
    std::memcpy(factors.data(), rf->data, factors.size() * sizeof(float));
  } else if (!absl::IsNotFound(rf.status())) {
    return rf.status();
  }
  const int chunk = std::max(1, std::min(samples, 2048 / std::max(1, seq_len)));
  return LayerRunner::Create(job.config(), std::move(factors), seq_len, chunk, job.options->threads);
}

}  // namespace tessera::quantize
