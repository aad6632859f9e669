#include "tools/eval/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <omp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/kv/kv_cache.h"

namespace tessera::eval {
namespace {

// One model's state for a run: its cache, one window's block table and the
// logits of one piece.
struct Runner {
  explicit Runner(ModelBundle& b) : bundle(b) {}
  ModelBundle& bundle;
  std::unique_ptr<KvCache> cache;
  std::vector<int32_t> table;
  std::vector<float> logits;
  std::vector<RowNormalizer> norms;
  ~Runner() {
    if (cache) cache->Release(table);
  }

  absl::Status Init(int ctx) {
    const LlamaConfig& c = bundle.model->config();
    KvCacheOptions kv;
    kv.num_blocks = (ctx + kv.block_size - 1) / kv.block_size;
    TESSERA_ASSIGN_OR_RETURN(cache, bundle.model->CreateKvCache(kv));
    logits.resize(static_cast<size_t>(bundle.model->max_logit_rows()) * c.n_vocab);
    return absl::OkStatus();
  }

  // A fresh sequence for the next window: positions restart at 0, and every
  // position is written by this window before attention reads it.
  absl::Status StartWindow(int ctx) {
    cache->Release(table);
    return cache->Reserve(table, ctx);
  }

  absl::Status Run(std::span<const int32_t> window, const WindowPiece& piece, std::span<const int32_t> rows) {
    std::vector<int32_t> positions(piece.end - piece.begin), row_seq(piece.end - piece.begin, 0);
    for (int p = piece.begin; p < piece.end; ++p) positions[p - piece.begin] = p;
    const std::span<const int32_t> tables[1] = {table};
    const BatchLayout layout{positions, row_seq, tables};
    return bundle.model->Forward(window.subspan(piece.begin, piece.end - piece.begin), layout, *cache, rows,
                                 logits.data());
  }
};

}  // namespace

EvalShape EvalShapeFor(int ctx, int batch) {
  const int rows = std::clamp(batch > 0 ? std::min(batch, ctx) : ctx, 1, kMaxBatchTokens);
  return {rows, std::clamp(ctx / 2 - 1, 1, std::min(rows, kMaxLogitRows))};
}

std::vector<WindowPiece> PlanWindow(int ctx, int max_batch_tokens, int max_logit_rows) {
  const int first = ctx / 2, last = ctx - 1;  // scored rows: [first, last)
  std::vector<WindowPiece> pieces;
  for (int pos = 0; pos < ctx;) {
    int end = std::min(ctx, pos + max_batch_tokens);
    const int lb = std::max(pos, first);
    if (lb < last && end > lb + max_logit_rows) end = lb + max_logit_rows;
    const int le = std::min(end, last);
    if (lb < le) {
      pieces.push_back({pos, end, lb, le});
    } else {
      pieces.push_back({pos, end, pos, pos});
    }
    pos = end;
  }
  return pieces;
}

std::vector<int32_t> TokenizeForPerplexity(const Tokenizer& tokenizer, std::string_view text) {
  // llama.cpp: common_tokenize(text, add_special = true, parse_special =
  // false), which puts BOS in front when the vocabulary asks for it (the
  // tool refuses vocabularies that add EOS). Special-token text in the
  // corpus stays text.
  std::vector<int32_t> ids;
  if (tokenizer.add_bos() && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  std::vector<int32_t> body = tokenizer.Encode(text, {.add_special = false, .parse_special = false});
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

RowNormalizer NormalizeRow(std::span<const float> logits) {
  float max = logits[0];
  int32_t argmax = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > max) {
      max = logits[i];
      argmax = static_cast<int32_t>(i);
    }
  }
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - static_cast<double>(max));
  return {static_cast<double>(max) + std::log(sum), argmax};
}

double KlDivergence(std::span<const float> base, const RowNormalizer& base_norm, std::span<const float> model,
                    const RowNormalizer& model_norm) {
  double kl = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double lb = static_cast<double>(base[i]) - base_norm.log_z;
    const double lm = static_cast<double>(model[i]) - model_norm.log_z;
    kl += std::exp(lb) * (lb - lm);
  }
  return kl;
}

std::optional<double> Accumulator::stderr_of_mean() const {
  if (count < 2) return std::nullopt;
  const double m = mean();
  const double var = sum2 / static_cast<double>(count) - m * m;
  return var > 0 ? std::sqrt(var / static_cast<double>(count - 1)) : 0.0;
}

absl::StatusOr<PerplexityResult> EvaluatePerplexity(ModelBundle& model, ModelBundle* base,
                                                    std::span<const int32_t> tokens, bool add_bos, int32_t bos_id,
                                                    const PerplexityOptions& options,
                                                    const std::function<void(const ChunkProgress&)>& progress) {
  const int ctx = options.ctx;
  if (ctx < kMinContext || ctx % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("the context must be even and at least ", kMinContext, "; got ", ctx));
  }
  if (options.chunks < 0) return absl::InvalidArgumentError(absl::StrCat("chunks must be >= 0; got ", options.chunks));
  const int n_vocab = model.model->config().n_vocab;
  if (base != nullptr && base->model->config().n_vocab != n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("the model's vocabulary has ", n_vocab, " tokens but the base's has ",
                                                   base->model->config().n_vocab));
  }
  const int64_t available = static_cast<int64_t>(tokens.size()) / ctx;
  if (available < 1) {
    return absl::InvalidArgumentError(absl::StrCat("the text is ", tokens.size(), " tokens; a context of ", ctx,
                                                   " needs at least ", ctx));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= n_vocab) return absl::InvalidArgumentError(absl::StrCat("token id ", t, " is out of range"));
  }
  const int chunks = static_cast<int>(options.chunks == 0 ? available : std::min<int64_t>(options.chunks, available));

  // Both models must take the same pieces; the tighter limits decide.
  int max_batch = model.model->max_batch_tokens(), max_rows = model.model->max_logit_rows();
  if (base != nullptr) {
    max_batch = std::min(max_batch, base->model->max_batch_tokens());
    max_rows = std::min(max_rows, base->model->max_logit_rows());
  }
  const std::vector<WindowPiece> plan = PlanWindow(ctx, max_batch, max_rows);

  Runner m(model);
  TESSERA_RETURN_IF_ERROR(m.Init(ctx));
  std::optional<Runner> b;
  if (base != nullptr) {
    b.emplace(*base);
    TESSERA_RETURN_IF_ERROR(b->Init(ctx));
  }
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();

  PerplexityResult result;
  std::vector<int32_t> window(ctx), rows;
  // Per-row values, summed in row order after the parallel loop so that the
  // result does not depend on the thread count.
  std::vector<double> nll, nll_base, kld;
  std::vector<uint8_t> same;
  const auto t0 = std::chrono::steady_clock::now();
  for (int chunk = 0; chunk < chunks; ++chunk) {
    const auto tc = std::chrono::steady_clock::now();
    const size_t start = static_cast<size_t>(chunk) * ctx;
    std::copy(tokens.begin() + start, tokens.begin() + start + ctx, window.begin());
    // The window starts with BOS when the vocabulary adds it; targets are
    // from position first+1 on, so the replaced token is never scored.
    if (add_bos && bos_id >= 0) window[0] = bos_id;
    TESSERA_RETURN_IF_ERROR(m.StartWindow(ctx));
    if (b) TESSERA_RETURN_IF_ERROR(b->StartWindow(ctx));
    for (const WindowPiece& piece : plan) {
      rows.clear();
      for (int p = piece.logits_begin; p < piece.logits_end; ++p) rows.push_back(p - piece.begin);
      TESSERA_RETURN_IF_ERROR(m.Run(window, piece, rows));
      if (b) TESSERA_RETURN_IF_ERROR(b->Run(window, piece, rows));
      const int n = static_cast<int>(rows.size());
      if (n == 0) continue;
      nll.assign(n, 0);
      nll_base.assign(n, 0);
      kld.assign(n, 0);
      same.assign(n, 0);
      m.norms.resize(n);
      if (b) b->norms.resize(n);
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads) if (threads != 1)
      for (int r = 0; r < n; ++r) {
        const int32_t target = tokens[start + piece.logits_begin + r + 1];
        const std::span<const float> mrow(m.logits.data() + static_cast<size_t>(r) * n_vocab, n_vocab);
        m.norms[r] = NormalizeRow(mrow);
        nll[r] = m.norms[r].log_z - static_cast<double>(mrow[target]);
        if (b) {
          const std::span<const float> brow(b->logits.data() + static_cast<size_t>(r) * n_vocab, n_vocab);
          b->norms[r] = NormalizeRow(brow);
          nll_base[r] = b->norms[r].log_z - static_cast<double>(brow[target]);
          if (std::isfinite(b->norms[r].log_z) && std::isfinite(m.norms[r].log_z)) {
            kld[r] = KlDivergence(brow, b->norms[r], mrow, m.norms[r]);
          }
          same[r] = m.norms[r].argmax == b->norms[r].argmax;
        }
      }
      for (int r = 0; r < n; ++r) {
        const int pos = piece.logits_begin + r;
        auto bad = [&](const char* who) {
          return absl::InvalidArgumentError(absl::StrCat(who, " produced a non-finite logit row in window ", chunk + 1,
                                                         " at position ", pos));
        };
        if (!std::isfinite(nll[r])) return bad("the model");
        result.nll.Add(nll[r]);
        if (b) {
          if (!std::isfinite(nll_base[r])) return bad("the base model");
          result.nll_base.Add(nll_base[r]);
          result.kld.Add(kld[r]);
          result.same_top += same[r];
        }
      }
    }
    result.chunks = chunk + 1;
    result.tokens_scored = result.nll.count;
    const auto now = std::chrono::steady_clock::now();
    result.seconds = std::chrono::duration<double>(now - t0).count();
    if (progress) {
      progress({.chunk = chunk + 1,
                .chunks = chunks,
                .chunk_seconds = std::chrono::duration<double>(now - tc).count(),
                .so_far = &result});
    }
  }
  return result;
}

}  // namespace tessera::eval
