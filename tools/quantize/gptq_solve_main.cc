// tessera-gptq-solve: a test tool that runs the GPTQ solver (gptq_solver.h)
// on one matrix and its Hessian given as inputs, so that the solve can be
// held to an independent implementation on identical inputs
// (tests/oracle/test_gptq_solver.py against tests/oracle/gptq_reference.py).
//
//   tessera-gptq-solve --input IN.safetensors --output OUT.safetensors
//                      [--bits 4|8] [--group-size N] [--sym] [--desc-act] [--damp F]
//
// IN holds "w" (F32 [rows, cols]) and "h" (F64 [cols, cols]). OUT holds
// "codes" (U8 [rows, cols], original column order), "scales" (F16 [rows,
// groups]), "zeros" (I32 [rows, groups]), "g_idx" (I32 [cols]) and "damp"
// (F64 [1], the dampening used) and "dead" (I32 [1], dead input columns).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/safetensors/safetensors_file.h"
#include "common/status_macros.h"
#include "tools/quantize/gptq_solver.h"
#include "tools/quantize/hf_writer.h"

ABSL_FLAG(std::string, input, "", "safetensors with w (F32 [rows, cols]) and h (F64 [cols, cols])");
ABSL_FLAG(std::string, output, "", "safetensors to write: codes, scales, zeros, g_idx, damp, dead");
ABSL_FLAG(int, bits, 4, "bits per weight");
ABSL_FLAG(int, group_size, 128, "input columns per group (-1: one group per row)");
ABSL_FLAG(bool, sym, true, "symmetric groups");
ABSL_FLAG(bool, desc_act, false, "act-order");
ABSL_FLAG(double, damp, 0.01, "dampening as a fraction of the mean Hessian diagonal");
ABSL_FLAG(double, mse, 0, "> 0: search each group's range for the least |error|^mse");

namespace tessera::quantize {
namespace {

template <typename T>
std::span<const uint8_t> Bytes(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

absl::Status Run() {
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> in, SafetensorsFile::Open(absl::GetFlag(FLAGS_input)));
  const SafetensorsTensor* w = in->Find("w");
  const SafetensorsTensor* h = in->Find("h");
  if (w == nullptr || h == nullptr || w->dtype != SafetensorsDtype::kF32 || h->dtype != SafetensorsDtype::kF64 ||
      w->shape.size() != 2 || h->shape.size() != 2 || h->shape[0] != w->shape[1] || h->shape[1] != w->shape[1]) {
    return absl::InvalidArgumentError("--input needs w F32 [rows, cols] and h F64 [cols, cols]");
  }
  const int64_t rows = w->shape[0], cols = w->shape[1];
  std::vector<float> wv(static_cast<size_t>(rows * cols));
  std::memcpy(wv.data(), w->bytes.data(), wv.size() * sizeof(float));
  std::vector<double> hv(static_cast<size_t>(cols * cols));
  std::memcpy(hv.data(), h->bytes.data(), hv.size() * sizeof(double));

  GptqOptions o;
  o.bits = absl::GetFlag(FLAGS_bits);
  o.group_size = absl::GetFlag(FLAGS_group_size);
  o.sym = absl::GetFlag(FLAGS_sym);
  o.desc_act = absl::GetFlag(FLAGS_desc_act);
  o.damp = absl::GetFlag(FLAGS_damp);
  o.mse = absl::GetFlag(FLAGS_mse);
  TESSERA_ASSIGN_OR_RETURN(GptqResult r, GptqQuantize(wv.data(), rows, cols, std::move(hv), o));
  const GroupQuantizedLinear& q = r.q;
  const std::vector<double> damp = {r.damp};
  const std::vector<int32_t> dead = {r.dead_columns};
  TESSERA_ASSIGN_OR_RETURN(
      std::unique_ptr<SafetensorsWriter> out,
      SafetensorsWriter::Create(absl::GetFlag(FLAGS_output),
                                {{"codes", SafetensorsDtype::kU8, {rows, cols}},
                                 {"scales", SafetensorsDtype::kF16, {rows, q.groups}},
                                 {"zeros", SafetensorsDtype::kI32, {rows, q.groups}},
                                 {"g_idx", SafetensorsDtype::kI32, {cols}},
                                 {"damp", SafetensorsDtype::kF64, {1}},
                                 {"dead", SafetensorsDtype::kI32, {1}}}));
  TESSERA_RETURN_IF_ERROR(out->Write("codes", Bytes(q.codes)));
  TESSERA_RETURN_IF_ERROR(out->Write("scales", Bytes(q.scales)));
  TESSERA_RETURN_IF_ERROR(out->Write("zeros", Bytes(q.zeros)));
  TESSERA_RETURN_IF_ERROR(out->Write("g_idx", Bytes(q.g_idx)));
  TESSERA_RETURN_IF_ERROR(out->Write("damp", Bytes(damp)));
  TESSERA_RETURN_IF_ERROR(out->Write("dead", Bytes(dead)));
  return out->Finish();
}

}  // namespace
}  // namespace tessera::quantize

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "tessera-gptq-solve --input IN.safetensors --output OUT.safetensors [--bits] [--group-size] [--sym] "
      "[--desc-act] [--damp]  (test tool: one GPTQ solve on a given matrix and Hessian)");
  absl::ParseCommandLine(argc, argv);
  const absl::Status s = tessera::quantize::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "tessera-gptq-solve: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
