// The awq, gptq and rtn outputs: checks the request, lays out the output
// file, runs the format's driver (rtn here; gptq_quantize.cc,
// awq_quantize.cc) and copies everything the driver does not rewrite
// (embeddings, final norm, lm_head, biases) byte for byte.
#include "tools/quantize/group_quantize.h"

#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstring>
#include <set>
#include <tuple>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/escape.h"
#include "common/fp16.h"
#include "common/json/json_file.h"
#include "common/model_dir.h"
#include "common/status_macros.h"
#include "tools/quantize/calibration_data.h"
#include "tools/quantize/group_context.h"
#include "tools/quantize/input_model.h"

namespace tessera::quantize {
namespace {

// --calibration-samples 0: samples of --seq-len tokens. Measured on 2 CPU
// cores with the 135M bundled model: GPTQ costs about 2 s per layer plus
// about 1 s per layer per 1000 calibration tokens (32 x 512: 6.6 minutes,
// 440 MB peak); AWQ's 20-point searches run the inspected blocks 20 times
// each, about 20-30 s per layer per 1000 tokens (4 x 128: 9 minutes; the
// default 8 x 512, 4096 tokens, about an hour). GPTQModel and AutoAWQ
// default to 128 x 512 on a GPU.
constexpr int kDefaultGptqSamples = 32;
constexpr int kDefaultAwqSamples = 8;

constexpr const char* kModules[kLinears] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                            "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                            "mlp.down_proj"};

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

// Flag combinations, before anything is opened.
absl::Status CheckOptions(const QuantizeOptions& o) {
  const std::string& f = o.format;
  if (f == "awq") {
    if (o.bits != 4) return Invalid(absl::StrCat("--format awq is 4-bit only (AutoAWQ's GEMM layout); got --bits ", o.bits));
    if (!o.zero_point) {
      return Invalid("--format awq needs --zero-point: AutoAWQ's GEMM layout stores zero points (for symmetric "
                     "groups use --format gptq --sym)");
    }
  } else if (f == "gptq") {
    if (o.bits != 4 && o.bits != 8) return Invalid(absl::StrCat("--format gptq: --bits must be 4 or 8; got ", o.bits));
  } else if (f == "rtn") {
    if (o.rtn_layout != "gptq" && o.rtn_layout != "awq") {
      return Invalid(absl::StrCat("--rtn-layout must be gptq or awq; got '", EscapeForMessage(o.rtn_layout), "'"));
    }
    if (o.bits != 4 && o.bits != 8) return Invalid(absl::StrCat("--format rtn: --bits must be 4 or 8; got ", o.bits));
    if (o.rtn_layout == "awq" && o.bits != 4) {
      return Invalid(absl::StrCat("--rtn-layout awq is 4-bit only (AutoAWQ's GEMM layout); got --bits ", o.bits));
    }
  }
  if (o.desc_act && f != "gptq") return Invalid("--desc-act orders columns by the GPTQ Hessian: --format gptq only");
  if (o.group_size != -1 && (o.group_size < 32 || o.group_size % 32 != 0)) {
    return Invalid(absl::StrCat("--group-size must be -1 (one group per row) or a positive multiple of 32; got ",
                                o.group_size));
  }
  if (f == "gptq" && !(o.damp > 0 && o.damp < 1)) {
    return Invalid(absl::StrCat("--damp must be in (0, 1); got ", o.damp));
  }
  if (f == "gptq" && !(o.mse >= 0 && o.mse <= 16)) {
    return Invalid(absl::StrCat("--mse must be 0 (off) or a norm in (0, 16]; got ", o.mse));
  }
  if (f == "awq" || f == "gptq") {
    if (o.calibration.empty()) {
      return Invalid(absl::StrCat("--format ", f,
                                  " needs --calibration FILE: plain text to calibrate on (for example "
                                  "data/corpus/c4.utf8)"));
    }
    if (o.calibration_samples < 0 || o.calibration_samples > 100000) {
      return Invalid(absl::StrCat("--calibration-samples must be in [0, 100000] (0: the format's default); got ",
                                  o.calibration_samples));
    }
    if (o.seq_len < 1 || o.seq_len > 32768) {
      return Invalid(absl::StrCat("--seq-len must be in [1, 32768]; got ", o.seq_len));
    }
  }
  return absl::OkStatus();
}

// Shapes against the layout: AWQ needs the group to divide every input
// size and output sizes divisible by 8; Tessera's loaders need every group
// (a last partial GPTQ group included) to be whole multiples of 32 columns.
absl::Status CheckShapes(const GroupJob& job) {
  const LlamaConfig& c = job.config();
  if (c.qkv_bias && job.awq_layout) {
    // AutoAWQ's GEMM layout carries biases, but the scale folding below
    // does not rescale them; refuse rather than write a wrong model.
    return absl::UnimplementedError("AWQ layout for a model with q/k/v biases (Qwen2) is not supported yet");
  }
  for (int l = 0; l < kLinears; ++l) {
    const auto [rows, cols] = job.Shape(l);
    const int g = job.options->group_size;
    const std::string what = absl::StrCat(kModules[l], " [", rows, " x ", cols, "]");
    if (job.awq_layout) {
      if (g != -1 && cols % g != 0) {
        return Invalid(absl::StrCat("--group-size ", g, " does not divide the ", cols, " input columns of ", what,
                                    "; AutoAWQ's layout needs whole groups (try ", cols % 64 == 0 ? "64" : "32",
                                    " or -1)"));
      }
      if (rows % 8 != 0) return Invalid(absl::StrCat("AutoAWQ's layout needs output sizes divisible by 8: ", what));
    } else if (g != -1 && (cols % g) % 32 != 0) {
      return Invalid(absl::StrCat("--group-size ", g, " leaves a last group of ", cols % g, " of the ", cols,
                                  " input columns of ", what, "; groups must be whole multiples of 32 columns"));
    }
    if (g == -1 && cols % 32 != 0) {
      return Invalid(absl::StrCat("--group-size -1: ", what, " has input columns not a multiple of 32"));
    }
  }
  return absl::OkStatus();
}

nlohmann::json AwqConfig(const QuantizeOptions& o) {
  return {{"quant_method", "awq"}, {"zero_point", true}, {"group_size", o.group_size}, {"bits", 4},
          {"version", "gemm"},      {"modules_to_not_convert", nullptr}};
}

nlohmann::json GptqConfig(const QuantizeOptions& o, bool rtn) {
  // GPTQModel's keys (QuantizeConfig.to_dict); damp fields are meaningless
  // for rtn and carry GPTQModel's defaults there.
  const double damp = rtn ? 0.01 : o.damp;
  const bool sym = o.sym;
  nlohmann::json meta = {{"quantizer", {rtn ? "tessera-quantize:rtn" : "tessera-quantize:gptq"}},
                         {"damp_percent", damp},
                         {"damp_auto_increment", 0.0025},
                         {"static_groups", false},
                         {"true_sequential", true},
                         {"mse", rtn ? 0.0 : o.mse}};
  return {{"bits", o.bits},
          {"group_size", o.group_size},
          {"desc_act", o.desc_act},
          {"sym", sym},
          {"lm_head", false},
          {"damp_percent", damp},
          {"damp_auto_increment", 0.0025},
          {"static_groups", false},
          {"true_sequential", true},
          {"mse", rtn ? 0.0 : o.mse},
          {"quant_method", "gptq"},
          {"checkpoint_format", "gptq"},
          {"format", "gptq"},
          {"pack_dtype", "int32"},
          {"model_name_or_path", nullptr},
          {"model_file_base_name", nullptr},
          {"meta", meta}};
}

// The process's peak resident set: VmHWM, which starts afresh at exec
// (getrusage's ru_maxrss keeps the high-water mark of the process image
// before exec: a large parent's, under a test runner).
double PeakRssMb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  }
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

}  // namespace

const char* LinearModule(int linear) { return kModules[linear]; }

std::string LinearWeightName(int layer, int linear) {
  return absl::StrCat("model.layers.", layer, ".", kModules[linear], ".weight");
}

// ---- InputTensors -----------------------------------------------------------

absl::StatusOr<std::unique_ptr<InputTensors>> InputTensors::Open(const std::string& path) {
  auto in = std::make_unique<InputTensors>();
  TESSERA_ASSIGN_OR_RETURN(ModelDirectory dir, ModelDirectory::Open(path));
  std::vector<std::string> shards;
  if (absl::StatusOr<std::string> index = dir.Resolve("model.safetensors.index.json"); index.ok()) {
    TESSERA_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(*index, {.max_bytes = 64u << 20, .max_depth = 16}));
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return Invalid("model.safetensors.index.json has no weight_map object");
    }
    std::set<std::string> names;
    for (const auto& v : j["weight_map"]) {
      if (!v.is_string()) return Invalid("model.safetensors.index.json maps a tensor to a non-string");
      names.insert(v.get<std::string>());
    }
    shards.assign(names.begin(), names.end());
  } else {
    shards.push_back("model.safetensors");
  }
  for (const std::string& shard : shards) {
    TESSERA_ASSIGN_OR_RETURN(std::string real, dir.Resolve(shard));
    TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(real));
    for (const SafetensorsTensor& t : f->tensors()) {
      if (!in->tensors_.emplace(t.name, std::make_pair(&t, f.get())).second) {
        return Invalid(absl::StrCat("tensor '", EscapeForMessage(t.name), "' appears in two shards"));
      }
    }
    in->files_.push_back(std::move(f));
  }
  return in;
}

const SafetensorsTensor* InputTensors::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.first;
}

std::vector<const SafetensorsTensor*> InputTensors::All() const {
  std::vector<const SafetensorsTensor*> out;
  for (const auto& [name, t] : tensors_) out.push_back(t.first);
  return out;
}

void InputTensors::DropPages(const SafetensorsTensor* t) const {
  auto it = tensors_.find(t->name);
  if (it != tensors_.end()) it->second.second->DropPages(t->bytes);
}

absl::StatusOr<std::vector<float>> InputTensors::ReadFloat(const std::string& name, int64_t rows, int64_t cols) const {
  const SafetensorsTensor* t = Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("the input lacks tensor '", name, "'"));
  const std::vector<int64_t> want = rows == 0 ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
  if (t->shape != want) return Invalid(absl::StrCat("tensor '", name, "' does not have the shape config.json implies"));
  std::vector<float> out(static_cast<size_t>(t->elements()));
  TESSERA_RETURN_IF_ERROR(t->ToFloat(out));
  DropPages(t);
  return out;
}

// ---- GroupJob -----------------------------------------------------------------

std::pair<int64_t, int64_t> GroupJob::Shape(int linear) const {
  const LlamaConfig& c = config();
  switch (linear) {
    case kQ: return {c.q_dim(), c.n_embd};
    case kK: case kV: return {c.kv_dim(), c.n_embd};
    case kO: return {c.n_embd, c.q_dim()};
    case kGate: case kUp: return {c.n_ff, c.n_embd};
    default: return {c.n_embd, c.n_ff};
  }
}

int64_t GroupJob::GroupSize(int linear) const {
  return options->group_size == -1 ? Shape(linear).second : options->group_size;
}

int64_t GroupJob::Groups(int linear) const {
  const int64_t g = GroupSize(linear);
  return (Shape(linear).second + g - 1) / g;
}

absl::StatusOr<DenseMatrix> GroupJob::ReadLinear(int layer, int linear) const {
  DenseMatrix m;
  std::tie(m.rows, m.cols) = Shape(linear);
  TESSERA_ASSIGN_OR_RETURN(m.w, input->ReadFloat(LinearWeightName(layer, linear), m.rows, m.cols));
  return m;
}

absl::StatusOr<std::vector<float>> GroupJob::ReadNorm(const std::string& name) const {
  return input->ReadFloat(name, 0, config().n_embd);
}

absl::Status GroupJob::WriteLinear(int layer, int linear, const GroupQuantizedLinear& q) {
  const std::string module = absl::StrCat("model.layers.", layer, ".", kModules[linear]);
  for (const PackedTensor& t : awq_layout ? PackAwq(q) : PackGptq(q)) {
    const std::string name = absl::StrCat(module, ".", t.suffix);
    TESSERA_RETURN_IF_ERROR(writer->Write(name, t.bytes));
    written.insert(name);
  }
  return absl::OkStatus();
}

absl::Status GroupJob::WriteVector(const std::string& name, const std::vector<float>& v) {
  const SafetensorsTensor* t = input->Find(name);
  if (t == nullptr) return absl::InternalError(absl::StrCat("no input tensor '", name, "'"));
  std::vector<uint8_t> bytes;
  if (t->dtype == SafetensorsDtype::kF32) {
    bytes.resize(v.size() * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
  } else {
    bytes.resize(v.size() * 2);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = t->dtype == SafetensorsDtype::kF16 ? Fp32ToFp16(v[i]) : Fp32ToBf16(v[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  TESSERA_RETURN_IF_ERROR(writer->Write(name, bytes));
  written.insert(name);
  return absl::OkStatus();
}

absl::Status GroupJob::CheckCancelled() const {
  return progress->cancelled() ? absl::CancelledError("interrupted") : absl::OkStatus();
}

// ---- rtn ----------------------------------------------------------------------

absl::Status RunRtn(GroupJob& job) {
  const LlamaConfig& c = job.config();
  const QuantizeOptions& o = *job.options;
  job.progress->Begin("rtn", static_cast<int64_t>(c.n_layers) * kLinears);
  for (int l = 0; l < c.n_layers; ++l) {
    for (int lin = 0; lin < kLinears; ++lin) {
      TESSERA_RETURN_IF_ERROR(job.CheckCancelled());
      TESSERA_ASSIGN_OR_RETURN(DenseMatrix w, job.ReadLinear(l, lin));
      TESSERA_ASSIGN_OR_RETURN(GroupQuantizedLinear q, RtnQuantize(w.w.data(), w.rows, w.cols, o.bits, o.group_size,
                                                                   o.sym, /*awq_params=*/job.awq_layout));
      TESSERA_RETURN_IF_ERROR(job.WriteLinear(l, lin, q));
      job.progress->Advance(absl::StrCat("layer ", l + 1, "/", c.n_layers, " ", kModules[lin]));
    }
  }
  return absl::OkStatus();
}

// ---- entry point ----------------------------------------------------------------

absl::StatusOr<GroupInputs> OpenGroupInputs(const QuantizeOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_directory(options.input, ec)) {
    return Invalid(absl::StrCat("--format ", options.format, " reads a Hugging Face directory; --input ",
                                EscapeForMessage(options.input, 256),
                                " is not one (convert a GGUF to an HF directory first: "
                                "tools/checkpoints/gguf_to_hf.py)"));
  }
  if (options.threads > 0) omp_set_num_threads(options.threads);
  GroupInputs in;
  TESSERA_ASSIGN_OR_RETURN(in.checkpoint, OpenDenseInput(options.input));
  TESSERA_ASSIGN_OR_RETURN(in.tensors, InputTensors::Open(options.input));
  return in;
}

absl::Status QuantizeToGroupFormat(const QuantizeOptions& options, Progress& progress, const std::string& staging_dir) {
  namespace fs = std::filesystem;
  const auto start = std::chrono::steady_clock::now();
  TESSERA_RETURN_IF_ERROR(CheckOptions(options));
  TESSERA_ASSIGN_OR_RETURN(GroupInputs in, OpenGroupInputs(options));
  GroupJob job;
  job.options = &options;
  job.progress = &progress;
  job.checkpoint = in.checkpoint.get();
  job.input = in.tensors.get();
  job.awq_layout = options.format == "awq" || (options.format == "rtn" && options.rtn_layout == "awq");
  TESSERA_RETURN_IF_ERROR(CheckShapes(job));
  const LlamaConfig& c = in.checkpoint->config();

  // Calibration text is read and tokenized before any work, so that its
  // errors come at once.
  CalibrationSamples calib;
  if (options.format != "rtn") {
    TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::Create(in.checkpoint->tokenizer_spec()));
    const int samples = options.calibration_samples > 0        ? options.calibration_samples
                        : options.format == "gptq"              ? kDefaultGptqSamples
                                                                : kDefaultAwqSamples;
    TESSERA_ASSIGN_OR_RETURN(calib, LoadCalibrationSamples(options.calibration, *tok, samples, options.seq_len));
    for (int32_t id : calib.tokens) {
      if (id < 0 || id >= c.n_vocab) return absl::InternalError(absl::StrCat("token id ", id, " outside the vocabulary"));
    }
    progress.Log(absl::StrFormat("calibration: %d samples x %d tokens from %d tokens of text%s", calib.samples,
                                 calib.seq_len, calib.text_tokens,
                                 calib.overlapping ? " (the text is shorter than that: samples overlap)" : ""));
  } else if (!options.calibration.empty()) {
    progress.Log("rtn uses no calibration: --calibration is ignored");
  }

  // The output: every input tensor, the decoder linears replaced by their
  // packed tensors.
  std::set<std::string> linear_names;
  std::vector<TensorDecl> decls;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int lin = 0; lin < kLinears; ++lin) {
      const std::string name = LinearWeightName(l, lin);
      if (in.tensors->Find(name) == nullptr) return Invalid(absl::StrCat("the input lacks tensor '", name, "'"));
      linear_names.insert(name);
      const auto [rows, cols] = job.Shape(lin);
      const std::string module = name.substr(0, name.size() - 7);
      for (const PackedTensor& t : job.awq_layout ? AwqLayout(rows, cols, job.Groups(lin))
                                                  : GptqLayout(options.bits, rows, cols, job.Groups(lin))) {
        decls.push_back({absl::StrCat(module, ".", t.suffix), t.dtype, t.shape});
      }
    }
  }
  for (const SafetensorsTensor* t : in.tensors->All()) {
    if (!linear_names.contains(t->name)) decls.push_back({t->name, t->dtype, t->shape});
  }
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                           SafetensorsWriter::Create((fs::path(staging_dir) / "model.safetensors").string(), decls));
  job.writer = writer.get();

  if (options.format == "rtn") {
    TESSERA_RETURN_IF_ERROR(RunRtn(job));
  } else if (options.format == "gptq") {
    TESSERA_RETURN_IF_ERROR(RunGptq(job, calib.tokens, calib.samples, calib.seq_len));
  } else {
    TESSERA_RETURN_IF_ERROR(RunAwq(job, calib.tokens, calib.samples, calib.seq_len));
  }
  TESSERA_RETURN_IF_ERROR(job.CheckCancelled());

  for (const SafetensorsTensor* t : in.tensors->All()) {
    if (linear_names.contains(t->name) || job.written.contains(t->name)) continue;
    TESSERA_RETURN_IF_ERROR(writer->Write(t->name, t->bytes));
    in.tensors->DropPages(t);
  }
  TESSERA_RETURN_IF_ERROR(writer->Finish());
  TESSERA_RETURN_IF_ERROR(WriteQuantizedConfig(options.input, staging_dir,
                                               job.awq_layout ? AwqConfig(options)
                                                              : GptqConfig(options, options.format == "rtn")));
  TESSERA_RETURN_IF_ERROR(CopySideFiles(options.input, staging_dir));

  int64_t weights = 0;
  for (int lin = 0; lin < kLinears; ++lin) weights += job.Shape(lin).first * job.Shape(lin).second;
  weights *= c.n_layers;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.Log(absl::StrFormat("%s: %.1f M weights quantized in %.1f s (%.3f s per million weights); peak RSS %.1f MB",
                               options.format, weights / 1e6, seconds, seconds / (weights / 1e6),
                               PeakRssMb()));
  return absl::OkStatus();
}

}  // namespace tessera::quantize
