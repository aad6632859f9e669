// tessera-render-template: renders a chat template with Tessera's Jinja
// interpreter. Reads JSON lines {"template", "messages",
// "add_generation_prompt", "bos_token", "eos_token", "extra"} on stdin and
// writes {"text": ...} or {"error": ...} per line. For tests and for
// checking a model's template before serving it.
#include <iostream>
#include <string>

#include "common/command_line.h"
#include "nlohmann/json.hpp"
#include "worker/chat/chat_template.h"

int main(int argc, char** argv) {
  if (tessera::WantsHelp(argc, argv)) {
    std::cout << "tessera-render-template < requests.jsonl\n"
                 "  Reads JSON lines {\"template\", \"messages\", \"add_generation_prompt\", \"bos_token\", "
                 "\"eos_token\", \"extra\"}\n  and writes {\"text\": ...} or {\"error\": ...} per line.\n";
    return 0;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    nlohmann::ordered_json out;
    auto req = nlohmann::ordered_json::parse(line, nullptr, false);
    if (req.is_discarded() || !req.is_object() || !req.contains("template") || !req["template"].is_string()) {
      out["error"] = "expected a JSON object with a 'template' string";
    } else {
      auto t = tessera::ChatTemplate::Create(req["template"].get<std::string>(), req.value("bos_token", ""),
                                             req.value("eos_token", ""));
      if (!t.ok()) {
        out["error"] = std::string(t.status().message());
      } else {
        auto r = (*t)->Apply(req.value("messages", nlohmann::ordered_json::array()),
                             req.value("add_generation_prompt", false), req.value("extra", nlohmann::ordered_json()));
        if (r.ok()) out["text"] = *r;
        else out["error"] = std::string(r.status().message());
      }
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n" << std::flush;
  }
  return 0;
}
