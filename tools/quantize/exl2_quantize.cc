// --format exl2: exllamav2's three passes over the calibration data, on the
// gptq format's sweep (SweepCalibrated: layer by layer, GPTQ's true-
// sequential Hessians):
//   1. measurement: every decoder linear solved at every mix of
//      Exl2Candidates(), its relative output error recorded; the dense
//      weights feed the next linears, so each measurement sees the same
//      inputs whatever the other linears will get. --measurement-out saves
//      it and --measurement reads it back (exllamav2's measurement.json), so
//      several targets cost one measurement;
//   2. optimization: one mix per linear, the least summed error with the
//      average storage bits per weight of the decoder linears at most the
//      target (Exl2Choose);
//   3. quantization: GPTQ at the chosen mixes, the quantized layers feeding
//      the next (as --format gptq), written as exllamav2's converter writes
//      them (output.safetensors; config.json's quantization_config).
// The output head is quantized at --head-bits (default 6, as exllamav2's
// converter) with exllamav2's fixed mix for that width, on the final
// norm's output; --head-bits 16 copies it unchanged. The embeddings are
// copied unchanged.
//
// Cost: the measurement solves each linear once per candidate (23 GPTQ
// solves sharing one Cholesky factor), about 23 times the gptq format's
// solve time, plus a second calibrated sweep.
#include "tools/quantize/exl2_quantize.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/escape.h"
#include "common/json/json_file.h"
#include "common/status_macros.h"
#include "tools/quantize/calibration_data.h"
#include "tools/quantize/exl2_quant.h"
#include "tools/quantize/group_context.h"
#include "tools/quantize/input_model.h"

namespace tessera::quantize {
namespace {

constexpr double kMinBits = 2.5, kMaxBits = 8.0;
constexpr int kDefaultSamples = 32;  // as --format gptq (group_quantize.cc)
constexpr const char* kExl2Version = "0.3.2";  // the exllamav2 release whose layout this follows

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status CheckOptions(const QuantizeOptions& o) {
  if (!(o.exl2_bits >= kMinBits && o.exl2_bits <= kMaxBits)) {
    return Invalid(absl::StrFormat("--format exl2: --bits (the average bits per weight) must be in [%g, %g]; got %g",
                                   kMinBits, kMaxBits, o.exl2_bits));
  }
  if (o.calibration.empty()) {
    return Invalid("--format exl2 needs --calibration FILE: plain text to measure and calibrate on (for example "
                   "data/corpus/c4.utf8)");
  }
  if (o.calibration_samples < 0 || o.calibration_samples > 100000) {
    return Invalid(absl::StrCat("--calibration-samples must be in [0, 100000] (0: the format's default); got ",
                                o.calibration_samples));
  }
  if (o.seq_len < 1 || o.seq_len > 32768) return Invalid(absl::StrCat("--seq-len must be in [1, 32768]; got ", o.seq_len));
  if (!(o.damp > 0 && o.damp < 1)) return Invalid(absl::StrCat("--damp must be in (0, 1); got ", o.damp));
  if (o.exl2_head_bits != 16 && !Exl2HeadMix(o.exl2_head_bits).has_value()) {
    return Invalid(absl::StrCat("--head-bits must be 2, 3, 4, 5, 6, 8 or 16 (keep the dense head); got ",
                                o.exl2_head_bits));
  }
  return absl::OkStatus();
}

constexpr const char* kMeasurementFormat = "tessera-exl2-measurement";

// The measurement file: per decoder linear, the error of each candidate mix
// (in Exl2Candidates() order), with what it was measured on. Read back only
// for a model of the same shapes and the same candidate table.
nlohmann::json MeasurementJson(const GroupJob& job, const CalibrationSamples& calib, double damp,
                               const std::vector<std::vector<std::pair<int64_t, double>>>& measured) {
  const LlamaConfig& c = job.config();
  nlohmann::json shapes = nlohmann::json::array(), names = nlohmann::json::array(), linears = nlohmann::json::array();
  for (int lin = 0; lin < kLinears; ++lin) shapes.push_back({job.Shape(lin).first, job.Shape(lin).second});
  for (const Exl2Mix& m : Exl2Candidates()) names.push_back(m.Name());
  for (int l = 0; l < c.n_layers; ++l) {
    for (int lin = 0; lin < kLinears; ++lin) {
      nlohmann::json err = nlohmann::json::array();
      for (const auto& [bits, e] : measured[static_cast<size_t>(l) * kLinears + lin]) err.push_back(e);
      linears.push_back({{"name", absl::StrCat("model.layers.", l, ".", LinearModule(lin))}, {"error", err}});
    }
  }
  return {{"format", kMeasurementFormat},
          {"version", 1},
          {"layers", c.n_layers},
          {"shapes", shapes},
          {"candidates", names},
          {"damp", damp},
          {"calibration", {{"rows", calib.samples}, {"length", calib.seq_len}}},
          {"linears", linears}};
}

absl::Status ReadMeasurement(const std::string& path, const GroupJob& job,
                             std::vector<std::vector<std::pair<int64_t, double>>>* measured) {
  const std::string what = absl::StrCat("--measurement ", EscapeForMessage(path, 256));
  absl::StatusOr<nlohmann::json> jr = ReadJsonFile(path, {.max_bytes = 64u << 20, .max_depth = 8});
  if (!jr.ok()) return Invalid(absl::StrCat(what, ": ", jr.status().message()));
  const nlohmann::json& j = *jr;
  auto bad = [&](const std::string& why) { return Invalid(absl::StrCat(what, ": ", why)); };
  if (!j.is_object() || j.value("format", "") != kMeasurementFormat) {
    return bad("not a measurement written by tessera-quantize --measurement-out");
  }
  if (j.value("version", 0) != 1) return bad("unsupported measurement version");
  const LlamaConfig& c = job.config();
  nlohmann::json shapes = nlohmann::json::array(), names = nlohmann::json::array();
  for (int lin = 0; lin < kLinears; ++lin) shapes.push_back({job.Shape(lin).first, job.Shape(lin).second});
  for (const Exl2Mix& m : Exl2Candidates()) names.push_back(m.Name());
  if (!j.contains("layers") || j["layers"] != c.n_layers || !j.contains("shapes") || j["shapes"] != shapes) {
    return bad("measured on a model of other shapes or layer count than --input");
  }
  if (!j.contains("candidates") || j["candidates"] != names) {
    return bad("measured with another candidate table (another version of tessera-quantize)");
  }
  if (!j.contains("linears") || !j["linears"].is_array() ||
      j["linears"].size() != static_cast<size_t>(c.n_layers) * kLinears) {
    return bad("the linears do not match the model");
  }
  const std::vector<Exl2Mix>& mixes = Exl2Candidates();
  for (int l = 0; l < c.n_layers; ++l) {
    for (int lin = 0; lin < kLinears; ++lin) {
      const size_t i = static_cast<size_t>(l) * kLinears + lin;
      const nlohmann::json& e = j["linears"][i];
      const std::string name = absl::StrCat("model.layers.", l, ".", LinearModule(lin));
      if (!e.is_object() || e.value("name", "") != name || !e.contains("error") || !e["error"].is_array() ||
          e["error"].size() != mixes.size()) {
        return bad(absl::StrCat("entry ", i, " is not ", name, " with ", mixes.size(), " errors"));
      }
      const auto [rows, cols] = job.Shape(lin);
      auto& out = (*measured)[i];
      out.clear();
      for (size_t k = 0; k < mixes.size(); ++k) {
        const nlohmann::json& v = e["error"][k];
        if (!v.is_number() || !(v.get<double>() >= 0) || !std::isfinite(v.get<double>())) {
          return bad(absl::StrCat(name, ": error ", k, " is not a finite non-negative number"));
        }
        out.emplace_back(Exl2StorageBits(rows, cols, Exl2GroupPlan(cols, mixes[k])), v.get<double>());
      }
    }
  }
  return absl::OkStatus();
}

absl::Status WriteMeasurement(const std::string& path, const nlohmann::json& j) {
  namespace fs = std::filesystem;
  const std::string tmp = absl::StrCat(path, ".partial");
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << j.dump(1) << "\n";
    f.close();
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", EscapeForMessage(tmp, 512)));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot write ", EscapeForMessage(path, 512), ": ", ec.message()));
  return absl::OkStatus();
}

double PeakRssMb() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  double mb = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "VmHWM:", 6) == 0) mb = std::strtod(line + 6, nullptr) / 1024.0;
  }
  std::fclose(f);
  return mb;
}

}  // namespace

absl::Status QuantizeToExl2(const QuantizeOptions& options, Progress& progress, const std::string& staging_dir) {
  namespace fs = std::filesystem;
  const auto start = std::chrono::steady_clock::now();
  TESSERA_RETURN_IF_ERROR(CheckOptions(options));
  TESSERA_ASSIGN_OR_RETURN(GroupInputs in, OpenGroupInputs(options));
  GroupJob job;
  job.options = &options;
  job.progress = &progress;
  job.checkpoint = in.checkpoint.get();
  job.input = in.tensors.get();
  const LlamaConfig& c = in.checkpoint->config();
  int64_t total_weights = 0;
  for (int lin = 0; lin < kLinears; ++lin) {
    const auto [rows, cols] = job.Shape(lin);
    if (cols % 32 != 0 || cols > 65536) {
      return Invalid(absl::StrCat("--format exl2: ", LinearModule(lin), " has ", cols,
                                  " input features; EXL2 groups in Tessera need a multiple of 32, at most 65536"));
    }
    total_weights += rows * cols;
  }
  total_weights *= c.n_layers;

  // A measurement read back is checked before any work, as the calibration text is.
  const std::vector<Exl2Mix>& mixes = Exl2Candidates();
  std::vector<std::vector<std::pair<int64_t, double>>> options_per_linear(static_cast<size_t>(c.n_layers) * kLinears);
  if (!options.exl2_measurement.empty()) {
    TESSERA_RETURN_IF_ERROR(ReadMeasurement(options.exl2_measurement, job, &options_per_linear));
  }

  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::Create(in.checkpoint->tokenizer_spec()));
  const int samples = options.calibration_samples > 0 ? options.calibration_samples : kDefaultSamples;
  TESSERA_ASSIGN_OR_RETURN(CalibrationSamples calib,
                           LoadCalibrationSamples(options.calibration, *tok, samples, options.seq_len));
  for (int32_t id : calib.tokens) {
    if (id < 0 || id >= c.n_vocab) return absl::InternalError(absl::StrCat("token id ", id, " outside the vocabulary"));
  }
  progress.Log(absl::StrFormat("calibration: %d samples x %d tokens from %d tokens of text%s", calib.samples,
                               calib.seq_len, calib.text_tokens,
                               calib.overlapping ? " (the text is shorter than that: samples overlap)" : ""));
  std::set<std::string> linear_names;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int lin = 0; lin < kLinears; ++lin) {
      const std::string name = LinearWeightName(l, lin);
      if (in.tensors->Find(name) == nullptr) return Invalid(absl::StrCat("the input lacks tensor '", name, "'"));
      linear_names.insert(name);
    }
  }

  // 1. Measurement.
  if (!options.exl2_measurement.empty()) {
    progress.Log(absl::StrCat("exl2: measurement read from ", EscapeForMessage(options.exl2_measurement, 256)));
  } else {
    progress.Begin("exl2 measurement", static_cast<int64_t>(c.n_layers) * kLinears);
    TESSERA_RETURN_IF_ERROR(SweepCalibrated(
        job, calib.tokens, calib.samples, calib.seq_len,
        [&](int l, int lin, DenseMatrix& m, const std::vector<double>& h) -> absl::Status {
          TESSERA_ASSIGN_OR_RETURN(Exl2Solver solver,
                                   Exl2Solver::Prepare(m.w.data(), m.rows, m.cols, h, options.damp));
          auto& opts = options_per_linear[static_cast<size_t>(l) * kLinears + lin];
          for (const Exl2Mix& mix : mixes) {
            TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
            const std::vector<Exl2Group> plan = Exl2GroupPlan(m.cols, mix);
            TESSERA_ASSIGN_OR_RETURN(Exl2Solver::Result r, solver.Quantize(plan));
            opts.emplace_back(Exl2StorageBits(m.rows, m.cols, plan), r.error);
          }
          progress.Advance(absl::StrCat("layer ", l + 1, "/", c.n_layers, " ", LinearModule(lin)));
          return absl::OkStatus();
        }));
  }
  if (!options.exl2_measurement_out.empty()) {
    TESSERA_RETURN_IF_ERROR(WriteMeasurement(options.exl2_measurement_out,
                                             MeasurementJson(job, calib, options.damp, options_per_linear)));
  }

  // 2. Optimization.
  TESSERA_ASSIGN_OR_RETURN(std::vector<int> picked,
                           Exl2Choose(options_per_linear, total_weights, options.exl2_bits * total_weights));
  int64_t total_bits = 0;
  double total_error = 0;
  std::map<std::string, int> histogram;
  for (size_t i = 0; i < picked.size(); ++i) {
    total_bits += options_per_linear[i][picked[i]].first;
    total_error += options_per_linear[i][picked[i]].second;
    ++histogram[mixes[picked[i]].Name()];
  }
  const double bpw = static_cast<double>(total_bits) / static_cast<double>(total_weights);
  std::string mix_list;
  for (const auto& [name, count] : histogram) absl::StrAppend(&mix_list, mix_list.empty() ? "" : ", ", count, "x ", name);
  progress.Log(absl::StrFormat("exl2: target %.4g bits per weight, chose %.4f (measured error sum %.6g): %s",
                               options.exl2_bits, bpw, total_error, mix_list));

  // 3. Quantization at the chosen mixes, into a file laid out for them. The
  // head (at --head-bits' fixed mix) is solved on the final norm's output
  // after the last layer; a tied head is read from the embeddings, which
  // stay as they are for the lookup, and the output is untied.
  const std::optional<Exl2Mix> head_mix = Exl2HeadMix(options.exl2_head_bits);
  const bool tied = in.tensors->Find("lm_head.weight") == nullptr;
  const std::string head_source = tied ? "model.embed_tokens.weight" : "lm_head.weight";
  if (head_mix.has_value() && in.tensors->Find(head_source) == nullptr) {
    return Invalid(absl::StrCat("the input has neither lm_head.weight nor ", head_source, " to quantize the head from"));
  }
  if (head_mix.has_value() && !tied) linear_names.insert(head_source);
  std::vector<TensorDecl> decls;
  if (head_mix.has_value()) {
    for (const PackedTensor& t : Exl2Layout(c.n_vocab, c.n_embd, Exl2GroupPlan(c.n_embd, *head_mix))) {
      decls.push_back({absl::StrCat("lm_head.", t.suffix), t.dtype, t.shape});
    }
  }
  for (int l = 0; l < c.n_layers; ++l) {
    for (int lin = 0; lin < kLinears; ++lin) {
      const auto [rows, cols] = job.Shape(lin);
      const std::string module = absl::StrCat("model.layers.", l, ".", LinearModule(lin));
      const Exl2Mix& mix = mixes[picked[static_cast<size_t>(l) * kLinears + lin]];
      for (const PackedTensor& t : Exl2Layout(rows, cols, Exl2GroupPlan(cols, mix))) {
        decls.push_back({absl::StrCat(module, ".", t.suffix), t.dtype, t.shape});
      }
    }
  }
  for (const SafetensorsTensor* t : in.tensors->All()) {
    if (!linear_names.contains(t->name)) decls.push_back({t->name, t->dtype, t->shape});
  }
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                           SafetensorsWriter::Create((fs::path(staging_dir) / "output.safetensors").string(), decls));
  job.writer = writer.get();
  progress.Begin("exl2 quantization", static_cast<int64_t>(c.n_layers) * kLinears + (head_mix.has_value() ? 1 : 0));
  const HeadSolver quantize_head = [&](const std::vector<double>& h) -> absl::Status {
    TESSERA_ASSIGN_OR_RETURN(std::vector<float> w, in.tensors->ReadFloat(head_source, c.n_vocab, c.n_embd));
    TESSERA_ASSIGN_OR_RETURN(Exl2Solver solver, Exl2Solver::Prepare(w.data(), c.n_vocab, c.n_embd, h, options.damp));
    TESSERA_ASSIGN_OR_RETURN(Exl2Solver::Result r, solver.Quantize(Exl2GroupPlan(c.n_embd, *head_mix)));
    for (const PackedTensor& t : PackExl2(r.q)) {
      TESSERA_RETURN_IF_ERROR(writer->Write(absl::StrCat("lm_head.", t.suffix), t.bytes));
    }
    progress.Advance(absl::StrFormat("lm_head %s (error %.4g)", head_mix->Name(), r.error));
    return absl::OkStatus();
  };
  TESSERA_RETURN_IF_ERROR(SweepCalibrated(
      job, calib.tokens, calib.samples, calib.seq_len,
      [&](int l, int lin, DenseMatrix& m, const std::vector<double>& h) -> absl::Status {
        TESSERA_ASSIGN_OR_RETURN(Exl2Solver solver, Exl2Solver::Prepare(m.w.data(), m.rows, m.cols, h, options.damp));
        const Exl2Mix& mix = mixes[picked[static_cast<size_t>(l) * kLinears + lin]];
        TESSERA_ASSIGN_OR_RETURN(Exl2Solver::Result r, solver.Quantize(Exl2GroupPlan(m.cols, mix)));
        const std::string module = absl::StrCat("model.layers.", l, ".", LinearModule(lin));
        for (const PackedTensor& t : PackExl2(r.q)) {
          TESSERA_RETURN_IF_ERROR(writer->Write(absl::StrCat(module, ".", t.suffix), t.bytes));
        }
        m.w = r.q.Dequantize();
        if (solver.dead_columns() > 0 || solver.damp() > options.damp + 1e-9) {
          progress.Log(absl::StrFormat("layer %d %s: %d dead input columns, damping %.4f", l, LinearModule(lin),
                                       solver.dead_columns(), solver.damp()));
        }
        progress.Advance(absl::StrFormat("layer %d/%d %s %s (error %.4g)", l + 1, c.n_layers, LinearModule(lin),
                                         mix.Name(), r.error));
        return absl::OkStatus();
      },
      head_mix.has_value() ? &quantize_head : nullptr));
  TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
  for (const SafetensorsTensor* t : in.tensors->All()) {
    if (linear_names.contains(t->name)) continue;
    TESSERA_RETURN_IF_ERROR(writer->Write(t->name, t->bytes));
    in.tensors->DropPages(t);
  }
  TESSERA_RETURN_IF_ERROR(writer->Finish());
  // exllamav2's compile.py keys; bits is the achieved average of the decoder
  // linears (what the loader reports), rounded as the reference converter does.
  const nlohmann::json qc = {
      {"quant_method", "exl2"},
      {"version", kExl2Version},
      {"bits", std::round(bpw * 1e4) / 1e4},
      {"head_bits", options.exl2_head_bits},
      {"calibration",
       {{"rows", calib.samples},
        {"length", calib.seq_len},
        {"dataset", fs::path(options.calibration).filename().string()}}},
      {"quantizer", "tessera-quantize:exl2"},
      {"target_bits", options.exl2_bits}};
  TESSERA_RETURN_IF_ERROR(WriteQuantizedConfig(
      options.input, staging_dir, qc,
      head_mix.has_value() && tied ? nlohmann::json{{"tie_word_embeddings", false}} : nlohmann::json::object()));
  TESSERA_RETURN_IF_ERROR(CopySideFiles(options.input, staging_dir));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.Log(absl::StrFormat("exl2: %.1f M weights quantized in %.1f s (%.3f s per million weights); peak RSS %.1f MB",
                               total_weights / 1e6, seconds, seconds / (total_weights / 1e6), PeakRssMb()));
  return absl::OkStatus();
}

}  // namespace tessera::quantize
