// Tokens and syntax tree of the Jinja2 subset used by chat templates.
#ifndef TESSERA_WORKER_CHAT_JINJA_AST_H_
#define TESSERA_WORKER_CHAT_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/chat/jinja_value.h"

namespace tessera::jinja {

struct Token {
  enum class Kind {
    kText,        // literal template text
    kExprOpen,    // {{
    kExprClose,   // }}
    kStmtOpen,    // {%
    kStmtClose,   // %}
    kName,
    kString,
    kInt,
    kFloat,
    kOp,          // operators and punctuation
    kEnd,
  };
  Kind kind;
  std::string text;
  int line = 1;
};

struct LexOptions {
  bool trim_blocks = true;    // as Hugging Face renders chat templates
  bool lstrip_blocks = true;
};

absl::StatusOr<std::vector<Token>> Lex(const std::string& source, const LexOptions& options);

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
struct FilterDef;  // jinja_builtins.h
struct TestDef;

struct Expr {
  enum class Kind {
    kLiteral, kName, kList, kDict, kTuple, kAttr, kIndex, kSlice, kCall, kFilter, kTest,
    kUnary, kBinary, kAnd, kOr, kNot, kCond,
  };
  Kind kind;
  int line = 1;
  Value literal;
  std::string name;     // variable, attribute, filter, test or operator
  bool negated = false; // `is not`, `not in`
  std::vector<ExprPtr> items;  // list/tuple items, call/filter/test positional args, dict keys+values interleaved
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr a, b, c;      // operands; for slices a[b:c:items[0]]
  // kFilter, kTest: the builtin `name` resolves to, set by Parse (never
  // null in a parsed tree: an unknown name is a parse error).
  const FilterDef* filter = nullptr;
  const TestDef* test = nullptr;
};

struct Node;
using NodeList = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue };
  Kind kind;
  int line = 1;
  std::string text;                       // kText
  ExprPtr expr;                           // kOutput, kSet value, kFor iterable, kFor filter
  std::vector<std::pair<ExprPtr, NodeList>> branches;  // kIf: (condition or null for else, body)
  std::vector<std::string> targets;       // kFor loop vars, kSet names
  std::string attr;                       // kSet namespace attribute (`set ns.attr = ...`)
  NodeList body, else_body;               // kFor, kSetBlock, kMacro
  std::vector<std::pair<std::string, ExprPtr>> params;  // kMacro params with defaults
  std::string name;                       // kMacro
};

// Also resolves every filter and test name (jinja_builtins.h): an unknown
// one is an error naming it and its line.
absl::StatusOr<NodeList> Parse(std::vector<Token> tokens);

}  // namespace tessera::jinja

#endif  // TESSERA_WORKER_CHAT_JINJA_AST_H_
