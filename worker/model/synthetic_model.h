// Synthetic models: a real architecture's exact shapes with deterministic
// random weights in a chosen encoding, for measuring speed and memory where
// no checkpoint exists (a GPU machine without network). The weights are
// well-formed (finite, modest scales) but meaningless: the text is noise.
//
// The image is an ordinary GGUF (llama architecture, a byte-fallback
// SentencePiece vocabulary of the model's size), so everything downstream is
// the same code as for a real file.
#ifndef TESSERA_WORKER_MODEL_SYNTHETIC_MODEL_H_
#define TESSERA_WORKER_MODEL_SYNTHETIC_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/ggml_types.h"

namespace tessera {

struct SyntheticSpec {
  std::string name;
  int n_layers, n_embd, n_ff, n_heads, n_kv_heads, n_vocab, n_ctx;
  float rope_base;
};

// "llama3-8b", "llama2-7b", and "tiny" (for tests).
std::vector<SyntheticSpec> SyntheticSpecs();
// f32, f16, bf16, q4_0, q4_1, q8_0, q4_k or q6_k.
absl::StatusOr<GgmlType> ParseWeightType(const std::string& name);

absl::StatusOr<std::vector<uint8_t>> BuildSyntheticModel(const std::string& name, GgmlType type, uint64_t seed = 1);

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_SYNTHETIC_MODEL_H_
