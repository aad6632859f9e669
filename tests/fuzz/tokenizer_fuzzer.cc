// Fuzz target: a real tokenizer (the bundled SmolLM2 model's byte-level BPE,
// or $TESSERA_MODEL's) on arbitrary bytes. The first byte holds options; the
// rest is the text. Properties checked on every input:
//  - every id is in the vocabulary;
//  - without special-token parsing, valid UTF-8 round-trips: Decode(Encode(x))
//    == x, and the streaming Detokenizer emits exactly x;
//  - request text is never read as control tokens: with parsing on and the
//    whole text marked untrusted, the ids equal those with parsing off;
//  - untrusted ranges anywhere (derived from the option byte) keep ids valid.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/gguf/gguf_file.h"
#include "common/utf8.h"
#include "worker/tokenizer/tokenizer.h"

#ifndef TESSERA_MODEL_DIR
#define TESSERA_MODEL_DIR "models"
#endif

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

bool ValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int n = tessera::Utf8SequenceLength(s, i);
    if (n == 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

const tessera::Tokenizer& Vocabulary() {
  static const std::unique_ptr<tessera::Tokenizer> tok = [] {
    const char* env = std::getenv("TESSERA_MODEL");
    const std::string path = env != nullptr && *env != '\0'
                                 ? std::string(env)
                                 : std::string(TESSERA_MODEL_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
    auto file = tessera::GgufFile::Open(path);
    if (!file.ok()) {
      std::fprintf(stderr, "tokenizer_fuzzer: %s (run `make setup`)\n", std::string(file.status().message()).c_str());
      std::abort();
    }
    auto t = tessera::Tokenizer::FromGguf(**file);
    if (!t.ok()) std::abort();
    return std::move(*t);
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const tessera::Tokenizer& tok = Vocabulary();
  const uint8_t flags = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto in_vocab = [&](const std::vector<int32_t>& ids) {
    for (int32_t id : ids) Check(id >= 0 && id < tok.vocab_size());
  };
  const std::vector<int32_t> plain = tok.Encode(text, {.add_special = false, .parse_special = false});
  in_vocab(plain);
  // Some vocabularies have no token for a few ASCII control bytes (SmolLM2
  // lacks \x06, for one); llama.cpp drops them as Tessera does, so only
  // text made of bytes the vocabulary can hold must round-trip.
  static const std::vector<bool> ascii_known = [&] {
    std::vector<bool> known(128);
    for (int b = 0; b < 128; ++b) {
      const std::string one(1, static_cast<char>(b));
      known[b] = tok.Decode(tok.Encode(one, {.parse_special = false})) == one;
    }
    return known;
  }();
  bool representable = ValidUtf8(text);
  for (unsigned char c : text) representable = representable && (c >= 128 || ascii_known[c]);
  if (representable) {
    Check(tok.Decode(plain) == text);
    tessera::Detokenizer detok(tok);
    std::string streamed;
    for (int32_t id : plain) streamed += detok.Push(id);
    streamed += detok.Flush();
    Check(streamed == text);
  }
  const std::vector<std::pair<size_t, size_t>> all = {{0, text.size()}};
  if (!text.empty()) Check(tok.Encode(text, {.parse_special = true, .untrusted = &all}) == plain);
  // A range from the option byte: [n/4, 3n/4) scaled by the flags.
  const size_t b = text.size() * (flags & 0x0F) / 16, e = b + (text.size() - b) * (flags >> 4) / 16;
  std::vector<std::pair<size_t, size_t>> some;
  if (b < e) some.emplace_back(b, e);
  in_vocab(tok.Encode(text, {.add_special = (flags & 1) != 0, .parse_special = true, .untrusted = &some}));
  return 0;
}
