// tessera-perplexity: a model's perplexity over a text by llama.cpp's method
// (tools/eval/perplexity.h), and with --base its KL divergence from a base
// model and their top-token agreement: the accuracy half of comparing
// quantizations.
//
//   tessera-perplexity --model M --text FILE [--ctx N] [--chunks K] [--base M0]
//                      [--batch N] [--threads N] [--device cpu|cuda[:N]] [--json] [--keep-doc-wrappers]
//
// Progress goes to stderr, one line per window. The summary is one line on
// stdout; with --json stdout holds only the JSON object and the summary line
// goes to stderr. Any error: one line on stderr and exit 1 (2 for usage).
#include <cmath>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/command_line.h"
#include "common/escape.h"
#include "nlohmann/json.hpp"
#include "tools/eval/perplexity.h"
#include "tools/quantize/text_corpus.h"
#include "worker/model/model_bundle.h"

ABSL_FLAG(std::string, model, "", "model to evaluate: a GGUF file or HF directory (default: the bundled model)");
ABSL_FLAG(std::string, text, "", "evaluation text (plain UTF-8; WikiExtractor <doc> wrapper lines are dropped)");
ABSL_FLAG(int, ctx, 512, "tokens per window (even, >= 16, <= the model's context); the second half is scored");
ABSL_FLAG(int, chunks, 0, "windows to evaluate (0 = all the text holds)");
ABSL_FLAG(std::string, base, "",
          "a base model to compare with: KL(base || model) and top-token agreement per scored position");
ABSL_FLAG(int, batch, 0, "tokens per forward pass (0 = the whole window, up to 2048); changes speed, not the method");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = all)");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(bool, json, false, "print the result as one JSON object on stdout");
ABSL_FLAG(bool, keep_doc_wrappers, false, "keep <doc ...> and </doc> lines in the text");

namespace {

int Fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "tessera-perplexity: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  namespace eval = tessera::eval;
  const tessera::CommandLine cl = tessera::ParseCommandLine(
      argc, argv,
      "tessera-perplexity --model M --text FILE [--ctx N] [--chunks K] [--base M0] [--batch N] [--threads N] "
      "[--device cpu|cuda[:N]] [--json] [--keep-doc-wrappers]");
  if (cl.positional.size() > 1) {
    return Fail(absl::StrCat("unexpected argument '", tessera::EscapeForMessage(cl.positional[1]), "'"), 2);
  }
  const int ctx = absl::GetFlag(FLAGS_ctx);
  const int chunks = absl::GetFlag(FLAGS_chunks);
  const int threads = absl::GetFlag(FLAGS_threads);
  if (ctx < eval::kMinContext || ctx % 2 != 0) {
    return Fail(absl::StrCat("--ctx must be an even number of at least ", eval::kMinContext, "; got ", ctx));
  }
  if (chunks < 0) return Fail(absl::StrCat("--chunks must be >= 0 (0 = all); got ", chunks));
  if (threads < 0 || threads > 1024) return Fail(absl::StrCat("--threads must be in [0, 1024] (0 = all); got ", threads));
  const int batch = absl::GetFlag(FLAGS_batch);
  if (batch < 0 || batch > eval::kMaxBatchTokens) {
    return Fail(absl::StrCat("--batch must be in [0, ", eval::kMaxBatchTokens, "] (0 = the window); got ", batch));
  }
  const std::string text_path = absl::GetFlag(FLAGS_text);
  if (text_path.empty()) return Fail("--text FILE is required");

  // The text first: a bad file is reported before seconds of model loading.
  auto raw = tessera::quantize::ReadTextCorpus(text_path, "--text");
  if (!raw.ok()) return Fail(std::string(raw.status().message()));
  std::string text = absl::GetFlag(FLAGS_keep_doc_wrappers) ? std::move(*raw) : tessera::quantize::StripDocWrappers(*raw);
  raw->clear();
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return Fail(absl::StrCat("--text ", tessera::EscapeForMessage(text_path),
                             ": nothing but <doc> wrapper lines and whitespace"));
  }

  const eval::EvalShape shape = eval::EvalShapeFor(ctx, batch);
  tessera::ModelBundleOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  options.threads = threads;
  options.max_batch_tokens = shape.max_batch_tokens;
  options.max_logit_rows = shape.max_logit_rows;
  auto load = [&](const std::string& path, const char* flag) -> absl::StatusOr<std::unique_ptr<tessera::ModelBundle>> {
    auto bundle = tessera::LoadModelBundle(path, options);
    if (!bundle.ok()) {
      // The loader's messages quote the path as given; escaped here so that a
      // path holding a newline or control bytes still makes one clean line.
      return absl::Status(bundle.status().code(),
                          absl::StrCat(flag, ": cannot load the model: ",
                                       tessera::EscapeForMessage(std::string(bundle.status().message()), 4096)));
    }
    const int n_ctx = (*bundle)->model->config().n_ctx_train;
    if (ctx > n_ctx) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ctx ", ctx, " is more than the context length of ", tessera::EscapeForMessage(path), " (",
                       n_ctx, " tokens)"));
    }
    return bundle;
  };
  std::string model_path = absl::GetFlag(FLAGS_model);
  if (model_path.empty()) model_path = tessera::DefaultModelPath();
  const std::string base_path = absl::GetFlag(FLAGS_base);
  std::unique_ptr<tessera::ModelBundle> base;
  if (!base_path.empty()) {
    auto b = load(base_path, "--base");
    if (!b.ok()) return Fail(std::string(b.status().message()));
    base = std::move(*b);
  }
  auto m = load(model_path, "--model");
  if (!m.ok()) return Fail(std::string(m.status().message()));
  tessera::ModelBundle& model = **m;

  // With a base, the base's tokenizer defines the tokens and the model must
  // agree on them: a comparison over different token streams means nothing.
  const tessera::Tokenizer& tok = base ? *base->tokenizer : *model.tokenizer;
  if (base && base->model->config().n_vocab != model.model->config().n_vocab) {
    return Fail(absl::StrCat("the vocabularies differ: --base has ", base->model->config().n_vocab,
                             " tokens, --model has ", model.model->config().n_vocab));
  }
  const std::vector<int32_t> tokens = eval::TokenizeForPerplexity(tok, text);
  if (base) {
    const std::vector<int32_t> mine = eval::TokenizeForPerplexity(*model.tokenizer, text);
    if (mine != tokens) {
      size_t i = 0;
      while (i < mine.size() && i < tokens.size() && mine[i] == tokens[i]) ++i;
      return Fail(absl::StrCat("the tokenizers disagree: the text is ", tokens.size(), " tokens for --base and ",
                               mine.size(), " for --model, first different at token ", i));
    }
  }
  if (static_cast<int64_t>(tokens.size()) < ctx) {
    return Fail(absl::StrCat("the text is only ", tokens.size(), " tokens; --ctx ", ctx, " needs at least ", ctx,
                             " (one window)"));
  }

  const bool json = absl::GetFlag(FLAGS_json);
  auto progress = [&](const eval::ChunkProgress& p) {
    const eval::PerplexityResult& r = *p.so_far;
    std::string line = absl::StrFormat("[%d/%d] ppl %.4f", p.chunk, p.chunks, std::exp(r.nll.mean()));
    if (base) absl::StrAppendFormat(&line, "  kld %.6f  same top %.2f%%", r.kld.mean(),
                                    100.0 * static_cast<double>(r.same_top) / static_cast<double>(r.kld.count));
    absl::StrAppendFormat(&line, "  (%.2f s)", p.chunk_seconds);
    std::fprintf(stderr, "tessera-perplexity: %s\n", line.c_str());
  };
  auto result = eval::EvaluatePerplexity(model, base.get(), tokens, tok.add_bos(), tok.bos_id(),
                                         {.ctx = ctx, .chunks = chunks, .threads = threads}, progress);
  if (!result.ok()) return Fail(std::string(result.status().message()));
  const eval::PerplexityResult& r = *result;

  const double ppl = std::exp(r.nll.mean());
  const std::optional<double> nll_err = r.nll.stderr_of_mean();
  const double ppl_err = nll_err ? ppl * *nll_err : 0.0;
  const double window_tokens = static_cast<double>(r.chunks) * ctx;
  const double tok_per_s = r.seconds > 0 ? window_tokens / r.seconds : 0.0;
  std::string summary = absl::StrFormat(
      "Final estimate: PPL = %.4f +/- %.5f over %d chunks of %d tokens (%d scored), %.2f s, %.1f tok/s", ppl, ppl_err,
      r.chunks, ctx, r.tokens_scored, r.seconds, tok_per_s);
  nlohmann::json out{{"model", model_path},
                     {"ctx", ctx},
                     {"chunks", r.chunks},
                     {"tokens_scored", r.tokens_scored},
                     {"ppl", ppl},
                     {"ppl_stderr", ppl_err},
                     {"nll_mean", r.nll.mean()},
                     {"seconds", r.seconds},
                     {"tok_per_s", tok_per_s}};
  if (base) {
    const double ppl_base = std::exp(r.nll_base.mean());
    const double agreement = static_cast<double>(r.same_top) / static_cast<double>(r.kld.count);
    out["base"] = base_path;
    out["mean_kld"] = r.kld.mean();
    // As llama.cpp states it: only with more than 10 positions.
    const std::optional<double> kld_err = r.kld.count > 10 ? r.kld.stderr_of_mean() : std::nullopt;
    if (kld_err) out["kld_stderr"] = *kld_err;
    out["top1_agreement"] = agreement;
    out["ppl_base"] = ppl_base;
    out["ppl_ratio"] = ppl / ppl_base;
    absl::StrAppendFormat(&summary, "; base PPL = %.4f, ratio %.6f, mean KLD = %.6f +/- %.6f, same top %.3f%%",
                          ppl_base, ppl / ppl_base, r.kld.mean(), kld_err.value_or(0.0), 100.0 * agreement);
  }
  if (json) {
    std::fprintf(stderr, "tessera-perplexity: %s\n", summary.c_str());
    // Paths are user bytes: invalid UTF-8 is replaced rather than thrown on.
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("%s\n", summary.c_str());
  }
  return 0;
}
