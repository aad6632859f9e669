#include "kernels/cpu/quant_kernels.h"

#include <cstdlib>
#include <string_view>

#include "common/fp16.h"
#include "common/quant_blocks.h"

namespace tessera::cpu {

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kReference: return "reference";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

void KernelTable::Register(const WeightKernels& k) {
  const auto t = static_cast<uint32_t>(k.weight_type);
  const auto i = static_cast<int>(k.isa);
  if (t >= kMaxTypes || i >= kMaxIsa) return;
  entries_[t][i] = k;
  present_[t][i] = true;
}

const WeightKernels* KernelTable::Find(GgmlType type, Isa isa) const {
  const auto t = static_cast<uint32_t>(type);
  const auto i = static_cast<int>(isa);
  if (t >= kMaxTypes || i >= kMaxIsa || !present_[t][i]) return nullptr;
  return &entries_[t][i];
}

size_t ActRowBytes(GgmlType act_type, int64_t n) {
  auto traits = TraitsOf(act_type);
  return static_cast<size_t>(n / traits->block_elems) * traits->block_bytes;
}

void ActScales(GgmlType act_type, const void* row, int64_t n, float* out) {
  const int64_t nb = n / kQk32;
  if (act_type == GgmlType::kQ8_1F) {
    auto* b = static_cast<const BlockQ8_1F*>(row);
    for (int64_t i = 0; i < nb; ++i) {
      out[2 * i] = b[i].d;
      out[2 * i + 1] = b[i].s;
    }
  } else if (act_type == GgmlType::kQ8_1) {
    auto* b = static_cast<const BlockQ8_1*>(row);
    for (int64_t i = 0; i < nb; ++i) {
      out[2 * i] = Fp16ToFp32(b[i].d);
      out[2 * i + 1] = Fp16ToFp32(b[i].s);
    }
  } else {
    auto* b = static_cast<const BlockQ8_0*>(row);
    for (int64_t i = 0; i < nb; ++i) {
      out[2 * i] = Fp16ToFp32(b[i].d);
      out[2 * i + 1] = 0.f;
    }
  }
}

Isa BestIsa() {
  static const Isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) {
        return Isa::kAvx512Vnni;
      }
      return Isa::kAvx2;
    }
    return Isa::kReference;
  }();
  return best;
}

namespace {
const KernelTable& Table() {
  static const KernelTable* table = [] {
    auto* t = new KernelTable();
    RegisterReferenceKernels(*t);
    if (BestIsa() >= Isa::kAvx2) RegisterAvx2Kernels(*t);
    if (BestIsa() >= Isa::kAvx512Vnni) RegisterAvx512VnniKernels(*t);
    return t;
  }();
  return *table;
}
}  // namespace

const WeightKernels* KernelsFor(GgmlType weight_type, Isa isa) {
  if (isa > BestIsa()) return nullptr;
  return Table().Find(weight_type, isa);
}

const WeightKernels* KernelsFor(GgmlType weight_type) {
  for (int i = static_cast<int>(BestIsa()); i >= 0; --i) {
    if (const WeightKernels* k = Table().Find(weight_type, static_cast<Isa>(i))) return k;
  }
  return nullptr;
}

GgmlOrder HostGgmlOrder() {
  static const GgmlOrder order = [] {
    if (const char* env = std::getenv("TESSERA_GGML_ORDER"); env != nullptr && *env != '\0') {
      if (std::string_view(env) == "avx512") return GgmlOrder::kAvx512;
      if (std::string_view(env) == "avx2") return GgmlOrder::kAvx2;
    }
    __builtin_cpu_init();
    // ggml's 16-lane softmax needs AVX-512 F and DQ; its tinyBLAS, F.
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") ? GgmlOrder::kAvx512
                                                                                    : GgmlOrder::kAvx2;
  }();
  return order;
}

const VectorKernels& BestVectorKernels() {
  static const VectorKernels k =
      BestIsa() >= Isa::kAvx2 ? Avx2VectorKernels(HostGgmlOrder()) : ReferenceVectorKernels(HostGgmlOrder());
  return k;
}

const WeightKernels* ReferenceKernelsFor(GgmlType weight_type) {
  return Table().Find(weight_type, Isa::kReference);
}

}  // namespace tessera::cpu
