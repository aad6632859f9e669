// --format awq: AutoAWQ's per-layer flow (awq/quantize/quantizer.py
// AwqQuantizer.quantize, 0.2.9) on Tessera's float32 layer runner.
//
// For each decoder layer, from its input hidden states:
//  1. one float forward pass of the layer with its original weights keeps the
//     inputs of every linear and the outputs of the attention and MLP blocks;
//     its output is the next layer's input (AutoAWQ runs each layer in float
//     and feeds the float output on; only GPTQ feeds quantized layers);
//  2. the scale searches, all against the original weights: (q,k,v after the
//     attention norm, loss on the attention block's output), (o after v, only
//     when v and o have the same shape, which GQA models never do), (gate,up
//     after the ffn norm, loss on the MLP's output), (down after up, loss on
//     down's output); per search the 20 ratios of duo scaling;
//  3. the best scales are folded into the norm weights (divided) or the
//     previous linear's rows (divided) and the searched linears' columns
//     (multiplied), which leaves the float model's function unchanged;
//  4. with --clip, the clipping search for every linear but q and k on 512
//     evenly strided calibration tokens of its (rescaled) input;
//  5. zero-point min/max groups on the result, written in the GEMM layout,
//     and the rescaled norms written in the input's dtype.
//
// Memory: per layer the hidden states, the attention and MLP block outputs,
// o's input and down's input for every calibration token
// (N x (3 n_embd + q_dim + n_ff) floats), plus the layer's float32 weights.
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "tools/quantize/awq_search.h"
#include "tools/quantize/group_context.h"
#include "tools/quantize/layer_runner.h"

namespace tessera::quantize {
namespace {

void ScaleColumns(DenseMatrix& m, const std::vector<float>& s) {
  for (int64_t r = 0; r < m.rows; ++r) {
    float* row = m.row(r);
    for (int64_t c = 0; c < m.cols; ++c) row[c] *= s[c];
  }
}

void DivideRows(DenseMatrix& m, const std::vector<float>& s) {
  for (int64_t r = 0; r < m.rows; ++r) {
    float* row = m.row(r);
    for (int64_t c = 0; c < m.cols; ++c) row[c] /= s[r];
  }
}

}  // namespace

absl::Status RunAwq(GroupJob& job, const std::vector<int32_t>& tokens, int samples, int seq_len) {
  const LlamaConfig& c = job.config();
  const QuantizeOptions& o = *job.options;
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<LayerRunner> runner, CreateLayerRunner(job, samples, seq_len));
  const int64_t n = static_cast<int64_t>(samples) * seq_len;
  const int chunk = runner->chunk_samples();
  const int64_t crow = static_cast<int64_t>(chunk) * seq_len;
  const int64_t d = c.n_embd, qd = c.q_dim(), ff = c.n_ff;
  std::vector<float> x, y_attn(n * d), y_mlp(n * d), attn(n * qd), act(n * ff);
  std::vector<float> xn(crow * d), t_attn(crow * qd), t_act(crow * ff), t_y(crow * d);
  TESSERA_RETURN_IF_ERROR(EmbedTokens(job, tokens, &x));
  // The rows the clipping search looks at: every step-th token.
  const int64_t clip_step = std::max<int64_t>(1, n / kAwqClipTokens);
  std::vector<int64_t> clip_rows;
  for (int64_t r = 0; r < n; r += clip_step) clip_rows.push_back(r);
  const bool o_scaled = c.kv_dim() == d && qd == d;  // v_proj and o_proj have the same shape

  auto for_chunks = [&](auto&& f) -> absl::Status {
    for (int s = 0; s < samples; s += chunk) {
      TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
      const int cs = std::min(chunk, samples - s);
      f(static_cast<int64_t>(s) * seq_len, static_cast<int64_t>(cs) * seq_len, cs);
    }
    return absl::OkStatus();
  };
  // xn = the ffn norm of x + y_attn for a chunk (the MLP's input).
  auto mlp_input = [&](const LayerWeights& w, int64_t r0, int64_t rows) {
    for (int64_t i = 0; i < rows * d; ++i) t_y[i] = x[r0 * d + i] + y_attn[r0 * d + i];
    runner->RmsNorm(t_y.data(), rows, w.ffn_norm, xn.data());
  };

  job.progress->Begin("awq", static_cast<int64_t>(c.n_layers) * kLinears);
  for (int l = 0; l < c.n_layers; ++l) {
    TESSERA_ASSIGN_OR_RETURN(LayerWeights w, ReadLayerWeights(job, l));
    const std::string where = absl::StrCat("layer ", l + 1, "/", c.n_layers, " ");
    // 1. The float forward pass and the channel statistics.
    AbsMeanAccumulator m_qkv(d), m_o(qd), m_gu(d), m_down(ff);
    TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int cs) {
      runner->RmsNorm(x.data() + r0 * d, rows, w.attn_norm, xn.data());
      m_qkv.Add(xn.data(), rows);
      runner->AttentionFromNormed(xn.data(), cs, w.lin[kQ], w.lin[kK], w.lin[kV], w, attn.data() + r0 * qd);
      m_o.Add(attn.data() + r0 * qd, rows);
      runner->Matmul(w.lin[kO], attn.data() + r0 * qd, rows, y_attn.data() + r0 * d);
      mlp_input(w, r0, rows);
      m_gu.Add(xn.data(), rows);
      runner->MlpActFromNormed(xn.data(), rows, w.lin[kGate], w.lin[kUp], act.data() + r0 * ff);
      m_down.Add(act.data() + r0 * ff, rows);
      runner->Matmul(w.lin[kDown], act.data() + r0 * ff, rows, y_mlp.data() + r0 * d);
    }));

    // 2. The scale searches.
    auto best_scales = [&](const std::vector<int>& lins, const std::vector<float>& x_mean, const char* what,
                           auto&& loss) -> absl::StatusOr<std::vector<float>> {
      std::vector<const DenseMatrix*> ms;
      for (int lin : lins) ms.push_back(&w.lin[lin]);
      const std::vector<float> w_mean = AwqWeightMean(ms, job.GroupSize(lins[0]));
      double best = std::numeric_limits<double>::infinity();
      int best_ratio = -1;
      std::vector<float> best_s;
      for (int i = 0; i < kAwqGrid; ++i) {
        TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
        std::vector<float> s = AwqScales(x_mean, w_mean, static_cast<double>(i) / kAwqGrid);
        std::vector<DenseMatrix> cand;
        for (int lin : lins) cand.push_back(AwqScaledQuantized(w.lin[lin], s, job.GroupSize(lin)));
        TESSERA_ASSIGN_OR_RETURN(double err, loss(cand));
        if (err < best) {
          best = err;
          best_ratio = i;
          best_s = std::move(s);
        }
      }
      if (best_ratio < 0) {
        return absl::InternalError(absl::StrCat(where, what, ": every scale candidate gave a non-finite loss"));
      }
      job.progress->Advance(absl::StrFormat("%s%s ratio %.2f", where, what, best_ratio / double(kAwqGrid)),
                            static_cast<int64_t>(lins.size()));
      return best_s;
    };

    TESSERA_ASSIGN_OR_RETURN(
        std::vector<float> s_qkv,
        best_scales({kQ, kK, kV}, m_qkv.Mean(), "q,k,v", [&](const std::vector<DenseMatrix>& cand) -> absl::StatusOr<double> {
          double err = 0;
          TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int cs) {
            runner->RmsNorm(x.data() + r0 * d, rows, w.attn_norm, xn.data());
            runner->AttentionFromNormed(xn.data(), cs, cand[0], cand[1], cand[2], w, t_attn.data());
            runner->Matmul(w.lin[kO], t_attn.data(), rows, t_y.data());
            err += SquaredError(t_y.data(), y_attn.data() + r0 * d, rows * d);
          }));
          return err / static_cast<double>(n * d);
        }));
    std::vector<float> s_o;
    if (o_scaled) {
      TESSERA_ASSIGN_OR_RETURN(
          s_o, best_scales({kO}, m_o.Mean(), "o", [&](const std::vector<DenseMatrix>& cand) -> absl::StatusOr<double> {
            double err = 0;
            TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int) {
              runner->Matmul(cand[0], attn.data() + r0 * qd, rows, t_y.data());
              err += SquaredError(t_y.data(), y_attn.data() + r0 * d, rows * d);
            }));
            return err / static_cast<double>(n * d);
          }));
    } else {
      job.progress->Advance(absl::StrCat(where, "o (not scaled: v and o differ in shape)"));
    }
    TESSERA_ASSIGN_OR_RETURN(
        std::vector<float> s_gu,
        best_scales({kGate, kUp}, m_gu.Mean(), "gate,up", [&](const std::vector<DenseMatrix>& cand) -> absl::StatusOr<double> {
          double err = 0;
          TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int) {
            mlp_input(w, r0, rows);
            runner->MlpActFromNormed(xn.data(), rows, cand[0], cand[1], t_act.data());
            runner->Matmul(w.lin[kDown], t_act.data(), rows, t_y.data());
            err += SquaredError(t_y.data(), y_mlp.data() + r0 * d, rows * d);
          }));
          return err / static_cast<double>(n * d);
        }));
    TESSERA_ASSIGN_OR_RETURN(
        std::vector<float> s_down,
        best_scales({kDown}, m_down.Mean(), "down", [&](const std::vector<DenseMatrix>& cand) -> absl::StatusOr<double> {
          double err = 0;
          TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int) {
            runner->Matmul(cand[0], act.data() + r0 * ff, rows, t_y.data());
            err += SquaredError(t_y.data(), y_mlp.data() + r0 * d, rows * d);
          }));
          return err / static_cast<double>(n * d);
        }));

    // 4. Clipping inputs, taken before the weights change (they use the
    // original norms, divided by the scales as AutoAWQ's apply_scale does).
    const int64_t nc = static_cast<int64_t>(clip_rows.size());
    std::vector<float> f_attn_in, f_o, f_mlp_in, f_down;
    if (o.clip) {
      std::vector<float> gathered(nc * d);
      f_attn_in.resize(nc * d);
      f_mlp_in.resize(nc * d);
      f_o.resize(nc * qd);
      f_down.resize(nc * ff);
      for (int64_t i = 0; i < nc; ++i) std::copy_n(x.data() + clip_rows[i] * d, d, gathered.data() + i * d);
      runner->RmsNorm(gathered.data(), nc, w.attn_norm, f_attn_in.data());
      for (int64_t i = 0; i < nc; ++i) {
        for (int64_t j = 0; j < d; ++j) gathered[i * d + j] = x[clip_rows[i] * d + j] + y_attn[clip_rows[i] * d + j];
      }
      runner->RmsNorm(gathered.data(), nc, w.ffn_norm, f_mlp_in.data());
      for (int64_t i = 0; i < nc; ++i) {
        std::copy_n(attn.data() + clip_rows[i] * qd, qd, f_o.data() + i * qd);
        std::copy_n(act.data() + clip_rows[i] * ff, ff, f_down.data() + i * ff);
        for (int64_t j = 0; j < d; ++j) {
          f_attn_in[i * d + j] /= s_qkv[j];
          f_mlp_in[i * d + j] /= s_gu[j];
        }
        if (o_scaled) {
          for (int64_t j = 0; j < qd; ++j) f_o[i * qd + j] /= s_o[j];
        }
        for (int64_t j = 0; j < ff; ++j) f_down[i * ff + j] /= s_down[j];
      }
    }

    // 3. Fold the scales in.
    for (int64_t j = 0; j < d; ++j) w.attn_norm[j] /= s_qkv[j];
    for (int lin : {kQ, kK, kV}) ScaleColumns(w.lin[lin], s_qkv);
    if (o_scaled) {
      DivideRows(w.lin[kV], s_o);
      ScaleColumns(w.lin[kO], s_o);
    }
    for (int64_t j = 0; j < d; ++j) w.ffn_norm[j] /= s_gu[j];
    for (int lin : {kGate, kUp}) ScaleColumns(w.lin[lin], s_gu);
    DivideRows(w.lin[kUp], s_down);
    ScaleColumns(w.lin[kDown], s_down);

    // 4. Clip (q and k are skipped, as AutoAWQ does: their error passes
    // through the q·k product, which the per-group loss does not see).
    if (o.clip) {
      const std::pair<int, const std::vector<float>*> clip_inputs[] = {
          {kV, &f_attn_in}, {kO, &f_o}, {kGate, &f_mlp_in}, {kUp, &f_mlp_in}, {kDown, &f_down}};
      for (const auto& [lin, feats] : clip_inputs) {
        TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
        const int64_t g = job.GroupSize(lin);
        AwqApplyClip(w.lin[lin], AwqClipSearch(w.lin[lin], feats->data(), nc, g), g);
      }
    }

    // 5. Quantize and write.
    for (int lin = 0; lin < kLinears; ++lin) {
      const DenseMatrix& m = w.lin[lin];
      TESSERA_ASSIGN_OR_RETURN(GroupQuantizedLinear q,
                               RtnQuantize(m.w.data(), m.rows, m.cols, 4, o.group_size, false, /*awq_params=*/true));
      TESSERA_RETURN_IF_ERROR(job.WriteLinear(l, lin, q));
    }
    TESSERA_RETURN_IF_ERROR(job.WriteVector(NormName(l, false), w.attn_norm));
    TESSERA_RETURN_IF_ERROR(job.WriteVector(NormName(l, true), w.ffn_norm));

    // The next layer's input: this layer's float output.
    if (l + 1 < c.n_layers) {
      for (int64_t i = 0; i < n * d; ++i) x[i] = (x[i] + y_attn[i]) + y_mlp[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera::quantize
