// structured-sample: random outputs of a constraint's automaton, for the
// Python oracle test (test_structured_language.py) that checks each with
// jsonschema or re.fullmatch. Reads JSON lines
//   {"kind": "schema"|"regex", "spec": TEXT, "n": N, "seed": S}
// and writes {"samples": [...]} or {"error": MESSAGE} per line. A sample is
// a random walk over the DFA's live bytes that stops at an accepting state
// with probability 1/4, and heads for the nearest accepting state once it is
// 80 bytes long.
#include <deque>
#include <iostream>
#include <random>
#include <string>

#include "nlohmann/json.hpp"
#include "worker/structured/constraint.h"

namespace ts = tessera::structured;

std::string Walk(const ts::Dfa& d, const std::vector<int>& dist, std::mt19937& rng) {
  std::string out;
  int32_t s = d.start();
  while (true) {
    if (d.accepting(s) && (d.final(s) || rng() % 4 == 0)) return out;
    std::vector<int> bytes;
    for (int b = 0; b < 256; ++b) {
      const int32_t t = d.Next(s, static_cast<uint8_t>(b));
      if (t == ts::Dfa::kDead) continue;
      if (out.size() >= 80 && dist[t] >= dist[s]) continue;
      bytes.push_back(b);
    }
    if (bytes.empty()) return out;  // accepting (dist 0) and long enough
    const int b = bytes[rng() % bytes.size()];
    out.push_back(static_cast<char>(b));
    s = d.Next(s, static_cast<uint8_t>(b));
  }
}

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    nlohmann::json req = nlohmann::json::parse(line, nullptr, false), out;
    ts::ConstraintSpec spec;
    spec.kind = req.value("kind", "") == "regex" ? ts::ConstraintSpec::Kind::kRegex : ts::ConstraintSpec::Kind::kJsonSchema;
    spec.text = req.value("spec", "");
    auto node = ts::SpecToRegex(spec, {});
    auto dfa = node.ok() ? ts::Dfa::Compile(*node) : absl::StatusOr<ts::Dfa>(node.status());
    if (!dfa.ok()) {
      out["error"] = std::string(dfa.status().message());
    } else {
      // Distance (bytes) to the nearest accepting state, by reverse BFS.
      const int n = dfa->num_states();
      std::vector<std::vector<int32_t>> rev(n);
      for (int32_t s = 0; s < n; ++s) {
        for (int b = 0; b < 256; ++b) {
          const int32_t t = dfa->Next(s, static_cast<uint8_t>(b));
          if (t != ts::Dfa::kDead) rev[t].push_back(s);
        }
      }
      std::vector<int> dist(n, 1 << 30);
      std::deque<int32_t> q;
      for (int32_t s = 0; s < n; ++s) {
        if (dfa->accepting(s)) dist[s] = 0, q.push_back(s);
      }
      while (!q.empty()) {
        const int32_t s = q.front();
        q.pop_front();
        for (int32_t p : rev[s]) {
          if (dist[p] > dist[s] + 1) dist[p] = dist[s] + 1, q.push_back(p);
        }
      }
      std::mt19937 rng(req.value("seed", 1));
      out["samples"] = nlohmann::json::array();
      for (int i = 0; i < req.value("n", 10); ++i) out["samples"].push_back(Walk(*dfa, dist, rng));
      out["states"] = n;
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
  }
}
