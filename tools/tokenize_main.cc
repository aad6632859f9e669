// tessera-tokenize: batch tokenizer for tests and scripts. Reads JSON lines
// {"text": "...", "add_special": bool, "parse_special": bool} (or
// {"detokenize": [ids]} or {"detokenize_stream": [ids]}) on stdin and writes one JSON line per input:
// {"ids": [...]} or {"text": "..."}; errors as {"error": "..."}.
//
//   tessera-tokenize --model PATH < requests.jsonl
#include <filesystem>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/command_line.h"
#include "common/flag_names.h"
#include "nlohmann/json.hpp"
#include "worker/model/model_bundle.h"
#include "worker/tokenizer/hf_tokenizer.h"

ABSL_FLAG(std::string, model, "",
          "GGUF file or Hugging Face directory (tokenizer.json [+ tokenizer_config.json]; default: the bundled model); "
          "only the tokenizer is read");

int main(int argc, char** argv) {
  tessera::ParseCommandLine(argc, argv, "tessera-tokenize [--model PATH] < requests.jsonl");
  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) path = tessera::DefaultModelPath();
  absl::StatusOr<std::unique_ptr<tessera::Tokenizer>> tok;
  if (std::filesystem::is_directory(path)) {
    auto dir = tessera::ModelDirectory::Open(path);
    auto files = dir.ok() ? tessera::ReadHfTokenizer(*dir) : absl::StatusOr<tessera::HfTokenizer>(dir.status());
    tok = files.ok() ? tessera::Tokenizer::Create(std::move(files->spec))
                     : absl::StatusOr<std::unique_ptr<tessera::Tokenizer>>(files.status());
  } else {
    auto file = tessera::GgufFile::Open(path);
    tok = file.ok() ? tessera::Tokenizer::FromGguf(**file)
                    : absl::StatusOr<std::unique_ptr<tessera::Tokenizer>>(file.status());
  }
  if (!tok.ok()) {
    std::cerr << "tessera-tokenize: " << tok.status().message() << "\n";
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    nlohmann::json out;
    auto req = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (req.is_discarded() || !req.is_object()) {
      out["error"] = "input line is not a JSON object";
    } else if (req.contains("detokenize_stream") && req["detokenize_stream"].is_array()) {
      // The pieces an incremental detokenizer emits, one push per id.
      tessera::Detokenizer detok(**tok);
      nlohmann::json pieces = nlohmann::json::array();
      for (const auto& v : req["detokenize_stream"]) pieces.push_back(detok.Push(v.is_number_integer() ? v.get<int32_t>() : -1));
      pieces.push_back(detok.Flush());
      out["pieces"] = pieces;
    } else if (req.contains("detokenize") && req["detokenize"].is_array()) {
      std::vector<int32_t> ids;
      for (const auto& v : req["detokenize"]) ids.push_back(v.is_number_integer() ? v.get<int32_t>() : -1);
      out["text"] = (*tok)->Decode(ids);
    } else if (req.contains("text") && req["text"].is_string()) {
      tessera::EncodeOptions o;
      o.add_special = req.value("add_special", false);
      o.parse_special = req.value("parse_special", false);
      out["ids"] = (*tok)->Encode(req["text"].get<std::string>(), o);
    } else {
      out["error"] = "expected 'text' or 'detokenize'";
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
  }
  return 0;
}
