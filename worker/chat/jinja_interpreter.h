// Template: a compiled Jinja2-subset template and its renderer.
//
// Supports what chat templates use: text, {{ }}, if/elif/else, for (with
// loop.*, else, inline if, break/continue), set (incl. namespace attributes
// and block set), macros, whitespace control with trim_blocks and
// lstrip_blocks, Python-like values, common filters, tests and string/dict
// methods, raise_exception, namespace, range and strftime_now (the built-ins
// are tables in jinja_builtins.h). Anything else is refused with an error
// that names the construct: at Compile for syntax and for filter and test
// names (so an unsupported one fails when the model loads), at render for
// what depends on values (methods, which depend on the receiver's type).
//
// Thread-safety: a Template is immutable; Render may run concurrently.
#ifndef TESSERA_WORKER_CHAT_JINJA_INTERPRETER_H_
#define TESSERA_WORKER_CHAT_JINJA_INTERPRETER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/chat/jinja_ast.h"
#include "worker/chat/jinja_value.h"

namespace tessera::jinja {

struct RenderLimits {
  size_t max_output_bytes = 16u << 20;
  // Bytes of values (strings, list and dict slots) one render may create;
  // see AllocationBudget. Output text is bounded by max_output_bytes.
  int64_t max_value_bytes = 64 << 20;
  int64_t max_steps = 10'000'000;  // bounds loops in hostile templates
  int max_call_depth = 64;
};

// A render's text and which of its bytes came from outside the template.
struct RenderedText {
  std::string text;
  Provenance untrusted;
};

class Template {
 public:
  static absl::StatusOr<std::unique_ptr<Template>> Compile(const std::string& source,
                                                           const LexOptions& options = {});
  // `context` must be a dict of the template's variables.
  absl::StatusOr<std::string> Render(const Value& context, const RenderLimits& limits = {}) const;
  // The same, with the ranges of the text that come from strings in the
  // context marked untrusted (see Value::FromJson): copied, sliced, trimmed,
  // split or joined, they keep their place; any other operation on them
  // (upper, replace, tojson, ...) makes its whole result untrusted.
  absl::StatusOr<RenderedText> RenderWithProvenance(const Value& context, const RenderLimits& limits = {}) const;

 private:
  NodeList nodes_;
};

}  // namespace tessera::jinja

#endif  // TESSERA_WORKER_CHAT_JINJA_INTERPRETER_H_
