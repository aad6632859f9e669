// tessera-bench: prompt-processing and generation speed of the CPU engine,
// measured like llama-bench (pp: one batch of N prompt tokens; tg: M
// single-token decode steps), printed as JSON.
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/command_line.h"
#include "common/flag_names.h"
#include "nlohmann/json.hpp"
#include "worker/engine/generate.h"
#include "worker/model/model_bundle.h"

ABSL_FLAG(std::string, model, "", "GGUF model (default: the bundled model)");
ABSL_FLAG(int, pp, 512, "prompt tokens");
ABSL_FLAG(int, tg, 128, "generated tokens");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = all)");
ABSL_FLAG(int, tensor_parallel_size, 1, "ranks the model is split over (CPU ranks on cpu, GPUs 0..N-1 on cuda)");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(int, repetitions, 3, "runs; the best is reported");
ABSL_FLAG(std::string, synthetic, "", "a synthetic model of this architecture's shapes instead of a file: llama3-8b, llama2-7b, tiny");
ABSL_FLAG(std::string, synthetic_type, "q4_k", "weight encoding of the synthetic model: f32, f16, bf16, q4_0, q4_1, q8_0, q4_k, q6_k");
ABSL_FLAG(int, decode_batch, 1, "sequences decoded together in each tg step (continuous batching)");

int main(int argc, char** argv) {
  tessera::ParseCommandLine(argc, argv,
                            "tessera-bench [--model PATH | --synthetic NAME] [--pp N] [--tg N] [--threads N] "
                            "[--device cpu|cuda[:N]] [--decode-batch N] [--tensor-parallel-size N]");
  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) path = tessera::DefaultModelPath();
  const int pp = absl::GetFlag(FLAGS_pp), tg = absl::GetFlag(FLAGS_tg);
  const tessera::ModelBundleOptions options{.device = absl::GetFlag(FLAGS_device),
                                             .threads = absl::GetFlag(FLAGS_threads),
                                             .tensor_parallel_size = absl::GetFlag(FLAGS_tensor_parallel_size),
                                             .max_batch_tokens = std::max({pp, absl::GetFlag(FLAGS_decode_batch), 1}),
                                             .max_logit_rows = std::max(absl::GetFlag(FLAGS_decode_batch), 1)};
  const std::string synthetic = absl::GetFlag(FLAGS_synthetic);
  auto bundle = synthetic.empty()
                    ? tessera::LoadModelBundle(path, options)
                    : tessera::LoadSyntheticModelBundle(synthetic, absl::GetFlag(FLAGS_synthetic_type), options);
  if (!bundle.ok()) {
    std::fprintf(stderr, "tessera-bench: %s\n", std::string(bundle.status().message()).c_str());
    return 1;
  }
  tessera::ModelBundle& b = **bundle;
  const auto& cfg = b.model->config();
  tessera::KvCacheOptions kv;
  kv.num_blocks = static_cast<int64_t>(absl::GetFlag(FLAGS_decode_batch)) * ((pp + tg + kv.block_size) / kv.block_size + 1);
  auto cache = b.model->CreateKvCache(kv);
  std::mt19937 rng(1);
  std::vector<int32_t> prompt(pp);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % cfg.n_vocab);
  double best_pp = 0, best_tg = 0;
  std::vector<float> logits(cfg.n_vocab);
  for (int rep = 0; rep < absl::GetFlag(FLAGS_repetitions); ++rep) {
    std::vector<int32_t> table;
    (void)(*cache)->Reserve(table, pp + tg);
    const std::span<const int32_t> tables[1] = {table};
    std::vector<int32_t> pos(pp), seq(pp, 0);
    for (int i = 0; i < pp; ++i) pos[i] = i;
    const int32_t last = pp - 1;
    auto t0 = std::chrono::steady_clock::now();
    auto s = b.model->Forward(prompt, {pos, seq, tables}, **cache, std::span<const int32_t>(&last, 1), logits.data());
    auto t1 = std::chrono::steady_clock::now();
    if (!s.ok()) { std::fprintf(stderr, "%s\n", std::string(s.message()).c_str()); return 1; }
    best_pp = std::max(best_pp, pp / std::chrono::duration<double>(t1 - t0).count());
    // tg: `batch` sequences that share the prompt's blocks decode together.
    const int batch = absl::GetFlag(FLAGS_decode_batch);
    std::vector<std::vector<int32_t>> seq_tables(batch, table);
    for (int b = 1; b < batch; ++b) {
      // Each extra sequence gets its own blocks for the generated tokens.
      seq_tables[b].resize(pp / kv.block_size);
      (void)(*cache)->Reserve(seq_tables[b], pp + tg);
    }
    std::vector<std::span<const int32_t>> spans(seq_tables.begin(), seq_tables.end());
    std::vector<int32_t> toks(batch, 1), bpos(batch), bseq(batch), rows(batch);
    std::vector<float> blogits(static_cast<size_t>(batch) * cfg.n_vocab);
    for (int b = 0; b < batch; ++b) { bseq[b] = b; rows[b] = b; }
    auto t2 = std::chrono::steady_clock::now();
    for (int i = 0; i < tg; ++i) {
      for (int b = 0; b < batch; ++b) bpos[b] = pp + i;
      s = b.model->Forward(toks, {bpos, bseq, spans}, **cache, rows, blogits.data());
      if (!s.ok()) { std::fprintf(stderr, "%s\n", std::string(s.message()).c_str()); return 1; }
      for (int bb = 0; bb < batch; ++bb) {
        const float* l = blogits.data() + static_cast<size_t>(bb) * cfg.n_vocab;
        toks[bb] = static_cast<int32_t>(std::max_element(l, l + cfg.n_vocab) - l);
      }
    }
    auto t3 = std::chrono::steady_clock::now();
    best_tg = std::max(best_tg, tg * batch / std::chrono::duration<double>(t3 - t2).count());
    for (int bb = 1; bb < batch; ++bb) {
      seq_tables[bb].erase(seq_tables[bb].begin(), seq_tables[bb].begin() + pp / kv.block_size);
      (*cache)->Release(seq_tables[bb]);
    }

    (*cache)->Release(table);
  }
  const uint64_t weight_bytes = b.model->weight_bytes_per_step();
  nlohmann::json out{{"pp_tokens", pp},
                     {"tg_tokens", tg},
                     {"decode_batch", absl::GetFlag(FLAGS_decode_batch)},
                     {"device", std::string(b.backend->name())},
                     {"tensor_parallel_size", b.model->tensor_parallel_size()},
                     {"model", synthetic.empty() ? path : "synthetic:" + synthetic},
                     {"weight_bytes_per_step", weight_bytes},
                     {"pp_tokens_per_s", best_pp},
                     {"tg_tokens_per_s", best_tg}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
