// tessera-weights: the float weights a model computes with, for oracles and
// debugging. Opens a checkpoint (GGUF file or Hugging Face directory), takes
// each linear layer as the backend would multiply it (repacked AWQ/GPTQ
// blocks included), dequantizes it with the kernels' own dequantizer, undoes
// any act-order column permutation, and writes float32 [out, in] tensors
// under Hugging Face module names to a safetensors file.
//
//   tessera-weights --model PATH --out FILE.safetensors [--layers 0,1,...] [--head]
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/command_line.h"
#include "common/flag_names.h"
#include "kernels/cpu/quant_kernels.h"
#include "nlohmann/json.hpp"
#include "worker/model/checkpoint.h"

ABSL_FLAG(std::string, model, "", "GGUF file or Hugging Face directory");
ABSL_FLAG(std::string, out, "", "safetensors file to write");
ABSL_FLAG(std::string, layers, "", "comma-separated layer indices (default: all)");
ABSL_FLAG(bool, head, false, "also write the output projection as lm_head.weight (an error if it is tied)");

namespace {

struct Tensor {
  std::string name;
  int64_t rows, cols;
  std::vector<float> data;
};

const std::pair<tessera::WeightRole, const char*> kLinear[] = {
    {tessera::WeightRole::kQ, "self_attn.q_proj"},   {tessera::WeightRole::kK, "self_attn.k_proj"},
    {tessera::WeightRole::kV, "self_attn.v_proj"},   {tessera::WeightRole::kO, "self_attn.o_proj"},
    {tessera::WeightRole::kGate, "mlp.gate_proj"},   {tessera::WeightRole::kUp, "mlp.up_proj"},
    {tessera::WeightRole::kDown, "mlp.down_proj"},
};

}  // namespace

int main(int argc, char** argv) {
  tessera::ParseCommandLine(argc, argv, "tessera-weights --model PATH --out FILE.safetensors [--layers 0,1,...] [--head]");
  auto fail = [](const std::string& m) {
    std::fprintf(stderr, "tessera-weights: %s\n", m.c_str());
    return 1;
  };
  if (absl::GetFlag(FLAGS_model).empty() || absl::GetFlag(FLAGS_out).empty()) return fail("--model and --out are required");
  auto ckpt = tessera::OpenCheckpoint(absl::GetFlag(FLAGS_model));
  if (!ckpt.ok()) return fail(std::string(ckpt.status().message()));
  const tessera::LlamaConfig& c = (*ckpt)->config();
  std::vector<int> layers;
  if (const std::string l = absl::GetFlag(FLAGS_layers); !l.empty()) {
    for (absl::string_view part : absl::StrSplit(l, ',')) {
      int v;
      if (!absl::SimpleAtoi(part, &v) || v < 0 || v >= c.n_layers) return fail("bad --layers");
      layers.push_back(v);
    }
  } else {
    for (int i = 0; i < c.n_layers; ++i) layers.push_back(i);
  }
  std::vector<Tensor> tensors;
  // Appends `name`: w dequantized row by row, in input column order.
  auto dump = [&](const std::string& name, const tessera::WeightView& w) -> std::string {
    const tessera::cpu::WeightKernels* k = tessera::cpu::ReferenceKernelsFor(w.type);
    if (k == nullptr) return absl::StrCat("no dequantizer for ", std::string(tessera::TypeName(w.type)));
    const int64_t n = tessera::IsMixedWidth(w.type) ? tessera::cpu::MixedWidthN(w.cols, w.wide_cols) : w.cols;
    Tensor t{name, w.rows, w.cols, {}};
    t.data.resize(static_cast<size_t>(w.rows * w.cols));
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      k->dequant(w.data + r * w.row_bytes, row.data(), n);
      float* dst = t.data.data() + r * w.cols;
      for (int64_t j = 0; j < w.cols; ++j) dst[w.input_perm ? w.input_perm[j] : j] = row[j];
    }
    tensors.push_back(std::move(t));
    return "";
  };
  for (int l : layers) {
    for (const auto& [role, module] : kLinear) {
      auto w = (*ckpt)->Weight(role, l);
      if (!w.ok()) return fail(std::string(w.status().message()));
      if (std::string e = dump(absl::StrCat("model.layers.", l, ".", module, ".weight"), *w); !e.empty()) return fail(e);
    }
  }
  if (absl::GetFlag(FLAGS_head)) {
    auto w = (*ckpt)->Weight(tessera::WeightRole::kOutput, 0);
    if (!w.ok()) return fail(absl::StrCat("output projection: ", w.status().message()));
    if (std::string e = dump("lm_head.weight", *w); !e.empty()) return fail(e);
  }
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  size_t offset = 0;
  for (const Tensor& t : tensors) {
    const size_t bytes = t.data.size() * sizeof(float);
    header[t.name] = {{"dtype", "F32"}, {"shape", {t.rows, t.cols}}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  FILE* f = std::fopen(absl::GetFlag(FLAGS_out).c_str(), "wb");
  if (f == nullptr) return fail("cannot write --out");
  const uint64_t n = h.size();
  std::fwrite(&n, sizeof(n), 1, f);
  std::fwrite(h.data(), 1, h.size(), f);
  for (const Tensor& t : tensors) std::fwrite(t.data.data(), sizeof(float), t.data.size(), f);
  std::fclose(f);
  std::printf("%s\n", nlohmann::json{{"tensors", tensors.size()},
                                     {"format", (*ckpt)->info().format},
                                     {"weight_type", (*ckpt)->info().weight_type},
                                     {"description", (*ckpt)->info().description}}
                          .dump()
                          .c_str());
  return 0;
}
