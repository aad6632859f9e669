#include "tools/quantize/input_model.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/escape.h"

namespace tessera::quantize {
namespace {

bool IsDense(GgmlType t) { return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16; }

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenDenseInput(const std::string& path) {
  auto opened = OpenCheckpoint(path);
  if (!opened.ok()) return opened.status();
  std::unique_ptr<Checkpoint> ck = std::move(*opened);
  const std::string where = absl::StrCat("--input ", EscapeForMessage(path, 256));
  if (!ck->info().quantization.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, " is already quantized (", ck->info().quantization, ", ", ck->info().weight_type,
        "); give the F16, BF16 or F32 model it was made from"));
  }
  static constexpr WeightRole kGlobal[] = {WeightRole::kTokenEmbd, WeightRole::kOutput};
  static constexpr WeightRole kPerLayer[] = {WeightRole::kQ, WeightRole::kK, WeightRole::kV, WeightRole::kO,
                                             WeightRole::kGate, WeightRole::kUp, WeightRole::kDown};
  auto check = [&](WeightRole role, int layer) -> absl::Status {
    auto w = ck->Weight(role, layer);
    if (!w.ok()) return absl::IsNotFound(w.status()) ? absl::OkStatus() : w.status();
    if (IsDense(w->type)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        where, " is already quantized: its ", std::string(WeightRoleName(role)),
        role == WeightRole::kTokenEmbd || role == WeightRole::kOutput ? "" : absl::StrCat(" of layer ", layer),
        " is ", std::string(TypeName(w->type)), "; give the F16, BF16 or F32 model it was made from"));
  };
  for (WeightRole role : kGlobal) {
    if (auto s = check(role, 0); !s.ok()) return s;
  }
  for (int l = 0; l < ck->config().n_layers; ++l) {
    for (WeightRole role : kPerLayer) {
      if (auto s = check(role, l); !s.ok()) return s;
    }
  }
  return ck;
}

}  // namespace tessera::quantize
