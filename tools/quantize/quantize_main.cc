// tessera-quantize: makes a dense (F32/F16/BF16) model small, in any format
// Tessera serves.
//
//   tessera-quantize --input MODEL --output PATH --format gguf:TYPE|awq|gptq|rtn|exl2
//                    [--bits 4|8, exl2: 2.5..8] [--group-size N] [--desc-act] [--sym] [--damp F]
//                    [--calibration FILE --calibration-samples N --seq-len N]
//
// The output appears only when it is complete: a format writes to a hidden
// staging path beside it, which is renamed into place at the end and removed
// on any error or interrupt (Ctrl-C).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/escape.h"
#include "tools/quantize/exl2_quantize.h"
#include "tools/quantize/gguf_quantize.h"
#include "tools/quantize/group_quantize.h"
#include "tools/quantize/quantize_options.h"

ABSL_FLAG(std::string, input, "", "model to quantize: an HF directory or a GGUF file, in F32, F16 or BF16");
ABSL_FLAG(std::string, output, "", "where to write: a .gguf file for gguf:TYPE, a directory for awq/gptq/rtn/exl2");
ABSL_FLAG(std::string, format, "",
          "gguf:TYPE (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K Q3_K_M Q4_K_S Q4_K_M Q5_K_M), "
          "awq, gptq, rtn or exl2");
ABSL_FLAG(double, bits, 4,
          "awq/gptq/rtn: bits per weight (4 or 8; awq: 4); exl2: the target average bits per weight, 2.5 to 8 "
          "(for example 4.65)");
ABSL_FLAG(int, group_size, 128, "awq/gptq/rtn: input columns per quantization group (-1: one group per row)");
ABSL_FLAG(bool, desc_act, false, "gptq: quantize columns in order of decreasing activation energy (act-order)");
ABSL_FLAG(bool, sym, true, "gptq/rtn: symmetric groups");
ABSL_FLAG(bool, zero_point, true, "awq: asymmetric groups with a zero point");
ABSL_FLAG(bool, clip, true, "awq: search a clipping ratio after the scales");
ABSL_FLAG(double, damp, 0.1,
          "gptq: dampening as a fraction of the mean Hessian diagonal (AutoGPTQ's 0.01 overfits small calibration "
          "sets)");
ABSL_FLAG(double, mse, 2.4,
          "gptq: > 0 searches each group's range (GPTQ's mse quantizer: shrink 1 .. 0.21 of the min/max range) for "
          "the least sum |error|^mse; 0: the plain min/max range");
ABSL_FLAG(std::string, rtn_layout, "gptq", "rtn: write GPTQ's layout (gptq) or AutoAWQ's (awq)");
ABSL_FLAG(int, head_bits, 6,
          "exl2: bits of the output head: 2, 3, 4, 5, 6 or 8 (each at exllamav2's mix for it), or 16 to keep the "
          "input's dense head (exllamav2's --head_bits; a tied head becomes its own lm_head)");
ABSL_FLAG(std::string, calibration, "", "awq/gptq/exl2: calibration text (plain UTF-8)");
ABSL_FLAG(int, calibration_samples, 0,
          "awq/gptq/exl2: calibration samples (0: the format's default, gptq and exl2 32, awq 8; see "
          "group_quantize.cc)");
ABSL_FLAG(int, seq_len, 512, "awq/gptq/exl2: tokens per calibration sample");
ABSL_FLAG(std::string, measurement, "",
          "exl2: read the per-layer error measurement from this file (written by --measurement-out for the same "
          "model) instead of measuring again; the target --bits may differ");
ABSL_FLAG(std::string, measurement_out, "",
          "exl2: also write this run's error measurement to this file (once the measurement pass is whole, so an "
          "interrupt during the final pass keeps it)");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = all)");
ABSL_FLAG(bool, force, false, "replace --output if it exists");

namespace {

std::atomic<bool> g_interrupted{false};
// The staging file, for the second interrupt (which ends the process at once).
char g_staging_file[4096] = {0};

extern "C" void OnInterrupt(int sig) {
  if (g_interrupted.exchange(true)) {
    if (g_staging_file[0] != '\0') ::unlink(g_staging_file);
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
}

int Fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "tessera-quantize: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const tessera::CommandLine cl = tessera::ParseCommandLine(
      argc, argv, "tessera-quantize --input MODEL --output PATH --format gguf:TYPE|awq|gptq|rtn|exl2 [options]");
  if (cl.positional.size() > 1) return Fail(absl::StrCat("unexpected argument '", cl.positional[1], "'"), 2);

  tessera::quantize::QuantizeOptions o;
  o.input = absl::GetFlag(FLAGS_input);
  o.output = absl::GetFlag(FLAGS_output);
  o.format = absl::GetFlag(FLAGS_format);
  const double bits = absl::GetFlag(FLAGS_bits);
  o.exl2_bits = bits;
  o.exl2_head_bits = absl::GetFlag(FLAGS_head_bits);
  if (o.format != "exl2") {
    // Whole widths only: a fractional average is what exl2's mixes are for.
    if (!(std::isfinite(bits) && bits == std::floor(bits) && std::fabs(bits) < 1024)) {
      return Fail(absl::StrCat("--bits ", bits, ": --format ", tessera::EscapeForMessage(o.format),
                               " takes a whole number of bits (fractional averages: --format exl2)"), 2);
    }
    o.bits = static_cast<int>(bits);
  }
  o.group_size = absl::GetFlag(FLAGS_group_size);
  o.desc_act = absl::GetFlag(FLAGS_desc_act);
  o.sym = absl::GetFlag(FLAGS_sym);
  o.zero_point = absl::GetFlag(FLAGS_zero_point);
  o.clip = absl::GetFlag(FLAGS_clip);
  o.damp = absl::GetFlag(FLAGS_damp);
  o.mse = absl::GetFlag(FLAGS_mse);
  o.rtn_layout = absl::GetFlag(FLAGS_rtn_layout);
  o.calibration = absl::GetFlag(FLAGS_calibration);
  o.calibration_samples = absl::GetFlag(FLAGS_calibration_samples);
  o.seq_len = absl::GetFlag(FLAGS_seq_len);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.exl2_measurement = absl::GetFlag(FLAGS_measurement);
  o.exl2_measurement_out = absl::GetFlag(FLAGS_measurement_out);
  if ((!o.exl2_measurement.empty() || !o.exl2_measurement_out.empty()) && o.format != "exl2") {
    return Fail("--measurement and --measurement-out are --format exl2's", 2);
  }
  if (o.input.empty() || o.output.empty() || o.format.empty()) {
    return Fail("--input, --output and --format are required", 2);
  }
  const bool gguf = o.format.starts_with("gguf:");
  if (gguf) {
    o.gguf_type = o.format.substr(5);
  } else if (o.format != "awq" && o.format != "gptq" && o.format != "rtn" && o.format != "exl2") {
    return Fail(absl::StrCat("unknown --format '", tessera::EscapeForMessage(o.format),
                             "': use gguf:TYPE (for example gguf:Q4_K_M), awq, gptq, rtn or exl2"), 2);
  }

  std::error_code ec;
  if (!fs::exists(o.input, ec)) {
    return Fail(absl::StrCat("--input '", tessera::EscapeForMessage(o.input, 512), "': no such file or directory"));
  }
  // The output's directory must exist; the output must not, unless --force.
  const fs::path out = fs::absolute(fs::path(o.output)).lexically_normal();
  const fs::path parent = out.has_filename() ? out.parent_path() : out.parent_path().parent_path();
  const fs::path target = out.has_filename() ? out : out.parent_path();
  if (!fs::is_directory(parent, ec)) {
    return Fail(absl::StrCat("--output: the directory '", tessera::EscapeForMessage(parent.string(), 512),
                             "' does not exist"));
  }
  const bool exists = fs::exists(fs::symlink_status(target, ec));
  if (exists && !absl::GetFlag(FLAGS_force)) {
    return Fail(absl::StrCat("--output '", tessera::EscapeForMessage(target.string(), 512),
                             "' exists; pass --force to replace it"));
  }
  if (exists && gguf == fs::is_directory(target, ec)) {
    return Fail(absl::StrCat("--output '", tessera::EscapeForMessage(target.string(), 512), "' is a ",
                             gguf ? "directory" : "file", "; --format ", o.format, " writes a ",
                             gguf ? "file" : "directory"));
  }
  const fs::path staging = parent / absl::StrCat(".", target.filename().string(), ".partial-", ::getpid());
  if (gguf) {
    std::snprintf(g_staging_file, sizeof(g_staging_file), "%s", staging.c_str());
  } else if (!fs::create_directory(staging, ec)) {
    return Fail(absl::StrCat("cannot create '", tessera::EscapeForMessage(staging.string(), 512), "': ", ec.message()));
  }
  ::signal(SIGINT, OnInterrupt);
  ::signal(SIGTERM, OnInterrupt);

  tessera::quantize::Progress progress(stderr, ::isatty(STDERR_FILENO) != 0, &g_interrupted);
  absl::Status status = gguf                 ? tessera::quantize::QuantizeToGguf(o, progress, staging.string())
                        : o.format == "exl2" ? tessera::quantize::QuantizeToExl2(o, progress, staging.string())
                                             : tessera::quantize::QuantizeToGroupFormat(o, progress, staging.string());
  progress.End();
  if (status.ok() && g_interrupted.load()) status = absl::CancelledError("interrupted");
  if (status.ok()) {
    // Replacing a directory takes two renames; the old one is removed last.
    // (ec may still hold the ENOENT of the existence check above.)
    ec.clear();
    fs::path old;
    if (exists && !gguf) {
      old = parent / absl::StrCat(".", target.filename().string(), ".old-", ::getpid());
      fs::rename(target, old, ec);
    }
    if (!ec) fs::rename(staging, target, ec);
    if (ec) status = absl::InternalError(absl::StrCat("cannot rename the finished output into place: ", ec.message()));
    if (!old.empty()) fs::remove_all(old, ec);
  }
  if (!status.ok()) {
    fs::remove_all(staging, ec);
    if (absl::IsCancelled(status)) return Fail("interrupted; nothing was written", 130);
    return Fail(std::string(status.message()));
  }
  std::fprintf(stderr, "tessera-quantize: wrote %s\n", target.c_str());
  return 0;
}
