// What the awq, gptq and rtn drivers share: the input directory's tensors,
// the output file being filled, and the per-linear read/write helpers.
#ifndef TESSERA_TOOLS_QUANTIZE_GROUP_CONTEXT_H_
#define TESSERA_TOOLS_QUANTIZE_GROUP_CONTEXT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/safetensors/safetensors_file.h"
#include "tools/quantize/group_quant.h"
#include "tools/quantize/hf_writer.h"
#include "tools/quantize/quantize_options.h"
#include "worker/model/checkpoint.h"

namespace tessera::quantize {

// The seven linear layers of a decoder layer, in the order they run.
enum Linear { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kLinears = 7;
// Hugging Face module name within a layer ("self_attn.q_proj").
const char* LinearModule(int linear);
std::string LinearWeightName(int layer, int linear);  // "model.layers.3.self_attn.q_proj.weight"

// A dense float32 matrix [rows][cols] (a layer's weight while it is worked on).
struct DenseMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> w;
  float* row(int64_t r) { return w.data() + r * cols; }
  const float* row(int64_t r) const { return w.data() + r * cols; }
};

// The tensors of an HF directory (model.safetensors or the shards of its
// index), mapped.
class InputTensors {
 public:
  static absl::StatusOr<std::unique_ptr<InputTensors>> Open(const std::string& dir);
  const SafetensorsTensor* Find(const std::string& name) const;
  // Every tensor, by name.
  std::vector<const SafetensorsTensor*> All() const;
  // The tensor as float32, checked against `rows` x `cols` (rows 0: a
  // vector of `cols`); its pages are dropped from memory afterwards.
  absl::StatusOr<std::vector<float>> ReadFloat(const std::string& name, int64_t rows, int64_t cols) const;
  void DropPages(const SafetensorsTensor* t) const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const SafetensorsTensor*, const SafetensorsFile*>> tensors_;
};

// One run of tessera-quantize --format awq|gptq|rtn.
struct GroupJob {
  const QuantizeOptions* options = nullptr;
  Progress* progress = nullptr;
  Checkpoint* checkpoint = nullptr;
  InputTensors* input = nullptr;
  SafetensorsWriter* writer = nullptr;
  bool awq_layout = false;      // AutoAWQ GEMM, else GPTQ v1
  std::set<std::string> written;  // output tensors already written

  const LlamaConfig& config() const { return checkpoint->config(); }
  // [rows][cols] of a linear.
  std::pair<int64_t, int64_t> Shape(int linear) const;
  int64_t Groups(int linear) const;  // groups over that linear's input columns
  int64_t GroupSize(int linear) const;  // the effective size (-1 resolved)

  absl::StatusOr<DenseMatrix> ReadLinear(int layer, int linear) const;
  absl::StatusOr<std::vector<float>> ReadNorm(const std::string& name) const;
  // Packs in the job's layout and writes the module's tensors.
  absl::Status WriteLinear(int layer, int linear, const GroupQuantizedLinear& q);
  // Writes a vector the input holds as F16/BF16/F32, in that same dtype.
  absl::Status WriteVector(const std::string& name, const std::vector<float>& v);
  // An error if the run was interrupted.
  absl::Status CheckCancelled() const;
};

// The input of an HF-layout run (awq, gptq, rtn, exl2): `options.input` must
// be a Hugging Face directory (InvalidArgument saying how to convert a GGUF
// otherwise), opened as a checkpoint (for the forward pass) and as raw
// tensors; applies options.threads to OpenMP.
struct GroupInputs {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<InputTensors> tensors;
};
absl::StatusOr<GroupInputs> OpenGroupInputs(const QuantizeOptions& options);

// The drivers (one file each). Each writes every linear of every layer
// through WriteLinear (and, for awq, the norms it rescales).
absl::Status RunRtn(GroupJob& job);
absl::Status RunGptq(GroupJob& job, const std::vector<int32_t>& calibration_tokens, int samples, int seq_len);
absl::Status RunAwq(GroupJob& job, const std::vector<int32_t>& calibration_tokens, int samples, int seq_len);

// Called for each linear in GPTQ's true-sequential order with `h`, the
// Hessian of its inputs (HessianAccumulator::Hessian). Whatever the solver
// leaves in `w` is what the rest of the sweep computes with: the dequantized
// weights make the quantized model feed itself (GPTQ), the untouched dense
// weights make every later Hessian the dense model's (a measurement pass).
using LinearSolver =
    std::function<absl::Status(int layer, int linear, DenseMatrix& w, const std::vector<double>& h)>;
// The decoder layers one after another over the calibration samples
// (gptq_quantize.cc): the sweep RunGptq runs, with the solver supplied.
// With `head`, the sweep goes on past the last layer and calls it with the
// Hessian of the output head's inputs (the final norm of the last layer's
// output, through the quantized layers).
using HeadSolver = std::function<absl::Status(const std::vector<double>& h)>;
absl::Status SweepCalibrated(GroupJob& job, const std::vector<int32_t>& calibration_tokens, int samples, int seq_len,
                             const LinearSolver& solve, const HeadSolver* head = nullptr);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_GROUP_CONTEXT_H_
