// --format gptq (and the calibrated sweep --format exl2 shares): the decoder
// layers quantized one after another, each from
// the hidden states the already-quantized layers before it produce (the
// quantized model feeds itself, as GPTQ does). Within a layer the published
// "true sequential" order: q, k, v from the attention norm's output; then o
// from the attention computed with the quantized q/k/v; then gate and up from
// the ffn norm of the residual stream through the quantized o; then down
// from the activations of the quantized gate/up. Each group's Hessian is
// accumulated over every calibration token before its linears are solved.
//
// Memory: the hidden states of all samples, the attention outputs and the
// MLP activations of all samples (N x (2 n_embd + q_dim + n_ff) floats in
// all, N = samples x seq_len) plus one layer's float32 weights and Hessians.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "tools/quantize/gptq_solver.h"
#include "tools/quantize/group_context.h"
#include "tools/quantize/layer_runner.h"

namespace tessera::quantize {

absl::Status SweepCalibrated(GroupJob& job, const std::vector<int32_t>& tokens, int samples, int seq_len,
                             const LinearSolver& solve, const HeadSolver* head) {
  const LlamaConfig& c = job.config();
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<LayerRunner> runner, CreateLayerRunner(job, samples, seq_len));
  const int64_t n = static_cast<int64_t>(samples) * seq_len;
  const int chunk = runner->chunk_samples();
  const int64_t d = c.n_embd, qd = c.q_dim(), ff = c.n_ff;
  std::vector<float> x, attn(static_cast<size_t>(n * qd)), act(static_cast<size_t>(n * ff));
  std::vector<float> xn(static_cast<size_t>(chunk) * seq_len * d);
  TESSERA_RETURN_IF_ERROR(EmbedTokens(job, tokens, &x));

  // Calls f(first_row, rows, first_sample, chunk_samples) for each chunk of whole samples.
  auto for_chunks = [&](auto&& f) -> absl::Status {
    for (int s = 0; s < samples; s += chunk) {
      TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
      const int cs = std::min(chunk, samples - s);
      f(static_cast<int64_t>(s) * seq_len, static_cast<int64_t>(cs) * seq_len, cs);
    }
    return absl::OkStatus();
  };

  for (int l = 0; l < c.n_layers; ++l) {
    TESSERA_ASSIGN_OR_RETURN(LayerWeights w, ReadLayerWeights(job, l));
    auto quantize = [&](int lin, const std::vector<double>& h) -> absl::Status {
      TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
      return solve(l, lin, w.lin[lin], h);
    };

    // q, k, v: inputs are the attention norm of the layer input.
    HessianAccumulator h_qkv(d);
    TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int) {
      runner->RmsNorm(x.data() + r0 * d, rows, w.attn_norm, xn.data());
      h_qkv.Add(xn.data(), rows, d);
    }));
    {
      const std::vector<double> h = h_qkv.Hessian();
      for (int lin : {kQ, kK, kV}) TESSERA_RETURN_IF_ERROR(quantize(lin, h));
    }
    // o: inputs are the attention through the quantized q, k, v.
    HessianAccumulator h_o(qd);
    TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int cs) {
      runner->RmsNorm(x.data() + r0 * d, rows, w.attn_norm, xn.data());
      runner->AttentionFromNormed(xn.data(), cs, w.lin[kQ], w.lin[kK], w.lin[kV], w, attn.data() + r0 * qd);
      h_o.Add(attn.data() + r0 * qd, rows, qd);
    }));
    TESSERA_RETURN_IF_ERROR(quantize(kO, h_o.Hessian()));
    // gate, up: the ffn norm of the residual through the quantized o.
    HessianAccumulator h_gu(d);
    TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int) {
      runner->Matmul(w.lin[kO], attn.data() + r0 * qd, rows, x.data() + r0 * d, /*accumulate=*/true);
      runner->RmsNorm(x.data() + r0 * d, rows, w.ffn_norm, xn.data());
      h_gu.Add(xn.data(), rows, d);
    }));
    {
      const std::vector<double> h = h_gu.Hessian();
      for (int lin : {kGate, kUp}) TESSERA_RETURN_IF_ERROR(quantize(lin, h));
    }
    // down: the activations of the quantized gate and up.
    HessianAccumulator h_down(ff);
    TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int) {
      runner->RmsNorm(x.data() + r0 * d, rows, w.ffn_norm, xn.data());
      runner->MlpActFromNormed(xn.data(), rows, w.lin[kGate], w.lin[kUp], act.data() + r0 * ff);
      h_down.Add(act.data() + r0 * ff, rows, ff);
    }));
    TESSERA_RETURN_IF_ERROR(quantize(kDown, h_down.Hessian()));
    // The next layer's input (or the head's), through the quantized down.
    if (l + 1 < c.n_layers || head != nullptr) {
      TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int) {
        runner->Matmul(w.lin[kDown], act.data() + r0 * ff, rows, x.data() + r0 * d, /*accumulate=*/true);
      }));
    }
  }
  if (head != nullptr) {
    // The output head's inputs: the final norm of the last layer's output.
    TESSERA_ASSIGN_OR_RETURN(std::vector<float> norm, job.ReadNorm("model.norm.weight"));
    HessianAccumulator h_head(d);
    TESSERA_RETURN_IF_ERROR(for_chunks([&](int64_t r0, int64_t rows, int) {
      runner->RmsNorm(x.data() + r0 * d, rows, norm, xn.data());
      h_head.Add(xn.data(), rows, d);
    }));
    TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
    TESSERA_RETURN_IF_ERROR((*head)(h_head.Hessian()));
  }
  return absl::OkStatus();
}

absl::Status RunGptq(GroupJob& job, const std::vector<int32_t>& tokens, int samples, int seq_len) {
  const LlamaConfig& c = job.config();
  const QuantizeOptions& o = *job.options;
  GptqOptions go;
  go.bits = o.bits;
  go.group_size = o.group_size;
  go.sym = o.sym;
  go.desc_act = o.desc_act;
  go.damp = o.damp;
  go.mse = o.mse;
  job.progress->Begin("gptq", static_cast<int64_t>(c.n_layers) * kLinears);
  return SweepCalibrated(job, tokens, samples, seq_len,
                         [&](int l, int lin, DenseMatrix& m, const std::vector<double>& h) -> absl::Status {
                           TESSERA_ASSIGN_OR_RETURN(GptqResult r, GptqQuantize(m.w.data(), m.rows, m.cols, h, go));
                           TESSERA_RETURN_IF_ERROR(job.WriteLinear(l, lin, r.q));
                           m.w = r.q.Dequantize();
                           if (r.dead_columns > 0 || r.damp > go.damp + 1e-9) {
                             job.progress->Log(absl::StrFormat("layer %d %s: %d dead input columns, damping %.4f", l,
                                                               LinearModule(lin), r.dead_columns, r.damp));
                           }
                           job.progress->Advance(absl::StrCat("layer ", l + 1, "/", c.n_layers, " ", LinearModule(lin)));
                           return absl::OkStatus();
                         });
}

}  // namespace tessera::quantize
