#include "tools/quantize/gguf_type_policy.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"

namespace tessera::quantize {
namespace {

// llama_ftype values (llama.h).
enum : uint32_t {
  kAllF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 7, kQ5_0 = 8, kQ5_1 = 9, kQ2_K = 10,
  kQ3_K_S = 11, kQ3_K_M = 12, kQ3_K_L = 13, kQ4_K_S = 14, kQ4_K_M = 15, kQ5_K_S = 16, kQ5_K_M = 17,
  kQ6_K = 18, kBF16 = 32,
};

struct Alias {
  const char* name;
  const char* canonical;
  uint32_t ftype;
  GgmlType default_type;
};

// llama-quantize's names; the plain K names of 3/4/5 bits are its aliases
// for the _M mixes.
constexpr Alias kTypes[] = {
    {"Q4_0", "Q4_0", kQ4_0, GgmlType::kQ4_0},       {"Q4_1", "Q4_1", kQ4_1, GgmlType::kQ4_1},
    {"Q5_0", "Q5_0", kQ5_0, GgmlType::kQ5_0},       {"Q5_1", "Q5_1", kQ5_1, GgmlType::kQ5_1},
    {"Q8_0", "Q8_0", kQ8_0, GgmlType::kQ8_0},       {"Q2_K", "Q2_K", kQ2_K, GgmlType::kQ2_K},
    {"Q3_K", "Q3_K_M", kQ3_K_M, GgmlType::kQ3_K},   {"Q3_K_S", "Q3_K_S", kQ3_K_S, GgmlType::kQ3_K},
    {"Q3_K_M", "Q3_K_M", kQ3_K_M, GgmlType::kQ3_K}, {"Q3_K_L", "Q3_K_L", kQ3_K_L, GgmlType::kQ3_K},
    {"Q4_K", "Q4_K_M", kQ4_K_M, GgmlType::kQ4_K},   {"Q4_K_S", "Q4_K_S", kQ4_K_S, GgmlType::kQ4_K},
    {"Q4_K_M", "Q4_K_M", kQ4_K_M, GgmlType::kQ4_K}, {"Q5_K", "Q5_K_M", kQ5_K_M, GgmlType::kQ5_K},
    {"Q5_K_S", "Q5_K_S", kQ5_K_S, GgmlType::kQ5_K}, {"Q5_K_M", "Q5_K_M", kQ5_K_M, GgmlType::kQ5_K},
    {"Q6_K", "Q6_K", kQ6_K, GgmlType::kQ6_K},       {"F16", "F16", kF16, GgmlType::kF16},
    {"BF16", "BF16", kBF16, GgmlType::kBF16},       {"F32", "F32", kAllF32, GgmlType::kF32},
};

bool IsQuantized(GgmlType t) { return t != GgmlType::kF32 && t != GgmlType::kF16 && t != GgmlType::kBF16; }

int64_t BlockSize(GgmlType t) {
  const auto traits = TraitsOf(t);
  return traits ? traits->block_elems : 1;
}

int NDims(const std::array<int64_t, 4>& ne) {
  for (int i = 3; i >= 1; --i) {
    if (ne[i] > 1) return i + 1;
  }
  return 1;
}

bool Has(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// The block number llama.cpp reads with sscanf("blk.%d."), or -1.
int LayerOf(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

enum class Category { kTokenEmbd, kAttnQ, kAttnV, kAttnK, kAttnQkv, kAttnKvB, kAttnOutput, kFfnUp, kFfnGate,
                      kFfnDown, kOutput, kOther };

Category CategoryOf(const std::string& name) {
  if (name == "output.weight") return Category::kOutput;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Category::kTokenEmbd;
  if (Has(name, "attn_qkv.weight")) return Category::kAttnQkv;
  if (Has(name, "attn_kv_b.weight")) return Category::kAttnKvB;
  if (Has(name, "attn_v.weight")) return Category::kAttnV;
  if (Has(name, "attn_k.weight")) return Category::kAttnK;
  if (Has(name, "attn_q.weight")) return Category::kAttnQ;
  if (Has(name, "attn_output.weight")) return Category::kAttnOutput;
  if (Has(name, "ffn_up")) return Category::kFfnUp;
  if (Has(name, "ffn_gate")) return Category::kFfnGate;
  if (Has(name, "ffn_down")) return Category::kFfnDown;
  return Category::kOther;
}

bool IsAttnVLike(Category c) { return c == Category::kAttnV || c == Category::kAttnQkv || c == Category::kAttnKvB; }

// tensor_allows_quantization, less the architectures Tessera cannot load.
bool AllowsQuantization(const TensorDesc& t) {
  if (NDims(t.ne) < 2) return false;
  const std::string& n = t.name;
  if (n.size() < 6 || n.compare(n.size() - 6, 6, "weight") != 0) return false;
  static constexpr std::string_view kNever[] = {
      "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
      "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
      "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
      "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
      "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
      "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd",
      "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
      "mm.a.code_embd"};
  for (std::string_view part : kNever) {
    if (Has(n, part)) return false;
  }
  return n != "position_embd.weight" && n != "token_types.weight";
}

struct State {
  int n_attention_wv = 0, i_attention_wv = 0;
  int n_ffn_down = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;
  bool tied_embeddings = true;
};

bool UseMoreBits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// llama_tensor_get_type_impl for the supported file types (no experts, not
// Falcon: those branches never apply here).
GgmlType MixType(State& qs, GgmlType new_type, const TensorDesc& t, uint32_t ftype, Category cat,
                 const ModelFacts& m) {
  const int n_gqa = m.n_head_kv > 0 ? m.n_head / m.n_head_kv : 0;
  // LLM_TYPE_70B for the llama and qwen2 loaders: 80 layers (llama: with GQA).
  const bool is_70b = m.n_layer == 80 && (m.arch != "llama" || m.n_head != m.n_head_kv);
  if (cat == Category::kOutput || (qs.tied_embeddings && cat == Category::kTokenEmbd)) {
    if (t.ne[0] % BlockSize(new_type) != 0) {
      new_type = GgmlType::kQ8_0;
    } else if (new_type != GgmlType::kQ8_0) {
      new_type = GgmlType::kQ6_K;
    }
  } else if (cat == Category::kTokenEmbd) {
    // Only the IQ/TQ file types change an untied embedding.
  } else if (IsAttnVLike(cat)) {
    if (ftype == kQ2_K) {
      new_type = n_gqa >= 4 ? GgmlType::kQ4_K : GgmlType::kQ3_K;
    } else if (ftype == kQ3_K_M) {
      new_type = qs.i_attention_wv < 2 ? GgmlType::kQ5_K : GgmlType::kQ4_K;
    } else if (ftype == kQ3_K_L) {
      new_type = GgmlType::kQ5_K;
    } else if ((ftype == kQ4_K_M || ftype == kQ5_K_M) && UseMoreBits(qs.i_attention_wv, qs.n_attention_wv)) {
      new_type = GgmlType::kQ6_K;
    } else if (ftype == kQ4_K_S && qs.i_attention_wv < 4) {
      new_type = GgmlType::kQ5_K;
    }
    if (is_70b && (new_type == GgmlType::kQ3_K || new_type == GgmlType::kQ4_K)) new_type = GgmlType::kQ5_K;
    ++qs.i_attention_wv;
  } else if (cat == Category::kFfnDown) {
    const int i_layer = qs.i_ffn_down, n_layer = qs.n_ffn_down;
    if (ftype == kQ2_K) {
      new_type = GgmlType::kQ3_K;
    } else if (ftype == kQ3_K_M) {
      new_type = i_layer < n_layer / 16 ? GgmlType::kQ5_K : GgmlType::kQ4_K;
    } else if (ftype == kQ3_K_L) {
      new_type = GgmlType::kQ5_K;
    } else if (ftype == kQ4_K_M) {
      if (UseMoreBits(i_layer, n_layer)) new_type = GgmlType::kQ6_K;
    } else if (ftype == kQ5_K_M && UseMoreBits(i_layer, n_layer)) {
      new_type = GgmlType::kQ6_K;
    } else if (ftype == kQ4_K_S && i_layer < n_layer / 8) {
      new_type = GgmlType::kQ5_K;
    }
    ++qs.i_ffn_down;
  } else if (cat == Category::kAttnOutput) {
    if (ftype == kQ2_K) {
      new_type = GgmlType::kQ3_K;
    } else if (ftype == kQ3_K_M) {
      new_type = GgmlType::kQ4_K;
    } else if (ftype == kQ3_K_L) {
      new_type = GgmlType::kQ5_K;
    }
  } else if (cat == Category::kAttnQkv) {
    if (ftype == kQ3_K_M || ftype == kQ3_K_L) {
      new_type = GgmlType::kQ4_K;
    } else if (ftype == kQ4_K_M) {
      new_type = GgmlType::kQ5_K;
    } else if (ftype == kQ5_K_M) {
      new_type = GgmlType::kQ6_K;
    }
  } else if (cat == Category::kFfnGate) {
    ++qs.i_ffn_gate;
  } else if (cat == Category::kFfnUp) {
    ++qs.i_ffn_up;
  }
  return new_type;
}

// tensor_type_fallback: a row that is not whole blocks of the chosen type.
GgmlType Fallback(GgmlType target, int64_t ncols, int& n_fallback) {
  if (ncols % BlockSize(target) == 0) return target;
  ++n_fallback;
  GgmlType r = target;
  switch (target) {
    case GgmlType::kQ2_K: case GgmlType::kQ3_K: r = GgmlType::kQ4_0; break;
    case GgmlType::kQ4_K: r = GgmlType::kQ5_0; break;
    case GgmlType::kQ5_K: r = GgmlType::kQ5_1; break;
    case GgmlType::kQ6_K: r = GgmlType::kQ8_0; break;
    default: break;  // a 32-element type: F16 below
  }
  if (ncols % BlockSize(r) != 0) r = GgmlType::kF16;
  return r;
}

}  // namespace

absl::StatusOr<GgufFileType> ParseGgufFileType(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const Alias& a : kTypes) {
    if (upper == a.name) return GgufFileType{a.canonical, a.ftype, a.default_type};
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown GGUF type '", EscapeForMessage(name, 64),
                                                 "'; valid: ", GgufFileTypeNames()));
}

std::string GgufFileTypeNames() {
  std::vector<std::string> names;
  for (const Alias& a : kTypes) names.emplace_back(a.name);
  return absl::StrJoin(names, " ");
}

std::vector<size_t> LlamaTensorOrder(const std::vector<TensorDesc>& tensors) {
  std::vector<size_t> order(tensors.size());
  std::vector<int> layer(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    order[i] = i;
    layer[i] = LayerOf(tensors[i].name);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (layer[a] != layer[b]) return layer[a] < layer[b];
    return tensors[a].name < tensors[b].name;
  });
  return order;
}

TypePlan PlanTensorTypes(const GgufFileType& ft, const ModelFacts& model, const std::vector<TensorDesc>& tensors) {
  State qs;
  for (const TensorDesc& t : tensors) {
    const Category c = CategoryOf(t.name);
    if (IsAttnVLike(c)) ++qs.n_attention_wv;
    if (c == Category::kOutput) qs.tied_embeddings = false;
  }
  qs.n_ffn_down = model.n_layer;
  TypePlan plan;
  plan.types.reserve(tensors.size());
  for (const TensorDesc& t : tensors) {
    if (!AllowsQuantization(t)) {
      plan.types.push_back(t.type);
      continue;
    }
    GgmlType type = ft.default_type;
    if (IsQuantized(type)) {
      type = MixType(qs, type, t, ft.ftype, CategoryOf(t.name), model);
      type = Fallback(type, t.ne[0], plan.n_fallback);
    }
    plan.types.push_back(type);
  }
  return plan;
}

}  // namespace tessera::quantize
