#include "worker/model/synthetic_model.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/fp16.h"
#include "common/gguf/gguf_writer.h"
#include "common/quant_blocks.h"
#include "common/status_macros.h"

namespace tessera {
namespace {

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

void SetHalf(uint8_t* p, float v) {
  const uint16_t h = Fp32ToFp16(v);
  std::memcpy(p, &h, 2);
}

// Random values of modest size (|w| <~ 0.05) in `type`'s encoding: random
// quant bits, then every block's scale fields overwritten with small halves.
void FillRandom(GgmlType type, std::span<uint8_t> out, uint64_t seed) {
  uint64_t s = seed;
  if (type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16) {
    const size_t width = type == GgmlType::kF32 ? 4 : 2;
    for (size_t i = 0; i + width <= out.size(); i += width) {
      const float v = (static_cast<float>(SplitMix(s) >> 40) / static_cast<float>(1 << 24) - 0.5f) * 0.06f;
      if (type == GgmlType::kF32) {
        std::memcpy(out.data() + i, &v, 4);
      } else {
        const uint16_t h = type == GgmlType::kF16 ? Fp32ToFp16(v) : Fp32ToBf16(v);
        std::memcpy(out.data() + i, &h, 2);
      }
    }
    return;
  }
  for (size_t i = 0; i < out.size(); i += 8) {
    const uint64_t r = SplitMix(s);
    std::memcpy(out.data() + i, &r, std::min<size_t>(8, out.size() - i));
  }
  const auto traits = TraitsOf(type);
  for (size_t off = 0; off + traits->block_bytes <= out.size(); off += traits->block_bytes) {
    uint8_t* b = out.data() + off;
    switch (type) {
      case GgmlType::kQ4_0: SetHalf(b, 0.006f); break;
      case GgmlType::kQ8_0: SetHalf(b, 0.0004f); break;
      case GgmlType::kQ4_1: SetHalf(b, 0.006f); SetHalf(b + 2, -0.045f); break;
      case GgmlType::kQ4_K: SetHalf(b, 0.0002f); SetHalf(b + 2, 0.0004f); break;
      case GgmlType::kQ6_K: SetHalf(b + offsetof(BlockQ6_K, d), 0.00002f); break;
      default: break;
    }
  }
}

}  // namespace

std::vector<SyntheticSpec> SyntheticSpecs() {
  return {
      {"llama3-8b", 32, 4096, 14336, 32, 8, 128256, 8192, 500000.f},
      {"llama2-7b", 32, 4096, 11008, 32, 32, 32000, 4096, 10000.f},
      {"tiny", 2, 256, 512, 4, 2, 1024, 1024, 10000.f},
  };
}

absl::StatusOr<GgmlType> ParseWeightType(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
                     GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    if (absl::AsciiStrToLower(std::string(TypeName(t))) == n) return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown weight type '", name, "'; use f32, f16, bf16, q4_0, q4_1, q8_0, q4_k or q6_k"));
}

absl::StatusOr<std::vector<uint8_t>> BuildSyntheticModel(const std::string& name, GgmlType type, uint64_t seed) {
  const SyntheticSpec* spec = nullptr;
  const std::vector<SyntheticSpec> specs = SyntheticSpecs();
  std::vector<std::string> names;
  for (const auto& s : specs) {
    names.push_back(s.name);
    if (s.name == name) spec = &s;
  }
  if (spec == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown synthetic model '", name, "'; known: ", absl::StrJoin(names, ", ")));
  }
  const SyntheticSpec& c = *spec;
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("general.name", absl::StrCat("synthetic-", c.name, "-", absl::AsciiStrToLower(std::string(TypeName(type)))));
  w.AddU32("llama.block_count", c.n_layers);
  w.AddU32("llama.embedding_length", c.n_embd);
  w.AddU32("llama.feed_forward_length", c.n_ff);
  w.AddU32("llama.attention.head_count", c.n_heads);
  w.AddU32("llama.attention.head_count_kv", c.n_kv_heads);
  w.AddU32("llama.context_length", c.n_ctx);
  w.AddF32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddF32("llama.rope.freq_base", c.rope_base);
  // A byte-fallback SentencePiece vocabulary of the model's size: any text
  // tokenizes (to bytes), any id detokenizes.
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(absl::StrFormat("<0x%02X>", b));
    types.push_back(6);
  }
  for (int i = static_cast<int>(tokens.size()); i < c.n_vocab; ++i) {
    tokens.push_back(absl::StrCat("\xe2\x96\x81w", i));
    types.push_back(1);
  }
  std::vector<float> scores(tokens.size());
  for (size_t i = 0; i < scores.size(); ++i) scores[i] = -static_cast<float>(i);
  w.AddString("tokenizer.ggml.model", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", tokens);
  w.AddF32Array("tokenizer.ggml.scores", scores);
  w.AddI32Array("tokenizer.ggml.token_type", types);
  w.AddU32("tokenizer.ggml.unknown_token_id", 0);
  w.AddU32("tokenizer.ggml.bos_token_id", 1);
  w.AddU32("tokenizer.ggml.eos_token_id", 2);

  const int64_t head_dim = c.n_embd / c.n_heads, kv_dim = head_dim * c.n_kv_heads;
  auto matrix = [&](const std::string& tensor, int64_t cols, int64_t rows) {
    return w.AddTensor(tensor, {cols, rows}, type,
                       [type, s = seed ^ Hash(tensor)](std::span<uint8_t> out) { FillRandom(type, out, s); });
  };
  auto norm = [&](const std::string& tensor) {
    return w.AddTensor(tensor, {c.n_embd}, GgmlType::kF32, [](std::span<uint8_t> out) {
      const float one = 1.f;
      for (size_t i = 0; i + 4 <= out.size(); i += 4) std::memcpy(out.data() + i, &one, 4);
    });
  };
  TESSERA_RETURN_IF_ERROR(matrix("token_embd.weight", c.n_embd, c.n_vocab));
  TESSERA_RETURN_IF_ERROR(norm("output_norm.weight"));
  TESSERA_RETURN_IF_ERROR(matrix("output.weight", c.n_embd, c.n_vocab));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    TESSERA_RETURN_IF_ERROR(norm(p + "attn_norm.weight"));
    TESSERA_RETURN_IF_ERROR(matrix(p + "attn_q.weight", c.n_embd, c.n_embd));
    TESSERA_RETURN_IF_ERROR(matrix(p + "attn_k.weight", c.n_embd, kv_dim));
    TESSERA_RETURN_IF_ERROR(matrix(p + "attn_v.weight", c.n_embd, kv_dim));
    TESSERA_RETURN_IF_ERROR(matrix(p + "attn_output.weight", c.n_embd, c.n_embd));
    TESSERA_RETURN_IF_ERROR(norm(p + "ffn_norm.weight"));
    TESSERA_RETURN_IF_ERROR(matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff));
    TESSERA_RETURN_IF_ERROR(matrix(p + "ffn_up.weight", c.n_embd, c.n_ff));
    TESSERA_RETURN_IF_ERROR(matrix(p + "ffn_down.weight", c.n_ff, c.n_embd));
  }
  return w.Build();
}

}  // namespace tessera
