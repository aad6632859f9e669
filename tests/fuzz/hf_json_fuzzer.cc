// Fuzz target: the Hugging Face checkpoint's JSON files as a worker reads
// them. The input is four parts separated by NUL bytes: config.json,
// tokenizer.json, tokenizer_config.json and a text to encode. Any bytes
// parse or fail with a Status (never an exception, crash or hang); a parsed
// tokenizer encodes and decodes the text.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "common/json/json_file.h"
#include "worker/model/hf_config.h"
#include "worker/model/quant_format.h"
#include "worker/tokenizer/hf_tokenizer.h"
#include "worker/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  for (int i = 0; i < 3; ++i) {
    const size_t nul = in.find('\0');
    if (nul == std::string_view::npos) break;
    parts.push_back(in.substr(0, nul));
    in.remove_prefix(nul + 1);
  }
  parts.push_back(in);
  parts.resize(4);
  size_t sink = 0;
  auto config = tessera::ParseJsonText(parts[0], "config.json");
  if (config.ok()) {
    auto parsed = tessera::CatchJsonErrors("config.json", [&] { return tessera::ParseHfConfig(*config); });
    if (parsed.ok() && !parsed->quantization_config.is_null()) {
      auto q = tessera::CatchJsonErrors("quantization_config",
                                        [&] { return tessera::CreateQuantFormat(parsed->quantization_config); });
      sink += q.ok();
    }
  }
  auto tok = tessera::CatchJsonErrors("tokenizer", [&] { return tessera::ParseHfTokenizer(parts[1], parts[2]); });
  if (tok.ok()) {
    auto t = tessera::Tokenizer::Create(std::move(tok->spec));
    if (t.ok()) {
      for (bool special : {false, true}) {
        const std::vector<int32_t> ids = (*t)->Encode(parts[3], {.add_special = special, .parse_special = special});
        sink += ids.size() + (*t)->Decode(ids).size();
      }
    }
  }
  return sink == 0xFFFFFFFF ? 1 : 0;
}
